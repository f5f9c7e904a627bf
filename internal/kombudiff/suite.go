package kombudiff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	goReplies   string   // a known difference: what Kombu's caller reads from Go's nodes
	why         string   // and why
}

var small = map[string]arg{"a": {int64(1), "1"}, "b": {"x", "'x'"}}

var ops = []op{
	{name: "call", method: "echo", args: small, destination: []string{beta}, reply: true, limit: 1, runs: []string{beta}},
	{name: "cast", method: "echo", args: small, destination: []string{beta}, runs: []string{beta}},
	{name: "broadcast-all", method: "echo", args: small, reply: true, limit: 2, runs: []string{alpha, beta}},
	{name: "broadcast-destinations", method: "echo", args: small, destination: []string{alpha, beta}, reply: true, limit: 2, runs: []string{alpha, beta}},
	{name: "broadcast-glob", method: "echo", args: small, pattern: "al*", matcher: "glob", reply: true, limit: 1, runs: []string{alpha}},
	{name: "broadcast-pcre", method: "echo", args: small, pattern: `b.t`, matcher: "pcre", reply: true, limit: 1, runs: []string{beta}},
	{name: "error-reply", method: "fail", destination: []string{alpha}, reply: true, limit: 1, runs: []string{alpha}},
	{name: "cast-no-args", method: "echo", runs: []string{alpha, beta}},
	{name: "cast-timeout", method: "echo", args: small, destination: []string{alpha}, castTimeout: true, runs: []string{alpha}},
	{name: "unknown-method", method: "nosuch", destination: []string{beta}, reply: true, limit: 1,
		goReplies: `[{"beta@y": {"error": "unknown method \"nosuch\""}}]`, why: unknownWhy},
}

// ignored are the only envelope fields whose values are not compared, one
// by one with the reason ("request " or "reply " restricts one to that
// kind of message); their kind (int, float, str, absent) still is.
var ignored = map[string]string{
	"headers.clock":                              "a Lamport clock: each process counts its own",
	"headers.expires":                            "a timestamp: now + timeout",
	"headers.ticket":                             "a ticket: a fresh uuid per call",
	"body.ticket":                                "a ticket: a fresh uuid per call",
	"properties.delivery_tag":                    "an id: a fresh uuid per message",
	"body.reply_to.routing_key":                  "an id: the caller's oid, a uuid per mailbox",
	"reply properties.delivery_info.routing_key": "an id: the caller's oid, which replies are routed by",
}

func isIgnored(kind, path string) bool {
	_, all := ignored[path]
	_, one := ignored[kind+" "+path]
	return all || one
}

// known are the differences the suite found and that stay, on purpose:
// each is asserted exactly, so a change on either side fails the test.
// Kombu or Go "<absent>" means the field is missing on that side.
type known struct {
	kind       string // "request" or "reply"
	variant    string // "" for every variant
	op         string // "" for every operation
	path       string
	kombu, gov string
	why        string
}

var knownDiffs = []known{
	{kind: "reply", path: "headers.expires", kombu: absent, gov: "float <ignored>",
		why: "a Go node copies the request's expiry into its reply, so a late reply is dropped by the caller; " +
			"Kombu's collector honours that header too (kombu/pidbox.py _collect), Kombu nodes just never send it"},
	{kind: "request", op: "cast", path: "headers.expires", kombu: "float <ignored>", gov: "int <ignored>",
		why: "Kombu's cast always expires (timeout defaults to 1 s), but Kombu nodes never check a request's expiry; " +
			"a Go cast without a Timeout never expires, so a direct-mailbox node that was away still gets it (Timeout(d) gives now+d, see cast-timeout)"},
	{kind: "reply", op: "unknown-method", path: "body.beta@y.error", kombu: `str "KeyError('nosuch')"`, gov: `str "unknown method \"nosuch\""`,
		why: unknownWhy},
	{kind: "request", op: "cast-no-args", path: "headers.expires", kombu: "float <ignored>", gov: "int <ignored>",
		why: "as for cast"},
}

const absent = "<absent>"

const unknownWhy = "an error reply's text is the node's own: Kombu writes the Python exception's repr, " +
	"a Go node its error's text; both are {\"error\": text}, and no caller parses the text"

// suite holds both fleets and both callers.
type suite struct {
	t       *testing.T
	b       Broker
	tap     Tap
	knodes  *kombuNodes
	kclient *kombuClient
	goRecv  chan Received
	callers map[string]*pidbox.Mailbox // variant name -> Go caller in fleet 0
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
	s := &suite{t: t, b: b, goRecv: make(chan Received, 1024), callers: map[string]*pidbox.Mailbox{}, log: &testlog.Buffer{}}
	tap, err := b.Tap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tap.Close() })
	s.tap = tap

	dir := t.TempDir()
	var specs []NodeSpec
	for _, v := range variants {
		for _, h := range []string{alpha, beta} {
			specs = append(specs, NodeSpec{Namespace: v.ns(), Type: string(v.kind), Serializer: v.nodeSer, Accept: v.nodeAcc, Hostname: h})
		}
	}
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
		s.goRecv <- Received{Node: r.Node.Hostname(), Method: r.Method, Args: []any{"go", "error", err.Error()}}
		return nil, err
	}
	if args == nil {
		args = map[string]any{}
	}
	s.goRecv <- Received{Node: r.Node.Hostname(), Method: r.Method, Args: Describe(args)}
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
	s.goRecv <- Received{Node: r.Node.Hostname(), Method: r.Method, Args: Describe(args)}
	return nil, errors.New("ValueError('bad thing')")
}

// outcome is what one run of an operation did.
type outcome struct {
	frames  []Frame
	recv    []Received
	replies []any // descriptions of {node: value}, sorted
	err     string
}

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
	cmd := ClientCmd{URL: s.b.KombuURL[fleet], Namespace: v.ns(), Type: string(v.kind), Serializer: v.clientSer, Accept: v.clientAcc,
		Method: o.method, Args: args, Destination: o.destination, Pattern: o.pattern, Matcher: o.matcher,
		Reply: o.reply, Limit: o.limit, Timeout: 2}
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
			out.err = err.Error()
		}
		var rs []reply.Reply
		if res != nil {
			rs = res.Replies
		}
		for _, r := range rs {
			var val any
			d := any([]any{"go", "undecodable", ""})
			if err := r.Decode(&val); err == nil {
				d = Describe(val)
			} else {
				d = []any{"go", "undecodable", err.Error()}
			}
			out.replies = append(out.replies, []any{"dict", []any{[]any{[]any{"str", r.Node}, d}}})
		}
	} else {
		if !o.castTimeout {
			opts = opts[1:]
		}
		if err := caller.Cast(ctx, o.method, args, opts...); err != nil {
			out.err = err.Error()
		}
	}
	s.finish(ctx, &out, 0, expectRecv)
	return out
}

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

func (s *suite) recv(fleet int, d time.Duration) (Received, error) {
	if fleet == 0 {
		return s.knodes.recv(d)
	}
	select {
	case r := <-s.goRecv:
		return r, nil
	case <-time.After(d):
		return Received{}, fmt.Errorf("no handler call on a Go node after %s", d)
	}
}

// drainRecv fails on handler calls nobody expected (a message delivered
// twice, or late).
func (s *suite) drainRecv(fleet int) {
	s.t.Helper()
	for {
		r, err := s.recv(fleet, 20*time.Millisecond)
		if err != nil {
			return
		}
		s.t.Errorf("unexpected handler call: %+v", r)
	}
}

func (s *suite) envelopes(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			for _, o := range ops {
				t.Run(o.name, func(t *testing.T) {
					s.t = t
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					kk := s.viaKombu(ctx, v, 0, o, len(o.runs))
					gk := s.viaGo(ctx, v, o, len(o.runs))
					kg := s.viaKombu(ctx, v, 1, o, len(o.runs))
					for _, run := range []struct {
						name string
						o    outcome
					}{{"kombu->kombu", kk}, {"go->kombu", gk}, {"kombu->go", kg}} {
						if run.o.err != "" {
							t.Errorf("%s: the caller failed: %s", run.name, run.o.err)
						}
					}
					if len(kk.of("request", v.ns())) == 0 {
						t.Fatalf("kombu->kombu: no request seen on the broker")
					}
					s.compareFrames(t, v, o, "request", kk.of("request", v.ns()), gk.of("request", v.ns()))
					s.compareFrames(t, v, o, "reply", kk.of("reply", v.ns()), kg.of("reply", v.ns()))
					compareRecv(t, "go->kombu", kk.recv, gk.recv)
					compareRecv(t, "kombu->go", kk.recv, kg.recv)
					compareReplies(t, "go->kombu (what the Go caller read)", kk.replies, gk.replies)
					if o.goReplies != "" {
						if got := showAll(kg.replies); got != o.goReplies {
							t.Errorf("kombu->go (what Kombu's caller read): %s; the known difference (%s) is %s", got, o.why, o.goReplies)
						}
					} else {
						compareReplies(t, "kombu->go (what Kombu's caller read)", kk.replies, kg.replies)
					}
				})
			}
		})
	}
}

func compareRecv(t *testing.T, run string, want, got []Received) {
	t.Helper()
	if len(want) != len(got) {
		t.Errorf("%s: %d handler calls, kombu->kombu %d:\n got %v\nwant %v", run, len(got), len(want), got, want)
		return
	}
	for i := range want {
		if want[i].Node != got[i].Node || want[i].Method != got[i].Method || !Same(want[i].Args, got[i].Args) {
			t.Errorf("%s: handler on %s received %s(%s); kombu->kombu: %s(%s) on %s", run,
				got[i].Node, got[i].Method, Show(got[i].Args), want[i].Method, Show(want[i].Args), want[i].Node)
		}
	}
}

func compareReplies(t *testing.T, run string, want, got []any) {
	t.Helper()
	if len(want) != len(got) {
		t.Errorf("%s: %d replies, kombu->kombu %d:\n got %s\nwant %s", run, len(got), len(want), showAll(got), showAll(want))
		return
	}
	for i := range want {
		if !Same(want[i], got[i]) {
			t.Errorf("%s: reply %s; kombu->kombu: %s", run, Show(got[i]), Show(want[i]))
		}
	}
}

func showAll(ds []any) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, Show(d))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// reduced is a frame's fields with ignored values replaced by their kind.
func reduced(kind string, f Frame) map[string]string {
	out := make(map[string]string, len(f.Fields)+1)
	for p, v := range f.Fields {
		if isIgnored(kind, p) {
			kind, _, _ := strings.Cut(v, " ")
			v = kind + " <ignored>"
		}
		out[p] = v
	}
	out["(route)"] = f.Route
	return out
}

func text(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s=%s\n", k, m[k])
	}
	return sb.String()
}

// compareFrames compares the messages Kombu and Go put on the broker for
// one operation, field by field.
func (s *suite) compareFrames(t *testing.T, v variant, o op, kind string, kombu, goside []Frame) {
	t.Helper()
	k := make([]map[string]string, len(kombu))
	g := make([]map[string]string, len(goside))
	for i, f := range kombu {
		k[i] = reduced(kind, f)
	}
	for i, f := range goside {
		g[i] = reduced(kind, f)
	}
	order := func(ms []map[string]string) {
		sort.Slice(ms, func(i, j int) bool { return text(ms[i]) < text(ms[j]) })
	}
	order(k)
	order(g)
	if len(k) != len(g) {
		t.Errorf("%s: kombu put %d messages on the broker, go %d\nkombu:\n%s\ngo:\n%s", kind, len(k), len(g), texts(k), texts(g))
		return
	}
	for i := range k {
		for _, d := range diff(kind, v, o, k[i], g[i]) {
			t.Errorf("%s: %s", kind, d)
		}
	}
}

func texts(ms []map[string]string) string {
	var sb strings.Builder
	for _, m := range ms {
		sb.WriteString(text(m))
		sb.WriteString("--\n")
	}
	return sb.String()
}

// diff lists the fields where two messages differ, beyond the known
// differences, which it checks exactly.
func diff(kind string, v variant, o op, k, g map[string]string) []string {
	var out []string
	paths := map[string]bool{}
	for p := range k {
		paths[p] = true
	}
	for p := range g {
		paths[p] = true
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)
	for _, p := range sorted {
		kv, ok := k[p]
		if !ok {
			kv = absent
		}
		gv, ok := g[p]
		if !ok {
			gv = absent
		}
		if i := slices.IndexFunc(knownDiffs, func(d known) bool {
			return d.kind == kind && d.path == p && (d.variant == "" || d.variant == v.name) && (d.op == "" || d.op == o.name)
		}); i >= 0 {
			d := knownDiffs[i]
			if kv != d.kombu || gv != d.gov {
				out = append(out, fmt.Sprintf("%s: kombu %s, go %s; the known difference (%s) is kombu %s, go %s", p, kv, gv, d.why, d.kombu, d.gov))
			}
			continue
		}
		if kv != gv {
			out = append(out, fmt.Sprintf("%s: kombu %s, go %s", p, kv, gv))
		}
	}
	return out
}

func (s *suite) values(t *testing.T) {
	t.Skip("value table: next")
}
