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
	dirs         []string
	mu           sync.Mutex
}

// Sentinel returns the shared Sentinel deployment, starting it on first
// use.
func (d *topologies) Sentinel(t *testing.T) *redistest.Sentinel {
	t.Helper()
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
	for _, dir := range d.dirs {
		_ = os.RemoveAll(dir)
	}
}

// quietRedis drops go-redis's own log lines (dial failures and master
// switches, by the dozen during a failover test).
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
