package redis_test

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/gopidbox/pidbox/internal/redistest"
)

// deployments are the multi-process brokers, started once per test binary
// by the first test that needs one and stopped by TestMain.
var deployments topologies

type topologies struct {
	sentinelOnce sync.Once
	sentinel     *redistest.Sentinel
	sentinelErr  error
	clusterOnce  sync.Once
	cluster      *redistest.Cluster
	clusterErr   error
	dirs         []string
	mu           sync.Mutex
}

// Sentinel returns the shared Sentinel deployment, starting it on first
// use.
func (d *topologies) Sentinel(t *testing.T) *redistest.Sentinel {
	t.Helper()
	redistest.Require(t, "redis-server", "apt-get install redis-server")
	redistest.Require(t, "redis-sentinel", "apt-get install redis-sentinel")
	d.sentinelOnce.Do(func() {
		dir, err := d.tempDir("pidbox-sentinel")
		if err == nil {
			d.sentinel, err = redistest.LaunchSentinel(dir)
		}
		d.sentinelErr = err
	})
	if d.sentinelErr != nil {
		t.Fatal(d.sentinelErr)
	}
	return d.sentinel
}

// Cluster returns the shared Redis Cluster, starting it on first use.
func (d *topologies) Cluster(t testing.TB) *redistest.Cluster {
	t.Helper()
	redistest.Require(t, "redis-server", "apt-get install redis-server")
	redistest.Require(t, "redis-cli", "apt-get install redis-tools")
	d.clusterOnce.Do(func() {
		dir, err := d.tempDir("pidbox-cluster")
		if err == nil {
			d.cluster, err = redistest.LaunchCluster(dir)
		}
		d.clusterErr = err
	})
	if d.clusterErr != nil {
		t.Fatal(d.clusterErr)
	}
	return d.cluster
}

func (d *topologies) tempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err == nil {
		d.mu.Lock()
		d.dirs = append(d.dirs, dir)
		d.mu.Unlock()
	}
	return dir, err
}

func (d *topologies) close() {
	if d.sentinel != nil {
		d.sentinel.Close()
	}
	if d.cluster != nil {
		d.cluster.Close()
	}
	for _, dir := range d.dirs {
		_ = os.RemoveAll(dir)
	}
}

// quietRedis drops go-redis's own log lines (dial failures and master
// switches, by the dozen during a failover test).
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
