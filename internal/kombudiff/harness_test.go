package kombudiff

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseMonitor(t *testing.T) {
	db, args, err := parseMonitor(`+1700000000.123456 [2 127.0.0.1:5555] "lpush" "q\x06\x16" "{\"a\": \"\\u00e9\"}\n\xff"`)
	require.NoError(t, err)
	assert.Equal(t, 2, db)
	assert.Equal(t, []string{"lpush", "q\x06\x16", `{"a": "\u00e9"}` + "\n\xff"}, args)

	db, args, err = parseMonitor(`+1700000000.1 [0 lua] "PUBLISH" "/0.celery.pidbox" ""`)
	require.NoError(t, err)
	assert.Equal(t, 0, db)
	assert.Equal(t, []string{"PUBLISH", "/0.celery.pidbox", ""}, args)

	for _, bad := range []string{`+1 [x 1] "a"`, `+1 "a"`, `+1 [0 lua] "unterminated`, `+1 [0 lua] bare`, `+1 [0 lua] "\x4"`} {
		_, _, err := parseMonitor(bad)
		assert.Error(t, err, bad)
	}
}

// Describe and kombu_peer.py's describe must agree; the suite checks that
// against Python, here the Go side's own rules.
func TestDescribe(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{int8(-3), `["int","-3"]`},
		{uint64(math.MaxUint64), `["int","18446744073709551615"]`},
		{3.0, `["float","4008000000000000"]`},
		{math.NaN(), `["float","nan"]`},
		{[]byte{0, 255}, `["bytes","00ff"]`},
		{map[string]any{"b": nil, "a": true}, `["dict",[[["str","a"],["bool",true]],[["str","b"],["null"]]]]`},
		{map[any]any{int64(2): "x", "1": "y"}, `["dict",[[["int","2"],["str","x"]],[["str","1"],["str","y"]]]]`},
		{[]any{}, `["list",[]]`},
		{struct{}{}, `["go","struct {}","{}"]`},
	} {
		assert.Equal(t, c.want, Canon(Describe(c.v)), "%#v", c.v)
	}
	out := map[string]string{}
	Flatten("body", Describe(map[string]any{"l": []any{int64(1), 2.5}, "s": "x"}), out)
	assert.Equal(t, map[string]string{"body": "dict", "body.l": "list 2", "body.l[0]": "int 1", "body.l[1]": "float 2.5", "body.s": `str "x"`}, out)
}
