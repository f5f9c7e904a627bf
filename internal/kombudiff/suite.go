package kombudiff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os/exec"
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
	timeout     float64  // Kombu's caller's timeout in seconds; default 2
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
	s := &suite{t: t, b: b, goRecv: make(chan Received, 1024), callers: map[string]*pidbox.Mailbox{}, goNodes: map[string][]*pidbox.Node{}, log: &testlog.Buffer{}}
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
	// Celery's namespace, for `celery control`: a node that records any command.
	specs = append(specs, NodeSpec{Namespace: "celery", Type: "fanout", Serializer: "json", Accept: jsonOnly, Hostname: alpha, AnyMethod: true})
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
	frames   []Frame
	recv     []Received
	replies  []any // descriptions of {node: value}, sorted
	err      string
	errValue error // the Go caller's error
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
			out.err, out.errValue = err.Error(), err
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
	if d <= 0 {
		select {
		case r := <-s.goRecv:
			return r, nil
		default:
			return Received{}, errors.New("no handler call on a Go node")
		}
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
		r, err := s.recv(fleet, 0)
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

// valueRow is one value sent Kombu->Go and Go->Kombu, compared with
// Kombu->Kombu.
type valueRow struct {
	name   string
	goVal  any    // the value as a Go program holds it
	py     string // the value as Python writes it
	limits map[string]limit
}

// limit is what happens instead of Kombu->Kombu's behaviour when a
// serializer cannot carry a value the way Kombu does. Every field that is
// set is asserted; an empty one means "as Kombu->Kombu".
type limit struct {
	why string
	// kombuErr: Kombu's own caller cannot send the value (so there is no
	// baseline); its error contains this text.
	kombuErr string
	// goErr: the Go caller refuses the value before publishing anything;
	// its error contains this text.
	goErr string
	// What Kombu's node received from the Go caller, and what the Go
	// caller read back from it, as Show prints them.
	gkRecv, gkSeen string
	// What Go's node received from Kombu's caller, and what Kombu's caller
	// read back from it; "-" for nothing.
	kgRecv, kgSeen string
}

const (
	jsonFloatWhy = "encoding/json writes a whole float64 as an integer (3.0 as 3, -0.0 as -0), so Python reads an int; " +
		"msgpack keeps floats apart"
	jsonNonFiniteWhy = "JSON has no NaN or Infinity: Python's json writes and reads them anyway, " +
		"the Go caller refuses them before publishing, and a Go node drops a message holding them as malformed"
	jsonBytesWhy = "JSON has no bytes: Kombu refuses to send them, Go writes []byte as base64 text (encoding/json's rule), " +
		"which Python reads as str"
	invalidUTF8Why = "a Python str is always text, so Kombu has no such value; Go's encoding/json replaces the bad byte with U+FFFD, " +
		"and the Go msgpack caller refuses the string before publishing, since Python's msgpack would refuse the whole message"
	msgpackBigWhy = "msgpack integers stop at 64 bits: Python's msgpack refuses a larger one, and so does the Go caller, " +
		"before publishing (json carries it: Go keeps it as a json.Number)"
)

var valueRows = []valueRow{
	{name: "int small", goVal: int64(7), py: "7"},
	{name: "int zero", goVal: int64(0), py: "0"},
	{name: "int negative", goVal: int64(-42), py: "-42"},
	{name: "int 200", goVal: int64(200), py: "200"},
	{name: "int 2^31", goVal: int64(1) << 31, py: "2**31"},
	{name: "int 2^53+1", goVal: int64(1)<<53 + 1, py: "2**53+1"},
	{name: "int 2^63-1", goVal: int64(math.MaxInt64), py: "2**63-1"},
	{name: "int -2^63", goVal: int64(math.MinInt64), py: "-2**63"},
	{name: "int 2^64-1", goVal: uint64(math.MaxUint64), py: "2**64-1"},
	{name: "int 2^100", goVal: json.Number("1267650600228229401496703205376"), py: "2**100", limits: map[string]limit{
		"msgpack": {why: msgpackBigWhy, kombuErr: "Integer value out of range", goErr: "does not fit msgpack's 64 bits"},
	}},
	{name: "float 3.0", goVal: 3.0, py: "3.0", limits: map[string]limit{
		"json": {why: jsonFloatWhy, gkRecv: `{"v": 3}`, gkSeen: `[{"alpha@x": {"v": 3}}]`, kgSeen: `[{"alpha@x": {"v": 3}}]`},
	}},
	{name: "float -0.0", goVal: math.Copysign(0, -1), py: "-0.0", limits: map[string]limit{
		"json": {why: jsonFloatWhy, gkRecv: `{"v": 0}`, gkSeen: `[{"alpha@x": {"v": 0}}]`, kgSeen: `[{"alpha@x": {"v": 0}}]`},
	}},
	{name: "float 0.1", goVal: 0.1, py: "0.1"},
	{name: "float -2.5e-300", goVal: -2.5e-300, py: "-2.5e-300"},
	{name: "float 1e300", goVal: 1e300, py: "1e300"},
	{name: "float 2^53", goVal: float64(1 << 53), py: "float(2**53)", limits: map[string]limit{
		"json": {why: jsonFloatWhy, gkRecv: `{"v": 9007199254740992}`, gkSeen: `[{"alpha@x": {"v": 9007199254740992}}]`,
			kgSeen: `[{"alpha@x": {"v": 9007199254740992}}]`},
	}},
	{name: "float inf", goVal: math.Inf(1), py: "float('inf')", limits: map[string]limit{
		"json": {why: jsonNonFiniteWhy, goErr: "unsupported value", kgRecv: "-", kgSeen: "-"},
	}},
	{name: "float nan", goVal: math.NaN(), py: "float('nan')", limits: map[string]limit{
		"json": {why: jsonNonFiniteWhy, goErr: "unsupported value", kgRecv: "-", kgSeen: "-"},
	}},
	{name: "str invalid UTF-8", goVal: "a\xffb", limits: map[string]limit{
		"json":    {why: invalidUTF8Why, gkRecv: `{"v": "a�b"}`, gkSeen: `[{"alpha@x": {"v": "a�b"}}]`},
		"msgpack": {why: invalidUTF8Why, goErr: "not valid UTF-8"},
	}},
	{name: "bool true", goVal: true, py: "True"},
	{name: "bool false", goVal: false, py: "False"},
	{name: "null", goVal: nil, py: "None"},
	{name: "str non-ASCII", goVal: "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c \U0001f389", py: "'h\\u00e9llo w\\u00f6rld \\u2713 \\u65e5\\u672c \\U0001f389'"},
	{name: "str NUL", goVal: "a\x00b\x00", py: "'a\\x00b\\x00'"},
	{name: "str empty", goVal: "", py: "''"},
	{name: "bytes", goVal: []byte{0, 1, 0xff}, py: "b'\\x00\\x01\\xff'", limits: map[string]limit{
		"json": {why: jsonBytesWhy, kombuErr: "is not JSON serializable", gkRecv: `{"v": "AAH/"}`, gkSeen: `[{"alpha@x": {"v": "AAH/"}}]`},
	}},
	{name: "bin beside str", goVal: map[string]any{"s": "abc", "b": []byte("abc")}, py: "{'s': 'abc', 'b': b'abc'}", limits: map[string]limit{
		"json": {why: jsonBytesWhy, kombuErr: "is not JSON serializable",
			gkRecv: `{"v": {"b": "YWJj", "s": "abc"}}`, gkSeen: `[{"alpha@x": {"v": {"b": "YWJj", "s": "abc"}}}]`},
	}},
	{name: "nested", goVal: map[string]any{
		"l": []any{int64(1), "two", []any{3.5, nil}, map[string]any{"k": []any{}}},
		"m": map[string]any{"a": map[string]any{"b": int64(-1), "c": uint64(math.MaxUint64)}},
	}, py: "{'l': [1, 'two', [3.5, None], {'k': []}], 'm': {'a': {'b': -1, 'c': 2**64-1}}}"},
	{name: "list empty", goVal: []any{}, py: "[]"},
	{name: "map empty", goVal: map[string]any{}, py: "{}"},
}

func (s *suite) values(t *testing.T) {
	for _, v := range variants {
		if !v.valueTable {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			for _, row := range valueRows {
				t.Run(row.name, func(t *testing.T) {
					s.t = t
					s.value(t, v, row)
				})
			}
		})
	}
}

func (s *suite) value(t *testing.T, v variant, row valueRow) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lim := row.limits[v.clientSer]
	o := op{name: "value", method: "echo", args: map[string]arg{"v": {row.goVal, row.py}},
		destination: []string{alpha}, reply: true, limit: 1, runs: []string{alpha}}
	count := func(none bool) int {
		if none {
			return 0
		}
		return 1
	}
	if row.py == "" { // Python cannot hold the value: Go->Kombu only
		gk := s.viaGo(ctx, v, o, count(lim.goErr != ""))
		s.checkGoToKombu(t, gk, lim, nil, nil)
		return
	}
	kk := s.viaKombu(ctx, v, 0, o, count(lim.kombuErr != ""))
	gk := s.viaGo(ctx, v, o, count(lim.goErr != ""))
	if lim.kgSeen == "-" {
		o.timeout = 0.3 // no reply is coming: don't wait long for it
	}
	kg := s.viaKombu(ctx, v, 1, o, count(lim.kombuErr != "" || lim.kgRecv == "-"))
	if lim.why != "" {
		t.Logf("limit of %s: %s", v.clientSer, lim.why)
	}

	// Kombu->Kombu: the baseline, or Kombu's own refusal.
	var baseRecv any
	var baseSeen []any
	if lim.kombuErr != "" {
		for name, run := range map[string]outcome{"kombu->kombu": kk, "kombu->go": kg} {
			if !strings.Contains(run.err, lim.kombuErr) {
				t.Errorf("%s: Kombu's caller should refuse the value with %q, got error %q", name, lim.kombuErr, run.err)
			}
		}
	} else {
		if kk.err != "" || len(kk.recv) != 1 {
			t.Fatalf("kombu->kombu: error %q, %d handler calls", kk.err, len(kk.recv))
		}
		baseRecv, baseSeen = kk.recv[0].Args, kk.replies
		t.Logf("kombu->kombu: received %s, read back %s", Show(baseRecv), showAll(baseSeen))
	}

	s.checkGoToKombu(t, gk, lim, baseRecv, baseSeen)

	// Kombu->Go.
	if lim.kombuErr == "" {
		if kg.err != "" {
			t.Errorf("kombu->go: Kombu's caller failed: %s", kg.err)
		}
		checkRecv(t, "kombu->go", kg.recv, baseRecv, lim.kgRecv)
		checkSeen(t, "kombu->go (what Kombu's caller read back)", kg.replies, baseSeen, lim.kgSeen)
	}
}

func (s *suite) checkGoToKombu(t *testing.T, gk outcome, lim limit, baseRecv any, baseSeen []any) {
	t.Helper()
	if lim.goErr != "" {
		if !strings.Contains(gk.err, lim.goErr) {
			t.Errorf("go->kombu: the Go caller should refuse the value with %q, got error %q", lim.goErr, gk.err)
		}
		if !errors.Is(gk.errValue, pidbox.ErrBadCall) {
			t.Errorf("go->kombu: the refusal should wrap pidbox.ErrBadCall: %v", gk.errValue)
		}
		if len(gk.frames) != 0 {
			t.Errorf("go->kombu: a refused value still reached the broker: %d messages", len(gk.frames))
		}
	} else {
		if gk.err != "" {
			t.Errorf("go->kombu: the Go caller failed: %s", gk.err)
		}
		checkRecv(t, "go->kombu", gk.recv, baseRecv, lim.gkRecv)
		checkSeen(t, "go->kombu (what the Go caller read back)", gk.replies, baseSeen, lim.gkSeen)
	}
}

// checkRecv compares the handler's arguments with Kombu->Kombu's, or with
// the limit's expectation when one is given.
func checkRecv(t *testing.T, run string, got []Received, base any, want string) {
	t.Helper()
	switch {
	case want == "-":
		if len(got) != 0 {
			t.Errorf("%s: the handler ran (%s); expected the message dropped", run, Show(got[0].Args))
		}
	case len(got) != 1:
		t.Errorf("%s: %d handler calls, want 1", run, len(got))
	case want != "":
		if Show(got[0].Args) != want {
			t.Errorf("%s: the handler received %s; the known limit is %s", run, Show(got[0].Args), want)
		}
	case base == nil:
		t.Errorf("%s: no baseline and no expectation", run)
	case !Same(got[0].Args, base):
		t.Errorf("%s: the handler received %s; kombu->kombu: %s", run, Show(got[0].Args), Show(base))
	}
}

func checkSeen(t *testing.T, run string, got []any, base []any, want string) {
	t.Helper()
	switch {
	case want == "-":
		if len(got) != 0 {
			t.Errorf("%s: %s; expected no reply", run, showAll(got))
		}
	case want != "":
		if showAll(got) != want {
			t.Errorf("%s: %s; the known limit is %s", run, showAll(got), want)
		}
	default:
		compareReplies(t, run, base, got)
	}
}

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
			res, err := s.kclient.do(ClientCmd{URL: s.b.KombuURL[fleet], Namespace: bad.ns(), Type: string(bad.kind),
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
		o := op{name: "call", method: "echo", args: small, destination: []string{beta}, reply: true, limit: 1, runs: []string{beta}}
		res := s.viaKombu(ctx, v, fleet, o, 1)
		if res.err != "" || len(res.replies) != 1 {
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
			run := func(name string, args ...string) (Received, []Frame) {
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
