package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// MasterName is the name the Sentinel deployments monitor their master
// under.
const MasterName = "mymaster"

// Sentinel is a Sentinel deployment of real processes on loopback: one
// master, one replica and three redis-sentinel processes with short
// timeouts (down after 1 s, failover timeout 5 s), so a killed master is
// replaced within a few seconds. Start it once per test binary
// (LaunchSentinel in TestMain) and Close it at the end.
type Sentinel struct {
	dir       string
	servers   []*Server // the master and the replica, in either role
	sentinels []*sentinelProc
}

type sentinelProc struct {
	port int
	cmd  *exec.Cmd
	exit chan struct{}
	log  string
}

// LaunchSentinel starts a Sentinel deployment in dir and waits until every
// sentinel knows the master, its replica and the other sentinels.
func LaunchSentinel(dir string) (*Sentinel, error) {
	bin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		return nil, fmt.Errorf("redis-sentinel not found (apt-get install redis-sentinel): %w", err)
	}
	d := &Sentinel{dir: dir}
	fail := func(err error) (*Sentinel, error) {
		d.Close()
		return nil, err
	}
	master, err := Launch(mkdir(dir, "master"))
	if err != nil {
		return fail(err)
	}
	d.servers = append(d.servers, master)
	host, port, _ := net.SplitHostPort(master.Addr())
	replica, err := Launch(mkdir(dir, "replica"), "--replicaof", host, port)
	if err != nil {
		return fail(err)
	}
	d.servers = append(d.servers, replica)
	for i := range 3 {
		p, err := startSentinel(bin, mkdir(dir, fmt.Sprintf("sentinel%d", i)), master.Addr())
		if err != nil {
			return fail(err)
		}
		d.sentinels = append(d.sentinels, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.waitReady(ctx); err != nil {
		return fail(err)
	}
	return d, nil
}

func mkdir(parent, name string) string {
	p := filepath.Join(parent, name)
	_ = os.MkdirAll(p, 0o755)
	return p
}

func startSentinel(bin, dir, master string) (*sentinelProc, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	host, mport, _ := net.SplitHostPort(master)
	p := &sentinelProc{port: port, log: filepath.Join(dir, "sentinel.log")}
	conf := filepath.Join(dir, "sentinel.conf")
	text := strings.Join([]string{
		"port " + strconv.Itoa(port),
		"bind 127.0.0.1",
		"protected-mode no",
		"daemonize no",
		"dir " + dir,
		"logfile " + p.log,
		fmt.Sprintf("sentinel monitor %s %s %s 2", MasterName, host, mport),
		"sentinel down-after-milliseconds " + MasterName + " 1000",
		"sentinel failover-timeout " + MasterName + " 5000",
		"sentinel parallel-syncs " + MasterName + " 1",
	}, "\n") + "\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, fmt.Errorf("redistest: write sentinel config: %w", err)
	}
	p.cmd = exec.Command(bin, conf)
	dieWithParent(p.cmd)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("redistest: start redis-sentinel: %w", err)
	}
	p.exit = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.exit) }()
	return p, nil
}

// addr is the sentinel's host:port.
func (p *sentinelProc) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// waitReady waits until every sentinel answers, names the master, and
// knows one replica and two other sentinels: only then can they agree on
// a failover.
func (d *Sentinel) waitReady(ctx context.Context) error {
	for _, p := range d.sentinels {
		c := goredis.NewSentinelClient(&goredis.Options{Addr: p.addr(), MaxRetries: -1})
		err := poll(ctx, func(ctx context.Context) error {
			select {
			case <-p.exit:
				b, _ := os.ReadFile(p.log)
				return errStop{fmt.Errorf("redistest: redis-sentinel exited at start: %s", b)}
			default:
			}
			m, err := c.Master(ctx, MasterName).Result()
			if err != nil {
				return err
			}
			if m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
				return fmt.Errorf("sentinel %s sees %s replicas and %s other sentinels", p.addr(), m["num-slaves"], m["num-other-sentinels"])
			}
			return nil
		})
		_ = c.Close()
		if err != nil {
			return fmt.Errorf("redistest: sentinel deployment not ready: %w", err)
		}
	}
	return nil
}

// errStop ends a poll at once.
type errStop struct{ error }

// poll calls f until it returns nil, an errStop, or ctx ends.
func poll(ctx context.Context, f func(context.Context) error) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := f(cctx)
		cancel()
		if err == nil {
			return nil
		}
		var stop errStop
		if errors.As(err, &stop) {
			return stop.error
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// SentinelAddrs are the sentinels' host:port addresses.
func (d *Sentinel) SentinelAddrs() []string {
	out := make([]string, len(d.sentinels))
	for i, p := range d.sentinels {
		out[i] = p.addr()
	}
	return out
}

// URL is Kombu's sentinel:// URL for database db, with the master name as
// a parameter: sentinel://127.0.0.1:P1/db;sentinel://127.0.0.1:P2;...?master_name=mymaster.
func (d *Sentinel) URL(db int) string {
	parts := make([]string, len(d.sentinels))
	for i, p := range d.sentinels {
		parts[i] = "sentinel://" + p.addr()
	}
	parts[0] += "/" + strconv.Itoa(db)
	return strings.Join(parts, ";") + "?master_name=" + MasterName
}

// MasterAddr asks the sentinels which server is the master now.
func (d *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var errs []error
	for _, p := range d.sentinels {
		c := goredis.NewSentinelClient(&goredis.Options{Addr: p.addr(), MaxRetries: -1})
		a, err := c.GetMasterAddrByName(ctx, MasterName).Result()
		_ = c.Close()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1]), nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("redistest: no sentinel names the master: %w", errors.Join(errs...))
}

// Server returns the server listening on addr, or nil.
func (d *Sentinel) Server(addr string) *Server {
	for _, s := range d.servers {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// Master returns the server the sentinels name as master.
func (d *Sentinel) Master(ctx context.Context) (*Server, error) {
	a, err := d.MasterAddr(ctx)
	if err != nil {
		return nil, err
	}
	if s := d.Server(a); s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("redistest: sentinels name %s, which is not one of ours", a)
}

// KillMaster SIGKILLs the current master. It returns the killed server
// and the time of the kill.
func (d *Sentinel) KillMaster(ctx context.Context) (*Server, time.Time, error) {
	m, err := d.Master(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	m.Kill()
	return m, time.Now(), nil
}

// WaitPromotion waits until every sentinel names a master other than old,
// and that server answers as a master.
func (d *Sentinel) WaitPromotion(ctx context.Context, old string) (string, error) {
	var master string
	err := poll(ctx, func(ctx context.Context) error {
		for _, p := range d.sentinels {
			c := goredis.NewSentinelClient(&goredis.Options{Addr: p.addr(), MaxRetries: -1})
			a, err := c.GetMasterAddrByName(ctx, MasterName).Result()
			_ = c.Close()
			if err != nil {
				return err
			}
			if addr := net.JoinHostPort(a[0], a[1]); addr == old {
				return fmt.Errorf("sentinel %s still names %s", p.addr(), old)
			} else {
				master = addr
			}
		}
		c := goredis.NewClient(&goredis.Options{Addr: master, MaxRetries: -1})
		defer c.Close()
		role, err := c.Do(ctx, "ROLE").Slice()
		if err != nil {
			return err
		}
		if len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("%s is not a master yet: %v", master, role)
		}
		return nil
	})
	return master, err
}

// Revive starts a killed server again on its port, with no data, as a
// replica of the current master (as the sentinels would reconfigure it,
// only sooner). It waits until the replica's link is up.
func (d *Sentinel) Revive(ctx context.Context, s *Server) error {
	master, err := d.MasterAddr(ctx)
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(master)
	s.args = []string{"--replicaof", host, port}
	if err := s.Revive(); err != nil {
		return err
	}
	c := goredis.NewClient(&goredis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	return poll(ctx, func(ctx context.Context) error {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "role:slave") || !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("%s not a connected replica yet", s.Addr())
		}
		return nil
	})
}

// Switch asks the sentinels for a failover with the master alive: the
// replica is promoted, and the old master, still running, is turned into
// its replica. It retries while the sentinels do not know a replica fit
// for promotion yet, and returns the old and the new master's addresses.
func (d *Sentinel) Switch(ctx context.Context) (old, master string, err error) {
	old, err = d.MasterAddr(ctx)
	if err != nil {
		return "", "", err
	}
	c := goredis.NewSentinelClient(&goredis.Options{Addr: d.sentinels[0].addr(), MaxRetries: -1})
	defer c.Close()
	if err := poll(ctx, func(ctx context.Context) error { return c.Failover(ctx, MasterName).Err() }); err != nil {
		return "", "", fmt.Errorf("redistest: SENTINEL FAILOVER: %w", err)
	}
	master, err = d.WaitPromotion(ctx, old)
	return old, master, err
}

// Failover SIGKILLs the master, waits for the promotion of the replica,
// then brings the killed server back as a replica, leaving the deployment
// ready for the next failover. It returns the new master's address.
func (d *Sentinel) Failover(ctx context.Context) (string, error) {
	old, _, err := d.KillMaster(ctx)
	if err != nil {
		return "", err
	}
	m, err := d.WaitPromotion(ctx, old.Addr())
	if err != nil {
		return "", err
	}
	return m, d.Revive(ctx, old)
}

// Close stops every process of the deployment.
func (d *Sentinel) Close() {
	for _, p := range d.sentinels {
		_ = p.cmd.Process.Kill()
		<-p.exit
	}
	for _, s := range d.servers {
		s.Kill()
	}
}
