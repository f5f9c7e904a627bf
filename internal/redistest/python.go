package redistest

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Python is Debian's interpreter, which the interop tests use with
// Debian's python3-kombu, python3-celery and python3-redis.
const Python = "/usr/bin/python3"

// RequirePython checks that Python and the modules the interop tests use
// are installed. It skips the test when they are not, unless CI=true,
// where it fails.
func RequirePython(t TB, modules ...string) {
	t.Helper()
	msg := ""
	if _, err := os.Stat(Python); err != nil {
		msg = Python + " not found"
	} else if out, err := exec.Command(Python, "-c", "import "+strings.Join(modules, ", ")).CombinedOutput(); err != nil {
		msg = "python modules missing: " + strings.TrimSpace(string(out))
	}
	if msg == "" {
		return
	}
	msg += " (apt-get install python3-kombu python3-celery python3-redis python3-msgpack python3-cryptography)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + ": missing in CI")
	}
	t.Skip(msg)
}

// Process is a child process a test started and reads line by line.
type Process struct {
	t    TB
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  []string
	line chan string
	exit chan struct{}
	err  error
}

// StartProcess runs a program, collecting its output (stdout and stderr
// merged), and kills it when the test ends.
func StartProcess(t TB, dir string, env []string, name string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	w.Close()
	p := &Process{t: t, cmd: cmd, line: make(chan string, 1024), exit: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			p.mu.Unlock()
			select {
			case p.line <- sc.Text():
			default:
			}
		}
		r.Close()
	}()
	go func() { p.err = cmd.Wait(); close(p.exit) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exit
	})
	return p
}

// WaitFor waits until a line of output contains s, and fails the test
// (showing the output) after d.
func (p *Process) WaitFor(s string, d time.Duration) {
	p.t.Helper()
	deadline := time.After(d)
	for _, l := range p.Lines() {
		if strings.Contains(l, s) {
			return
		}
	}
	for {
		select {
		case l := <-p.line:
			if strings.Contains(l, s) {
				return
			}
		case <-p.exit:
			if strings.Contains(p.Output(), s) {
				return
			}
			p.t.Fatalf("process exited (%v) before printing %q:\n%s", p.err, s, p.Output())
		case <-deadline:
			p.t.Fatalf("no %q after %s:\n%s", s, d, p.Output())
		}
	}
}

// Lines returns the output so far.
func (p *Process) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.out...)
}

// Output returns the output so far as one string.
func (p *Process) Output() string { return strings.Join(p.Lines(), "\n") }

// Stop sends SIGTERM and waits up to d for the process to exit.
func (p *Process) Stop(d time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.Wait(d)
}

// Wait waits up to d for the process to exit by itself and returns its
// exit error, or context.DeadlineExceeded.
func (p *Process) Wait(d time.Duration) error {
	select {
	case <-p.exit:
		return p.err
	case <-time.After(d):
		return context.DeadlineExceeded
	}
}
