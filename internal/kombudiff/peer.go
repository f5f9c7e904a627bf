package kombudiff

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/redistest"
)

//go:embed kombu_peer.py
var peerScript []byte

// script writes kombu_peer.py into dir and returns its path.
func script(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "kombu_peer.py")
	if err := os.WriteFile(path, peerScript, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// proc is a Python process the suite talks to over stdin and stdout.
type proc struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	exit  chan struct{}

	mu     sync.Mutex
	stderr bytes.Buffer
}

func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, lines: make(chan string, 4096), exit: make(chan struct{})}
	p.cmd = exec.Command(redistest.Python, args...)
	p.cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		_ = p.cmd.Wait()
		close(p.exit)
	}()
	t.Cleanup(func() {
		_ = p.stdin.Close()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exit:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exit
		}
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (p *proc) errOutput() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stderr.String()
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s
}

// next returns the next line of output, or an error after d or when the
// process has exited.
func (p *proc) next(d time.Duration) (string, error) {
	if d <= 0 {
		select {
		case l := <-p.lines:
			return l, nil
		default:
			return "", errors.New("kombu peer: no output yet")
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case l := <-p.lines:
		return l, nil
	case <-p.exit:
		select {
		case l := <-p.lines:
			return l, nil
		default:
		}
		return "", fmt.Errorf("kombu peer exited: %s", p.errOutput())
	case <-t.C:
		return "", fmt.Errorf("kombu peer: no output after %s; stderr: %s", d, p.errOutput())
	}
}

// kombuNodes runs Kombu pidbox nodes and reports their handler calls.
type kombuNodes struct{ p *proc }

// nodeSpec is one Kombu node to run.
type nodeSpec struct {
	Namespace  string   `json:"namespace"`
	Type       string   `json:"type"`
	Serializer string   `json:"serializer"`
	Accept     []string `json:"accept"`
	Hostname   string   `json:"hostname"`
	AnyMethod  bool     `json:"any_method,omitempty"` // record every method, not only echo and fail
}

func startKombuNodes(t testing.TB, dir, url string, specs []nodeSpec) *kombuNodes {
	t.Helper()
	raw, err := json.Marshal(specs)
	if err != nil {
		t.Fatal(err)
	}
	p := startProc(t, script(t, dir), "node", url, string(raw))
	for {
		l, err := p.next(30 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if l == "READY" {
			return &kombuNodes{p: p}
		}
	}
}

// received is one handler call as the handler saw it.
type received struct {
	Node   string `json:"node"`
	Method string `json:"method"`
	Args   any    `json:"args"`
}

func (k *kombuNodes) recv(d time.Duration) (received, error) {
	for {
		l, err := k.p.next(d)
		if err != nil {
			return received{}, err
		}
		if rest, ok := strings.CutPrefix(l, "RECV "); ok {
			var r received
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				return received{}, fmt.Errorf("kombu node: %q: %w", l, err)
			}
			return r, nil
		}
	}
}

// kombuClient sends commands through Kombu, one at a time.
type kombuClient struct{ p *proc }

func startKombuClient(t testing.TB, dir string) *kombuClient {
	return &kombuClient{p: startProc(t, script(t, dir), "client")}
}

// clientCmd is one Kombu _broadcast.
type clientCmd struct {
	URL         string            `json:"url"`
	Namespace   string            `json:"namespace"`
	Type        string            `json:"type"`
	Serializer  string            `json:"serializer"`
	Accept      []string          `json:"accept"`
	Method      string            `json:"method"`
	Args        map[string]string `json:"args"` // name -> Python expression
	Destination []string          `json:"destination,omitempty"`
	Pattern     string            `json:"pattern,omitempty"`
	Matcher     string            `json:"matcher,omitempty"`
	Reply       bool              `json:"reply"`
	Limit       int               `json:"limit,omitempty"`
	Timeout     float64           `json:"timeout"`
}

// clientResult is what Kombu's caller got.
type clientResult struct {
	OK      bool   `json:"ok"`
	Replies []any  `json:"replies"`
	Error   string `json:"error"`
	Trace   string `json:"trace"`
}

func (k *kombuClient) do(cmd clientCmd) (clientResult, error) {
	raw, err := json.Marshal(cmd)
	if err != nil {
		return clientResult{}, err
	}
	if _, err := k.p.stdin.Write(append(raw, '\n')); err != nil {
		return clientResult{}, fmt.Errorf("kombu client: %w: %s", err, k.p.errOutput())
	}
	l, err := k.p.next(time.Duration(cmd.Timeout*float64(time.Second)) + 20*time.Second)
	if err != nil {
		return clientResult{}, err
	}
	var res clientResult
	if err := json.Unmarshal([]byte(l), &res); err != nil {
		return clientResult{}, fmt.Errorf("kombu client: %q: %w", l, err)
	}
	return res, nil
}
