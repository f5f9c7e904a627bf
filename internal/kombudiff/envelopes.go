package kombudiff

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// ops are the operations compared envelope by envelope, on every variant.
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
	broker     string // Broker.Name; "" for every broker
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

	// AMQP frames: what a broker with no envelope adds.
	{broker: "rabbitmq", kind: "request", path: "properties.priority", kombu: "int 0", gov: absent, why: priorityWhy},
	{broker: "rabbitmq", kind: "reply", path: "properties.priority", kombu: "int 0", gov: absent, why: priorityWhy},
	{broker: "rabbitmq", kind: "reply", path: "headers.expires:amqp-type", kombu: absent, gov: "float64",
		why: "as for a reply's headers.expires: a double, as py-amqp writes a Python float"},
	{broker: "rabbitmq", kind: "request", op: "cast", path: "headers.expires:amqp-type", kombu: "float64", gov: "int32",
		why: "as for a cast's headers.expires: Kombu's float timestamp is a double, pidbox's 0 a 32-bit int, as py-amqp writes the Python int 0"},
	{broker: "rabbitmq", kind: "request", op: "cast-no-args", path: "headers.expires:amqp-type", kombu: "float64", gov: "int32",
		why: "as for cast"},
}

const priorityWhy = "py-amqp sends the priority property even when it is 0; amqp091-go sends no zero property, " +
	"and an absent priority reads as 0 (RabbitMQ, py-amqp and amqp091-go alike); pidbox queues are not priority queues"

const absent = "<absent>"

const unknownWhy = "an error reply's text is the node's own: Kombu writes the Python exception's repr, " +
	"a Go node its error's text; both are {\"error\": text}, and no caller parses the text"

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

func compareRecv(t *testing.T, run string, want, got []received) {
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
		for _, d := range diff(s.b.Name, kind, v, o, k[i], g[i]) {
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
func diff(broker, kind string, v variant, o op, k, g map[string]string) []string {
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
			return d.kind == kind && d.path == p && (d.broker == "" || d.broker == broker) && (d.variant == "" || d.variant == v.name) && (d.op == "" || d.op == o.name)
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
