// Package rabbittest runs a real rabbitmq-server for tests and benchmarks:
// Debian's package, started as root from its own script with a private
// HOME (and so Erlang cookie), node name, loopback ports, data and log
// directories, the management plugin, and a TLS listener with
// certificates of a test CA (internal/certtest). There is no mock.
//
// The broker takes seconds to boot, so a test binary shares one: the
// first Get starts it and Main, called from TestMain, stops it after the
// tests. Tests use names of their own on it. Stop
// and Start take it down and bring it back, for outage tests.
//
// When rabbitmq-server is not installed, tests skip on a developer machine
// and fail in CI (CI=true).
package rabbittest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gopidbox/pidbox/internal/certtest"
	"github.com/gopidbox/pidbox/internal/redistest"
)

// Script is the broker's own start script. The packaged
// /usr/sbin/rabbitmq-server wrapper switches to the rabbitmq user, who
// cannot write a directory made by root, so the tests run this one.
const Script = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// bootTimeout bounds a boot; it takes about 6 s on 2 idle cores.
const bootTimeout = 90 * time.Second

// Server is a rabbitmq-server process.
type Server struct {
	dir      string
	node     string
	port     int // AMQP
	tlsPort  int // AMQP over TLS
	httpPort int // management
	distPort int
	ca       *certtest.Cert
	client   *certtest.Cert
	mu       sync.Mutex
	cmd      *exec.Cmd
	exit     chan struct{}
	BootTime time.Duration // how long the last start took
}

// shared is the broker of this test binary, started by the first Get.
var shared struct {
	once sync.Once
	main bool // Main is running the tests
	dir  string
	srv  *Server
	err  error
}

// Main runs the tests and then stops the broker, if a test started one;
// call it from TestMain. run is the test binary's m.Run, or a wrapper
// around it.
func Main(run func() int) int {
	shared.main = true
	code := run()
	if shared.srv != nil {
		shared.srv.Kill()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	return code
}

// Get returns the test binary's broker, starting it on first use. It
// skips the test when rabbitmq-server is not installed, unless CI=true,
// where it fails; a broker that failed to start fails the test.
func Get(t redistest.TB) *Server {
	t.Helper()
	if !shared.main {
		t.Fatal("rabbittest: call rabbittest.Main from TestMain")
	}
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "rabbittest-")
		if shared.err == nil {
			shared.srv, shared.err = Launch(shared.dir)
		}
	})
	if errors.Is(shared.err, errMissing) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: missing in CI", shared.err)
		}
		t.Skip(shared.err)
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	if err := shared.srv.start(); err != nil { // after a test that left it stopped
		t.Fatal(err)
	}
	return shared.srv
}

var errMissing = errors.New("rabbitmq-server not found (apt-get install rabbitmq-server)")

// Launch starts a broker in dir, outside any test; Kill stops it.
func Launch(dir string) (*Server, error) {
	if _, err := os.Stat(Script); err != nil {
		return nil, fmt.Errorf("%w: %v", errMissing, err)
	}
	s := &Server{dir: dir}
	var err error
	for _, p := range []*int{&s.port, &s.tlsPort, &s.httpPort, &s.distPort} {
		if *p, err = redistest.FreePort(); err != nil {
			return nil, err
		}
	}
	s.node = fmt.Sprintf("pidbox%d@localhost", s.port)
	// The TLS listener verifies clients: each must present a certificate
	// of the test CA.
	tlsDir := filepath.Join(dir, "tls")
	if err := os.Mkdir(tlsDir, 0o700); err != nil {
		return nil, err
	}
	s.ca = certtest.NewCA(nil, tlsDir, "ca", certtest.Spec{CommonName: "rabbittest CA"})
	server := certtest.Issue(nil, tlsDir, "server", s.ca, certtest.Spec{CommonName: "localhost", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	s.client = certtest.Issue(nil, tlsDir, "client", s.ca, certtest.Spec{CommonName: "pidbox client", Client: true})
	files := map[string]string{
		"enabled_plugins": "[rabbitmq_management].\n",
		"rabbitmq.conf": fmt.Sprintf("listeners.tcp.1 = 127.0.0.1:%d\nloopback_users = none\n"+
			"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %d\n"+
			"listeners.ssl.default = 127.0.0.1:%d\nssl_options.cacertfile = %s\nssl_options.certfile = %s\nssl_options.keyfile = %s\n"+
			"ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
			s.port, s.httpPort, s.tlsPort, s.ca.CertFile, server.CertFile, server.KeyFile),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	if err := s.start(); err != nil {
		s.Kill()
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	begin := time.Now()
	cmd := exec.Command(Script)
	cmd.Env = append(os.Environ(),
		"HOME="+s.dir,
		"RABBITMQ_NODENAME="+s.node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(s.port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(s.distPort),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(s.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(s.dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(s.dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(s.dir, "rabbitmq"),
		"RABBITMQ_PLUGINS_EXPAND_DIR="+filepath.Join(s.dir, "plugins-expand"),
	)
	out, err := os.Create(filepath.Join(s.dir, "stdout.log"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Kill ends the script and the Erlang VM
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("rabbittest: start %s: %w", Script, err)
	}
	s.cmd, s.exit = cmd, make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) { _ = cmd.Wait(); close(exit) }(cmd, s.exit)
	deadline := time.Now().Add(bootTimeout)
	for {
		err := s.ready()
		if err == nil {
			s.BootTime = time.Since(begin)
			return nil
		}
		select {
		case <-s.exit:
			s.cmd = nil
			return fmt.Errorf("rabbittest: rabbitmq-server exited at start: %s", s.Log())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rabbittest: rabbitmq-server not ready after %s (%v): %s", bootTimeout, err, s.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ready checks that AMQP accepts connections and the management API
// answers, which it does last.
func (s *Server) ready() error {
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return err
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.ManagementURL()+"/api/overview", nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("management API: %s", resp.Status)
	}
	return nil
}

// Addr is the AMQP listener's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the amqp:// URL of the default vhost "/" as guest, in Kombu's
// spelling.
func (s *Server) URL() string { return "amqp://guest:guest@" + s.Addr() + "//" }

// ManagementURL is the management API's base URL, without credentials.
func (s *Server) ManagementURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.httpPort) }

// TLSAddr is the AMQP-over-TLS listener's host:port. Its certificate,
// made by CA, names localhost and 127.0.0.1; it verifies clients and
// refuses one without a certificate of CA (ClientCert is one).
func (s *Server) TLSAddr() string { return "127.0.0.1:" + strconv.Itoa(s.tlsPort) }

// CA is the test CA that signed the TLS listener's and ClientCert's
// certificates.
func (s *Server) CA() *certtest.Cert { return s.ca }

// ClientCert is a client certificate the TLS listener accepts.
func (s *Server) ClientCert() *certtest.Cert { return s.client }

// Node is the broker's Erlang node name.
func (s *Server) Node() string { return s.node }

// Kill stops the broker at once with SIGKILL to its process group. It is a
// no-op when the broker is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGCONT) // a frozen broker cannot die otherwise
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exit
	s.cmd = nil
	// The Erlang VM, a child of the script, may outlive it by a moment.
	for range 100 {
		c, err := net.DialTimeout("tcp", s.Addr(), 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the broker, for outage tests. Its transient exchanges and
// queues are gone when it comes back.
func (s *Server) Stop() { s.Kill() }

// Start boots the broker again after Stop and waits until it is ready;
// it panics if it cannot, which fails the test binary loudly.
func (s *Server) Start() {
	if err := s.start(); err != nil {
		panic(err)
	}
}

// Freeze stops the broker's processes with SIGSTOP: connections stay open
// but nothing answers, not even heartbeats. It returns once every thread
// of the broker has stopped.
func (s *Server) Freeze() {
	s.signal(syscall.SIGSTOP)
	for range 200 {
		if s.stopped() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stopped reports whether every thread of every process in the broker's
// process group is stopped.
func (s *Server) stopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return true
	}
	pgid := s.cmd.Process.Pid
	stats, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) < 3 || fields[2] != strconv.Itoa(pgid) {
			continue
		}
		if fields[0] != "T" && fields[0] != "t" {
			return false
		}
	}
	return true
}

// Thaw resumes a frozen broker with SIGCONT.
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, sig)
	}
}

// Restart stops the broker and starts it again.
func (s *Server) Restart() {
	s.Stop()
	s.Start()
}

// Log returns the tail of the broker's output and log, for failure
// messages.
func (s *Server) Log() string {
	var b strings.Builder
	for _, name := range []string{filepath.Join(s.dir, "stdout.log"), filepath.Join(s.dir, "log", s.node+".log")} {
		data, _ := os.ReadFile(name)
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		b.Write(data)
	}
	return strings.TrimSpace(b.String())
}

// API sends a request to the management API as guest, with body as JSON
// (none when empty), and returns the response body. A status other than
// 2xx is an error naming the request.
func (s *Server) API(ctx context.Context, method, path, body string) ([]byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.ManagementURL()+path, rd)
	if err != nil {
		return nil, fmt.Errorf("rabbittest: %s %s: %w", method, path, err)
	}
	req.SetBasicAuth("guest", "guest")
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("rabbittest: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("rabbittest: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("rabbittest: %s %s: %s: %s", method, path, resp.Status, out)
	}
	return out, nil
}

// AddVhost creates the virtual host name, if it does not exist, with every
// permission for guest. With tracing, RabbitMQ's firehose publishes a copy
// of every message published on it to its amq.rabbitmq.trace exchange
// (rabbitmqctl trace_on). It returns the vhost's amqp:// URL as guest.
func (s *Server) AddVhost(ctx context.Context, name string, tracing bool) (string, error) {
	p := url.PathEscape(name)
	if _, err := s.API(ctx, http.MethodPut, "/api/vhosts/"+p, fmt.Sprintf(`{"tracing": %t}`, tracing)); err != nil {
		return "", err
	}
	if _, err := s.API(ctx, http.MethodPut, "/api/permissions/"+p+"/guest", `{"configure": ".*", "write": ".*", "read": ".*"}`); err != nil {
		return "", err
	}
	return "amqp://guest:guest@" + s.Addr() + "/" + p, nil
}

// Ctl runs rabbitmqctl (the broker's own script, as for the server) with
// args against this broker's node, with its Erlang cookie, and returns its
// output. It fails when ctx ends or rabbitmqctl exits non-zero.
func (s *Server) Ctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(filepath.Dir(Script), "rabbitmqctl"), append([]string{"-n", s.node}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+s.dir, "RABBITMQ_NODENAME="+s.node)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbittest: rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MemoryAlarm sets off the broker's memory alarm (on) or clears it, with
// rabbitmqctl set_vm_memory_high_watermark (a tiny fraction, or the
// default 0.6), and returns once the broker's alarm list says so. While it
// is on, RabbitMQ blocks every connection that publishes
// (connection.blocked): it stops reading it, so nothing sent on it is
// answered.
func (s *Server) MemoryAlarm(ctx context.Context, on bool) error {
	mark := "0.6"
	if on {
		mark = "0.0000001"
	}
	if _, err := s.Ctl(ctx, "set_vm_memory_high_watermark", mark); err != nil {
		return err
	}
	for {
		out, err := s.Ctl(ctx, "eval", "rabbit_alarm:get_alarms().")
		if err != nil {
			return err
		}
		if strings.Contains(out, "resource_limit,memory") == on {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rabbittest: memory alarm not %t: %w (%s)", on, ctx.Err(), out)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
