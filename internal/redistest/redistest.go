// Package redistest runs real redis-server processes for tests and
// benchmarks: each on a free loopback port, in a temporary directory, owned
// by its caller, who can also stop, kill, freeze and restart it. There is no
// mock.
//
// When redis-server is not installed, tests skip on a developer machine
// and fail in CI (CI=true).
package redistest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Server is a redis-server process owned by a test.
type Server struct {
	t     TB
	bin   string
	dir   string
	port  int
	tls   *TLS
	cmd   *exec.Cmd
	exit  chan struct{}
	allow []string // key prefixes that may lack a TTL at the end
	args  []string // extra redis-server arguments (replicaof, cluster mode)
}

// TLS makes a server speak TLS only, on its one port, with these PEM
// files (see StartTLS).
type TLS struct {
	// CertFile and KeyFile are the server's certificate and key; CAFile
	// the CA that clients verify it against and, with client
	// certificates, that verifies the clients.
	CertFile, KeyFile, CAFile string
	// ClientCertFile and ClientKeyFile, when set, make the server require
	// client certificates (tls-auth-clients yes); the helper's own
	// connections use this pair.
	ClientCertFile, ClientKeyFile string
}

// Require returns the path of a program the tests need. It skips the test
// when the program is missing, unless CI=true, where it fails.
func Require(t TB, program, install string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found (%s); install it to run this test", program, install)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + ": missing in CI")
	}
	t.Skip(msg)
	return ""
}

// Start runs a fresh redis-server and stops it when the test ends. At the
// end, after everything the test started later has been cleaned up, it
// fails the test if any key in any database lacks a TTL, except under the
// prefixes given to AllowNoTTL.
func Start(t TB) *Server {
	t.Helper()
	return start(t, nil)
}

// StartTLS is Start for a server that speaks TLS only. Its URL is a
// rediss:// URL carrying the CA (and the client certificate) as Kombu's
// ssl_* parameters.
func StartTLS(t TB, cfg TLS) *Server {
	t.Helper()
	return start(t, &cfg)
}

func start(t TB, cfg *TLS) *Server {
	t.Helper()
	bin := Require(t, "redis-server", "apt-get install redis-server")
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), port: port, tls: cfg}
	s.must(s.start())
	t.Cleanup(func() {
		s.checkTTLs()
		s.Kill()
	})
	return s
}

// Launch runs a redis-server outside a test, in dir; Kill stops it. Extra
// arguments go to redis-server after the ones Launch sets
// ("--replicaof", "127.0.0.1", "6379", ...).
func Launch(dir string, args ...string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found (apt-get install redis-server): %w", err)
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir, port: port, args: args}
	return s, s.start()
}

// must fails the test on err.
func (s *Server) must(err error) {
	if err != nil {
		s.t.Helper()
		s.t.Fatal(err)
	}
}

// AllowNoTTL lets keys under these prefixes outlive the test without a
// TTL: keys that Kombu and Celery processes create, which pidbox does not
// own.
func (s *Server) AllowNoTTL(prefixes ...string) { s.allow = append(s.allow, prefixes...) }

func (s *Server) checkTTLs() {
	if s.cmd == nil || s.t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for db := range 16 {
		keys, err := s.KeysWithoutTTL(ctx, db, "*")
		if err != nil {
			s.t.Errorf("redistest: scan db %d: %v", db, err)
			return
		}
		for _, k := range keys {
			allowed := false
			for _, p := range s.allow {
				allowed = allowed || strings.HasPrefix(k, p)
			}
			if !allowed {
				s.t.Errorf("redistest: key %q in db %d has no TTL after the test", k, db)
			}
		}
	}
}

// FreePort returns a TCP port on the loopback interface that nothing
// listens on now, for a broker the tests start.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() error {
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"), "--daemonize", "no"}
	if s.tls != nil {
		args[1] = "0"
		args = append(args, "--tls-port", strconv.Itoa(s.port),
			"--tls-cert-file", s.tls.CertFile, "--tls-key-file", s.tls.KeyFile,
			"--tls-ca-cert-file", s.tls.CAFile, "--tls-auth-clients", "no")
		if s.tls.ClientCertFile != "" {
			args[len(args)-1] = "yes"
		}
	}
	s.cmd = exec.Command(s.bin, append(args, s.args...)...)
	dieWithParent(s.cmd)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	s.exit = make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) { _ = cmd.Wait(); close(exit) }(s.cmd, s.exit)
	o, err := s.options(0)
	if err != nil {
		return err
	}
	o.MaxRetries = -1
	c := goredis.NewClient(o)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exit:
			return fmt.Errorf("redistest: redis-server exited at start: %s", s.Log())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: redis-server on %s not answering: %w", s.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the redis:// URL of database db; for a TLS server, the
// rediss:// URL with the CA and client certificate as ssl_* parameters.
func (s *Server) URL(db int) string {
	if s.tls == nil {
		return fmt.Sprintf("redis://%s/%d", s.Addr(), db)
	}
	q := url.Values{"ssl_cert_reqs": {"required"}, "ssl_ca_certs": {s.tls.CAFile}}
	if s.tls.ClientCertFile != "" {
		q.Set("ssl_certfile", s.tls.ClientCertFile)
		q.Set("ssl_keyfile", s.tls.ClientKeyFile)
	}
	return fmt.Sprintf("rediss://%s/%d?%s", s.Addr(), db, q.Encode())
}

// options are the go-redis options of the helper's own connections.
func (s *Server) options(db int) (*goredis.Options, error) {
	o := &goredis.Options{Addr: s.Addr(), DB: db}
	if s.tls == nil {
		return o, nil
	}
	// The helper talks to its own server on loopback, whatever names the
	// test put in its certificate: it checks nothing but TLS itself.
	o.TLSConfig = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if s.tls.ClientCertFile != "" {
		pair, err := tls.LoadX509KeyPair(s.tls.ClientCertFile, s.tls.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("redistest: %w", err)
		}
		o.TLSConfig.Certificates = []tls.Certificate{pair}
	}
	return o, nil
}

// Client returns a client the test closes at its end.
func (s *Server) Client(db int) *goredis.Client {
	o, err := s.options(db)
	s.must(err)
	c := goredis.NewClient(o)
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill stops the server at once with SIGKILL, losing its data. It is a
// no-op when the server is not running.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a frozen server cannot die otherwise
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

// Restart kills the server and starts a new one on the same port, with
// its data lost.
func (s *Server) Restart() {
	s.Kill()
	s.must(s.start())
}

// Start starts the server again after Kill.
func (s *Server) Start() {
	if s.cmd == nil {
		s.must(s.start())
	}
}

// Revive starts the server again after Kill, on its port, with no data.
// Unlike Start it returns the error, for servers run outside a test.
func (s *Server) Revive() error {
	if s.cmd != nil {
		return nil
	}
	return s.start()
}

// Freeze stops the process with SIGSTOP: connections stay open but nothing
// answers.
func (s *Server) Freeze() { _ = s.cmd.Process.Signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server with SIGCONT.
func (s *Server) Thaw() { _ = s.cmd.Process.Signal(syscall.SIGCONT) }

// KeysWithoutTTL lists the keys in db that match pattern and have no TTL.
func (s *Server) KeysWithoutTTL(ctx context.Context, db int, pattern string) ([]string, error) {
	o, err := s.options(db)
	if err != nil {
		return nil, err
	}
	c := goredis.NewClient(o)
	defer c.Close()
	var out []string
	iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		ttl, err := c.PTTL(ctx, iter.Val()).Result()
		if err != nil {
			return nil, err
		}
		if ttl == -1 { // -2 means it vanished meanwhile
			out = append(out, iter.Val())
		}
	}
	return out, iter.Err()
}

// Log returns the server's log so far, for failure messages.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return strings.TrimSpace(string(b))
}

// PatternSubscribers counts the clients holding pattern subscriptions
// (PSUBSCRIBE), such as Celery's event receivers and fanout consumers: a
// test waits for it before publishing what they must not miss.
func (s *Server) PatternSubscribers(ctx context.Context) (int, error) {
	c := goredis.NewClient(&goredis.Options{Addr: s.Addr()})
	defer c.Close()
	list, err := c.ClientList(ctx).Result()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "psub="); ok && v != "0" {
				n++
			}
		}
	}
	return n, nil
}
