package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of real processes on loopback: three masters
// and three replicas (redis-server --cluster-enabled yes, joined with
// redis-cli --cluster create), with a node timeout of 1 s so that a
// killed master's replica takes over within a few seconds. Start it once
// per test binary (LaunchCluster in TestMain) and Close it at the end.
type Cluster struct {
	servers []*Server
}

// LaunchCluster starts a 3-master, 3-replica cluster in dir and waits
// until every node reports the cluster ok.
func LaunchCluster(dir string) (*Cluster, error) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("redis-cli not found (apt-get install redis-tools): %w", err)
	}
	c := &Cluster{}
	fail := func(err error) (*Cluster, error) {
		c.Close()
		return nil, err
	}
	for i := range 6 {
		bus, err := FreePort()
		if err != nil {
			return fail(err)
		}
		s, err := Launch(mkdir(dir, fmt.Sprintf("node%d", i)),
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000", "--cluster-port", strconv.Itoa(bus),
			"--cluster-replica-validity-factor", "0")
		if err != nil {
			return fail(err)
		}
		c.servers = append(c.servers, s)
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("redistest: redis-cli --cluster create: %w: %s", err, out))
	}
	if err := c.WaitOK(ctx); err != nil {
		return fail(err)
	}
	return c, nil
}

// Addrs are the host:port addresses of the six nodes.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.servers))
	for i, s := range c.servers {
		out[i] = s.Addr()
	}
	return out
}

// URL is pidbox's Cluster URL naming every node as a seed:
// redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...
func (c *Cluster) URL() string { return "redis+cluster://" + strings.Join(c.Addrs(), ",") }

// WaitOK waits until every running node reports cluster_state:ok and
// three masters that agree on who they are.
func (c *Cluster) WaitOK(ctx context.Context) error { return c.waitMasters(ctx, "") }

// waitMasters waits until every running node reports cluster_state:ok
// and the same three masters, none of them not.
func (c *Cluster) waitMasters(ctx context.Context, not string) error {
	return poll(ctx, func(ctx context.Context) error {
		var view string
		for _, s := range c.servers {
			if s.cmd == nil {
				continue
			}
			cl := goredis.NewClient(&goredis.Options{Addr: s.Addr(), MaxRetries: -1})
			info, err := cl.ClusterInfo(ctx).Result()
			if err == nil && !strings.Contains(info, "cluster_state:ok") {
				err = fmt.Errorf("%s: cluster not ok", s.Addr())
			}
			var masters []string
			if err == nil {
				masters, err = mastersOf(ctx, cl)
			}
			_ = cl.Close()
			if err != nil {
				return err
			}
			if not != "" && slices.Contains(masters, not) {
				return fmt.Errorf("%s still counts %s as a master", s.Addr(), not)
			}
			v := strings.Join(masters, ",")
			if len(masters) != 3 || (view != "" && v != view) {
				return fmt.Errorf("nodes disagree on the masters: %q, %q", view, v)
			}
			view = v
		}
		return nil
	})
}

// mastersOf lists the masters a node believes in, not failed.
func mastersOf(ctx context.Context, cl *goredis.Client) ([]string, error) {
	nodes, err := cl.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		out = append(out, addr)
	}
	slices.Sort(out)
	return out, nil
}

// MasterOf returns the master serving the slot of key.
func (c *Cluster) MasterOf(ctx context.Context, key string) (*Server, error) {
	for _, s := range c.servers {
		if s.cmd == nil {
			continue
		}
		cl := goredis.NewClient(&goredis.Options{Addr: s.Addr(), MaxRetries: -1})
		defer cl.Close()
		slot, err := cl.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			return nil, err
		}
		slots, err := cl.ClusterSlots(ctx).Result()
		if err != nil {
			return nil, err
		}
		for _, r := range slots {
			if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 {
				if m := c.server(r.Nodes[0].Addr); m != nil {
					return m, nil
				}
			}
		}
		return nil, fmt.Errorf("redistest: no master for slot %d of %q", slot, key)
	}
	return nil, fmt.Errorf("redistest: no cluster node running")
}

func (c *Cluster) server(addr string) *Server {
	for _, s := range c.servers {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// WaitPromotion waits until the running nodes agree on three masters,
// none of them old, with the cluster ok: the killed master's replica has
// taken over.
func (c *Cluster) WaitPromotion(ctx context.Context, old string) error {
	return c.waitMasters(ctx, old)
}

// Revive restarts a killed node on its port and with its cluster
// configuration: it rejoins as a replica (with no data) and the cluster
// is ok again.
func (c *Cluster) Revive(ctx context.Context, s *Server) error {
	if err := s.Revive(); err != nil {
		return err
	}
	if err := c.WaitOK(ctx); err != nil {
		return err
	}
	cl := goredis.NewClient(&goredis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer cl.Close()
	return poll(ctx, func(ctx context.Context) error {
		info, err := cl.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "role:slave") || !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("%s not a synced replica yet", s.Addr())
		}
		return nil
	})
}

// Switch makes the replica s take its master's slots with the master
// alive (CLUSTER FAILOVER), which stays up as s's replica. It retries a
// failover that did not complete, and waits until the cluster is ok.
func (c *Cluster) Switch(ctx context.Context, s *Server) error {
	cl := goredis.NewClient(&goredis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer cl.Close()
	err := poll(ctx, func(ctx context.Context) error {
		if err := cl.ClusterFailover(ctx).Err(); err != nil {
			return err
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			role, err := cl.Do(ctx, "ROLE").Slice()
			if err == nil && len(role) > 0 && role[0] == "master" {
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		return fmt.Errorf("%s did not take over yet", s.Addr())
	})
	if err != nil {
		return fmt.Errorf("redistest: CLUSTER FAILOVER on %s: %w", s.Addr(), err)
	}
	return c.WaitOK(ctx)
}

// Servers are the six nodes.
func (c *Cluster) Servers() []*Server { return c.servers }

// Close stops every node.
func (c *Cluster) Close() {
	for _, s := range c.servers {
		s.Kill()
	}
}
