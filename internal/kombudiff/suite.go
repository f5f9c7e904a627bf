package kombudiff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
)

// variant is one mailbox configuration, shared by both fleets.
type variant struct {
	name       string
	kind       transport.Kind
	clientSer  string // the caller's serializer
	clientAcc  []string
	nodeSer    string // the nodes' serializer
	nodeAcc    []string
	namespace  string
	valueTable bool // run the value table on it
}

var (
	both     = []string{"json", "msgpack"}
	jsonOnly = []string{"json"}
)

// variants: Kombu's defaults (json, accept json), a msgpack fleet, both on
// fanout (Celery) and direct (Kombu's default) mailboxes, and a caller
// that sends msgpack to json nodes and accepts only json, as Kombu's
// Mailbox does by default: a Kombu node answers it in json.
var variants = []variant{
	{name: "fanout-json", kind: transport.Fanout, clientSer: "json", clientAcc: jsonOnly, nodeSer: "json", nodeAcc: jsonOnly, valueTable: true},
	{name: "fanout-msgpack", kind: transport.Fanout, clientSer: "msgpack", clientAcc: both, nodeSer: "msgpack", nodeAcc: both, valueTable: true},
	{name: "direct-json", kind: transport.Direct, clientSer: "json", clientAcc: jsonOnly, nodeSer: "json", nodeAcc: jsonOnly},
	{name: "direct-msgpack", kind: transport.Direct, clientSer: "msgpack", clientAcc: both, nodeSer: "msgpack", nodeAcc: both},
	{name: "msgpack-caller-json-nodes", kind: transport.Fanout, clientSer: "msgpack", clientAcc: jsonOnly, nodeSer: "json", nodeAcc: both},
}

// The two nodes of each fleet, in every variant's namespace.
const (
	alpha = "alpha@x"
	beta  = "beta@y"
)

// arg is one keyword argument, as Go holds it and as Python writes it.
type arg struct {
	Go any
	Py string
}

// op is one operation, run through Kombu and through pidbox.
type op struct {
	name        string
	method      string
	args        map[string]arg
	destination []string
	pattern     string
	matcher     string
	reply       bool
	limit       int      // replies to wait for
	runs        []string // the nodes whose handler runs
	castTimeout bool     // the Go cast passes Timeout, as Kombu's always has one
	timeout     float64  // Kombu's caller's timeout in seconds; default 2
	goReplies   string   // a known difference: what Kombu's caller reads from Go's nodes
	why         string   // and why
}

var small = map[string]arg{"a": {int64(1), "1"}, "b": {"x", "'x'"}}

// suite holds both fleets and both callers.
type suite struct {
	t       *testing.T
	b       Broker
	tap     Tap
	knodes  *kombuNodes
	kclient *kombuClient
	goRecv  chan received
	callers map[string]*pidbox.Mailbox // variant name -> Go caller in fleet 0
	goNodes map[string][]*pidbox.Node  // variant name -> Go nodes in fleet 1
	log     *testlog.Buffer
}

// Run runs the differential suite on a broker. It needs /usr/bin/python3
// with kombu and msgpack (and the broker's Python client); without them it
// skips, or fails when CI=true.
func Run(t *testing.T, b Broker) {
	redistest.RequirePython(t, "kombu", "msgpack")
	s := setup(t, b)
	t.Run("Envelopes", s.envelopes)
	t.Run("Values", s.values)
	t.Run("RefusedContentType", s.refusedContentType)
	t.Run("UnrepresentableReply", s.unrepresentableReply)
	if b.Controller != "" {
		t.Run("Controller", s.controller)
		t.Run("CeleryControl", s.celeryControl)
	}
	if t.Failed() {
		t.Logf("Go log:\n%s", tail(s.log.String(), 8000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (v variant) ns() string { return "kd_" + strings.ReplaceAll(v.name, "-", "_") }

func setup(t *testing.T, b Broker) *suite {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := &suite{t: t, b: b, goRecv: make(chan received, 1024), callers: map[string]*pidbox.Mailbox{}, goNodes: map[string][]*pidbox.Node{}, log: &testlog.Buffer{}}
	tap, err := b.Tap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tap.Close() })
	s.tap = tap

	dir := t.TempDir()
	var specs []nodeSpec
	for _, v := range variants {
		for _, h := range []string{alpha, beta} {
			specs = append(specs, nodeSpec{Namespace: v.ns(), Type: string(v.kind), Serializer: v.nodeSer, Accept: v.nodeAcc, Hostname: h})
		}
	}
	// Celery's namespace, for `celery control`: a node that records any command.
	specs = append(specs, nodeSpec{Namespace: "celery", Type: "fanout", Serializer: "json", Accept: jsonOnly, Hostname: alpha, AnyMethod: true})
	s.knodes = startKombuNodes(t, dir, b.KombuURL[0], specs)
	s.kclient = startKombuClient(t, dir)

	logger := slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	open := func(url string) transport.Transport {
		tr, err := b.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		return tr
	}
	callerTr, nodeTr := open(b.GoURL[0]), open(b.GoURL[1])
	nodeCtx, stopNodes := context.WithCancel(context.Background())
	var served []chan error
	t.Cleanup(func() {
		stopNodes()
		for _, c := range served {
			<-c
		}
	})
	for _, v := range variants {
		caller, err := pidbox.New(callerTr, pidbox.Options{Namespace: v.ns(), Type: v.kind, Serializer: v.clientSer, Accept: v.clientAcc, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = caller.Close() })
		s.callers[v.name] = caller
		nodes, err := pidbox.New(nodeTr, pidbox.Options{Namespace: v.ns(), Type: v.kind, Serializer: v.nodeSer, Accept: v.nodeAcc, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{alpha, beta} {
			n := nodes.NewNode(h, pidbox.NodeOptions{})
			n.RegisterFunc("echo", s.goEcho)
			n.RegisterFunc("fail", s.goFail)
			n.RegisterFunc("bad_utf8", func(context.Context, *pidbox.Request) (any, error) {
				return map[string]any{"s": "a\xffb"}, nil // no Python str can hold this
			})
			s.goNodes[v.name] = append(s.goNodes[v.name], n)
			done := make(chan error, 1)
			served = append(served, done)
			go func() { done <- n.Serve(nodeCtx) }()
			select {
			case <-n.Ready():
			case err := <-done:
				t.Fatalf("go node %s: %v", h, err)
			}
		}
	}
	if _, err := tap.Sync(ctx); err != nil { // start clean
		t.Fatal(err)
	}
	return s
}

// goEcho is the Go twin of kombu_peer.py's echo: it decodes the arguments
// into plain values, reports them, and returns them.
func (s *suite) goEcho(_ context.Context, r *pidbox.Request) (any, error) {
	var args map[string]any
	if err := r.Decode(&args); err != nil {
		s.goRecv <- received{Node: r.Node.Hostname(), Method: r.Method, Args: []any{"go", "error", err.Error()}}
		return nil, err
	}
	if args == nil {
		args = map[string]any{}
	}
	s.goRecv <- received{Node: r.Node.Hostname(), Method: r.Method, Args: Describe(args)}
	return args, nil
}

// goFail fails as kombu_peer.py's fail does, with the same text.
func (s *suite) goFail(_ context.Context, r *pidbox.Request) (any, error) {
	var args map[string]any
	if err := r.Decode(&args); err != nil {
		return nil, err
	}
	if args == nil {
		args = map[string]any{}
	}
	s.goRecv <- received{Node: r.Node.Hostname(), Method: r.Method, Args: Describe(args)}
	return nil, errors.New("ValueError('bad thing')")
}

// outcome is what one run of an operation did.
type outcome struct {
	frames   []Frame
	recv     []received
	replies  []any // descriptions of {node: value}, sorted
	err      string
	errValue error // the Go caller's error
}

// of returns the requests or the replies among an outcome's frames.
func (o outcome) of(kind, ns string) []Frame {
	var out []Frame
	for _, f := range o.frames {
		isReply := f.Fields["properties.delivery_info.exchange"] == fmt.Sprintf("str %q", "reply."+ns+".pidbox")
		if isReply == (kind == "reply") {
			out = append(out, f)
		}
	}
	return out
}

// viaKombu runs o through Kombu's client on a fleet.
func (s *suite) viaKombu(ctx context.Context, v variant, fleet int, o op, expectRecv int) outcome {
	s.t.Helper()
	s.drainRecv(fleet)
	args := map[string]string{}
	for k, a := range o.args {
		args[k] = a.Py
	}
	cmd := clientCmd{URL: s.b.KombuURL[fleet], Namespace: v.ns(), Type: string(v.kind), Serializer: v.clientSer, Accept: v.clientAcc,
		Method: o.method, Args: args, Destination: o.destination, Pattern: o.pattern, Matcher: o.matcher,
		Reply: o.reply, Limit: o.limit, Timeout: 2}
	if o.timeout > 0 {
		cmd.Timeout = o.timeout
	}
	res, err := s.kclient.do(cmd)
	if err != nil {
		s.t.Fatal(err)
	}
	out := outcome{replies: res.Replies}
	if !res.OK {
		out.err = res.Error
	}
	s.finish(ctx, &out, fleet, expectRecv)
	return out
}

// viaGo runs o through a Go caller on fleet 0 (Kombu's nodes).
func (s *suite) viaGo(ctx context.Context, v variant, o op, expectRecv int) outcome {
	s.t.Helper()
	s.drainRecv(0)
	args := map[string]any{}
	for k, a := range o.args {
		args[k] = a.Go
	}
	opts := []pidbox.CallOption{pidbox.Timeout(2 * time.Second)}
	if len(o.destination) > 0 {
		opts = append(opts, pidbox.To(o.destination...))
	}
	switch o.matcher {
	case "glob":
		opts = append(opts, pidbox.Glob(o.pattern))
	case "pcre":
		opts = append(opts, pidbox.PCRE(o.pattern))
	}
	if o.limit > 0 {
		opts = append(opts, pidbox.Limit(o.limit))
	}
	caller := s.callers[v.name]
	var out outcome
	if o.reply {
		res, err := caller.Call(ctx, o.method, args, opts...)
		if err != nil {
			out.err, out.errValue = err.Error(), err
		}
		var rs []reply.Reply
		if res != nil {
			rs = res.Replies
		}
		for _, r := range rs {
			var val any
			var d any
			if err := r.Decode(&val); err != nil {
				d = []any{"go", "undecodable", err.Error()}
			} else {
				d = Describe(val)
			}
			out.replies = append(out.replies, []any{"dict", []any{[]any{[]any{"str", r.Node}, d}}})
		}
	} else {
		if !o.castTimeout {
			opts = opts[1:]
		}
		if err := caller.Cast(ctx, o.method, args, opts...); err != nil {
			out.err, out.errValue = err.Error(), err
		}
	}
	s.finish(ctx, &out, 0, expectRecv)
	return out
}

// finish waits for the handler calls an operation should cause, then
// takes what reached the broker meanwhile.
func (s *suite) finish(ctx context.Context, out *outcome, fleet, expectRecv int) {
	s.t.Helper()
	for range expectRecv {
		r, err := s.recv(fleet, 5*time.Second)
		if err != nil {
			s.t.Errorf("waiting for a handler call: %v", err)
			break
		}
		out.recv = append(out.recv, r)
	}
	sort.Slice(out.recv, func(i, j int) bool { return out.recv[i].Node < out.recv[j].Node })
	sort.Slice(out.replies, func(i, j int) bool { return Canon(out.replies[i]) < Canon(out.replies[j]) })
	frames, err := s.tap.Sync(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	out.frames = frames
	for _, f := range frames {
		if f.Fleet != fleet {
			s.t.Errorf("a message in the other fleet: %s %v", f.Route, f.Fields)
		}
	}
}

func (s *suite) recv(fleet int, d time.Duration) (received, error) {
	if fleet == 0 {
		return s.knodes.recv(d)
	}
	if d <= 0 {
		select {
		case r := <-s.goRecv:
			return r, nil
		default:
			return received{}, errors.New("no handler call on a Go node")
		}
	}
	select {
	case r := <-s.goRecv:
		return r, nil
	case <-time.After(d):
		return received{}, fmt.Errorf("no handler call on a Go node after %s", d)
	}
}

// drainRecv fails on handler calls nobody expected (a message delivered
// twice, or late).
func (s *suite) drainRecv(fleet int) {
	s.t.Helper()
	for {
		r, err := s.recv(fleet, 0)
		if err != nil {
			return
		}
		s.t.Errorf("unexpected handler call: %+v", r)
	}
}
