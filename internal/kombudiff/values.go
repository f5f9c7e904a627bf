package kombudiff

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
)

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
	jsonFloatWhy = "encoding/json writes a whole float64 as an integer (3.0 as 3), so Python reads an int; " +
		"pidbox writes floats in any, maps and lists as Python does (3.0), but a struct's float64 field encoding/json's way; " +
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
	{name: "float 3.0", goVal: 3.0, py: "3.0"},
	{name: "float -0.0", goVal: math.Copysign(0, -1), py: "-0.0"},
	{name: "float 0.1", goVal: 0.1, py: "0.1"},
	{name: "float -2.5e-300", goVal: -2.5e-300, py: "-2.5e-300"},
	{name: "float 1e300", goVal: 1e300, py: "1e300"},
	{name: "float 2^53", goVal: float64(1 << 53), py: "float(2**53)"},
	{name: "float 1e20", goVal: 1e20, py: "1e20"},
	{name: "float in a struct field", goVal: struct {
		F float64 `json:"f"`
		G float64 `json:"g"`
	}{3.0, 0.5}, py: "{'f': 3.0, 'g': 0.5}", limits: map[string]limit{
		"json": {why: jsonFloatWhy, gkRecv: `{"v": {"f": 3, "g": 0.5}}`, gkSeen: `[{"alpha@x": {"v": {"f": 3, "g": 0.5}}}]`},
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
func checkRecv(t *testing.T, run string, got []received, base any, want string) {
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
