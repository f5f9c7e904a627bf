package kombudiff

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/redistest"
)

// refusedContentType sends nodes that accept only json a burst of msgpack
// commands: Kombu's and Go's nodes both drop them without running the
// handler, the Go node logs the drops rate-limited, and both keep serving.
func (s *suite) refusedContentType(t *testing.T) {
	s.t = t
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	v := variants[0] // nodes accept json only, as Kombu's default
	if v.nodeAcc[0] != "json" || len(v.nodeAcc) != 1 {
		t.Fatalf("variant %s: want nodes that accept only json", v.name)
	}
	bad := v
	bad.clientSer, bad.clientAcc = "msgpack", both
	const burst = 100
	for fleet := range 2 {
		before := strings.Count(s.log.String(), "not accepted")
		var dropped uint64
		for _, n := range s.goNodes[v.name] {
			dropped += n.Stats().Dropped
		}
		start := time.Now()
		for range burst {
			res, err := s.kclient.do(clientCmd{URL: s.b.KombuURL[fleet], Namespace: bad.ns(), Type: string(bad.kind),
				Serializer: bad.clientSer, Accept: bad.clientAcc, Method: "echo", Args: map[string]string{"a": "1"}, Timeout: 2})
			if err != nil || !res.OK {
				t.Fatalf("kombu cast: %v %s", err, res.Error)
			}
		}
		elapsed := time.Since(start)
		if _, err := s.tap.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		// The handler never ran: drainRecv, in the next run, fails on any
		// handler call; and a normal call is answered as before.
		// Both nodes: each has read the whole burst once it answers.
		o := op{name: "call", method: "echo", args: small, destination: []string{alpha, beta}, reply: true, limit: 2, runs: []string{alpha, beta}}
		res := s.viaKombu(ctx, v, fleet, o, 2)
		if res.err != "" || len(res.replies) != 2 {
			t.Errorf("fleet %d: after the refused burst, a json call got %s (error %q)", fleet, showAll(res.replies), res.err)
		}
		if fleet == 1 {
			var now uint64
			for _, n := range s.goNodes[v.name] {
				now += n.Stats().Dropped
			}
			if got := now - dropped; got != 2*burst {
				t.Errorf("go nodes counted %d dropped messages, want %d", got, 2*burst)
			}
			lines := strings.Count(s.log.String(), "not accepted") - before
			// ratelog lets 20 lines a second through per node.
			max := 2 * 20 * (int(elapsed/time.Second) + 2)
			if lines < 1 || lines > max || lines >= 2*burst {
				t.Errorf("go nodes logged %d drops for %d refused messages in %s; want 1..%d", lines, 2*burst, elapsed, max)
			}
		}
	}
}

// controller runs examples/controller's call against Kombu's nodes with
// arguments written as on a command line, and compares what the handler
// received and what the controller printed with Kombu's own caller.
func (s *suite) controller(t *testing.T) {
	py := map[string]arg{
		"n": {Py: "3"}, "f": {Py: "3.0"}, "neg": {Py: "-5"}, "big": {Py: "2**64-1"}, "p53": {Py: "2**53+1"},
		"s": {Py: "'x'"}, "rate": {Py: "'10/m'"}, "l": {Py: "[1, 2.5, None]"}, "m": {Py: "{'k': 1, 'z': 0.5}"},
	}
	cli := []string{`--args={"n": 3, "f": 3.0, "neg": -5, "big": 18446744073709551615}`,
		"p53=9007199254740993", "s=x", "rate=10/m", "l=[1, 2.5, null]", `m={"k": 1, "z": 0.5}`}
	for _, v := range variants {
		if !v.valueTable {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			s.t = t
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			o := op{name: "controller", method: "echo", args: py, destination: []string{alpha}, reply: true, limit: 1, runs: []string{alpha}}
			kk := s.viaKombu(ctx, v, 0, o, 1)
			if kk.err != "" || len(kk.recv) != 1 || len(kk.replies) != 1 {
				t.Fatalf("kombu->kombu: %q %v %v", kk.err, kk.recv, kk.replies)
			}
			s.drainRecv(0)
			args := append([]string{"--broker", s.b.GoURL[0], "--namespace", v.ns(), "--type", string(v.kind),
				"--serializer", v.clientSer, "--timeout", "10s", "--json", "call", "echo", "-d", alpha}, cli...)
			cmd := exec.CommandContext(ctx, s.b.Controller, args...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("controller %v: %v\n%s%s", args, err, out, stderr.String())
			}
			r, err := s.recv(0, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !Same(r.Args, kk.recv[0].Args) {
				t.Errorf("the handler received %s from the controller; from Kombu's caller: %s", Show(r.Args), Show(kk.recv[0].Args))
			}
			printed, err := DecodePayload("application/json", out)
			if err != nil {
				t.Fatalf("controller --json printed %q: %v", out, err)
			}
			if got, want := Show(Describe(printed)), Show(kk.replies[0]); got != want {
				t.Errorf("the controller printed %s; Kombu's caller read %s", got, want)
			}
			if _, err := s.tap.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// celeryControl sends Celery's control commands once with `celery
// control` and once with the controller, written the controller's way
// (key=value), and compares the requests on the broker and what the
// handler received: the controller sends Celery's types.
func (s *suite) celeryControl(t *testing.T) {
	redistest.RequirePython(t, "celery")
	for _, c := range []struct {
		method string
		celery []string // positional, converted by Celery's declared types
		pairs  []string
	}{
		{"pool_grow", []string{"3"}, []string{"n=3"}},
		{"autoscale", []string{"10", "3"}, []string{"max=10", "min=3"}},
		{"rate_limit", []string{"tasks.add", "10/m"}, []string{"task_name=tasks.add", "rate_limit=10/m"}},
		{"time_limit", []string{"tasks.add", "1.5", "2"}, []string{"task_name=tasks.add", "soft=1.5", "hard=2.0"}},
	} {
		t.Run(c.method, func(t *testing.T) {
			s.t = t
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s.drainRecv(0)
			run := func(name string, args ...string) (received, []Frame) {
				t.Helper()
				cmd := exec.CommandContext(ctx, name, args...)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s %v: %v\n%s", name, args, err, out)
				}
				r, err := s.recv(0, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				frames, err := s.tap.Sync(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var requests []Frame
				for _, f := range frames {
					if f.Fields["properties.delivery_info.exchange"] == `str "celery.pidbox"` {
						requests = append(requests, f)
					}
				}
				return r, requests
			}
			byCelery, celeryReq := run(redistest.Python, append([]string{"-m", "celery", "-b", s.b.KombuURL[0], "control", c.method},
				append(c.celery, "-d", alpha, "-t", "5")...)...)
			byGo, goReq := run(s.b.Controller, append([]string{"--broker", s.b.GoURL[0], "--timeout", "5s", "call", c.method, "-d", alpha},
				c.pairs...)...)
			if byCelery.Method != c.method || byGo.Method != c.method || !Same(byCelery.Args, byGo.Args) {
				t.Errorf("the handler received %s(%s) from the controller; from celery control: %s(%s)",
					byGo.Method, Show(byGo.Args), byCelery.Method, Show(byCelery.Args))
			}
			if len(celeryReq) != 1 {
				t.Fatalf("celery control put %d requests on the broker, want 1", len(celeryReq))
			}
			s.compareFrames(t, variant{name: "celery"}, op{name: "celery-control"}, "request", celeryReq, goReq)
		})
	}
}

// unrepresentableReply: a Go handler returns a string that is not UTF-8,
// which no Python str can hold. In msgpack, Kombu's caller would refuse
// the whole message and lose the reply without a word: the Go node sends
// an error reply instead. In json, encoding/json replaces the bad byte
// with U+FFFD.
func (s *suite) unrepresentableReply(t *testing.T) {
	want := map[string]string{
		"json":    `[{"alpha@x": {"s": "a�b"}}, {"beta@y": {"s": "a�b"}}]`,
		"msgpack": `[{"alpha@x": {"error": "the reply of bad_utf8 cannot be serialized: `,
	}
	for _, v := range variants {
		if !v.valueTable {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			s.t = t
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			o := op{name: "bad_utf8", method: "bad_utf8", destination: []string{alpha, beta}, reply: true, limit: 2}
			kg := s.viaKombu(ctx, v, 1, o, 0)
			if kg.err != "" {
				t.Fatalf("Kombu's caller failed: %s", kg.err)
			}
			got := showAll(kg.replies)
			if !strings.HasPrefix(got, want[v.nodeSer]) || len(kg.replies) != 2 {
				t.Errorf("Kombu's caller read %s, want %s...", got, want[v.nodeSer])
			}
			if v.nodeSer == "msgpack" && !strings.Contains(got, "not valid UTF-8") {
				t.Errorf("the error reply should say why: %s", got)
			}
		})
	}
}
