package wire_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A request exactly as Kombu 5.2 put it on Redis (see docs on the wire).
const kombuRequest = `{"body": "eyJtZXRob2QiOiAicGluZyIsICJhcmd1bWVudHMiOiB7fSwgImRlc3RpbmF0aW9uIjogbnVsbCwgInBhdHRlcm4iOiBudWxsLCAibWF0Y2hlciI6IG51bGwsICJ0aWNrZXQiOiAiMWE0YjU3ZjQtZGY0My00ZTQ0LWFjZTEtYzQxNDQyMDVkOGQ5IiwgInJlcGx5X3RvIjogeyJleGNoYW5nZSI6ICJyZXBseS5jZWxlcnkucGlkYm94IiwgInJvdXRpbmdfa2V5IjogImE5ZDU5YmYzLTJhYjktMzFkNS1iZmQ4LTU0ODg3NmY4OWNhMSJ9fQ==", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"clock": 1, "expires": 1795446884.7034414}, "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""}, "priority": 0, "body_encoding": "base64", "delivery_tag": "0c53a0a4-6f2a-4b8e-a0b4-6b1b0f0b4c41"}}`

func TestDecodeKombuRequest(t *testing.T) {
	e, err := wire.Decode([]byte(kombuRequest), 0)
	require.NoError(t, err)
	assert.Equal(t, "application/json", e.ContentType)
	assert.Equal(t, uint64(1), e.Headers.Clock)
	assert.InDelta(t, 1795446884.7034414, e.Headers.Expires, 1e-6)
	assert.Equal(t, "celery.pidbox", e.Properties.Exchange)
	assert.Equal(t, 2, e.Properties.DeliveryMode)

	c, err := wire.CodecFor(e.ContentType, []string{"json"})
	require.NoError(t, err)
	r, err := wire.DecodeRequest(c, e.Body)
	require.NoError(t, err)
	assert.Equal(t, "ping", r.Method)
	assert.Nil(t, r.Destination)
	assert.Empty(t, r.Pattern)
	assert.Equal(t, "1a4b57f4-df43-4e44-ace1-c4144205d8d9", r.Ticket)
	require.NotNil(t, r.ReplyTo)
	assert.Equal(t, wire.ReplyTo{Exchange: "reply.celery.pidbox", RoutingKey: "a9d59bf3-2ab9-31d5-bfd8-548876f89ca1"}, *r.ReplyTo)
	assert.JSONEq(t, `{}`, string(r.Arguments))
}

func TestEnvelopeRoundTrip(t *testing.T) {
	in := &wire.Envelope{
		Body:            []byte("\x00\xffbinary \"body\"\n"),
		ContentType:     "application/x-msgpack",
		ContentEncoding: "binary",
		Headers:         wire.Headers{Clock: 1 << 60, Expires: 1795446884.75, Ticket: "t\"\\\x01é\xff"},
		Properties:      wire.Properties{DeliveryMode: wire.Transient, Exchange: "reply.x.pidbox", RoutingKey: "oid"},
	}
	data := wire.Encode(in)
	require.True(t, json.Valid(data), "encoder must write valid JSON: %s", data)

	// encoding/json agrees on every field.
	var generic map[string]any
	require.NoError(t, json.Unmarshal(data, &generic))
	assert.Equal(t, base64.StdEncoding.EncodeToString(in.Body), generic["body"])
	props := generic["properties"].(map[string]any)
	assert.Equal(t, "base64", props["body_encoding"])
	assert.Len(t, props["delivery_tag"], 36, "a fresh uuid")

	out, err := wire.Decode(data, 0)
	require.NoError(t, err)
	assert.Equal(t, in.Body, out.Body)
	assert.Equal(t, in.Headers.Clock, out.Headers.Clock)
	assert.Equal(t, in.Headers.Expires, out.Headers.Expires)
	assert.Equal(t, "t\"\\\x01é\ufffd", out.Headers.Ticket, "invalid UTF-8 is replaced, the rest kept")
	assert.Equal(t, in.Properties.Exchange, out.Properties.Exchange)
	assert.Equal(t, in.Properties.RoutingKey, out.Properties.RoutingKey)
	assert.Equal(t, wire.Transient, out.Properties.DeliveryMode)

	// Two encodings get different delivery tags.
	out2, err := wire.Decode(wire.Encode(in), 0)
	require.NoError(t, err)
	assert.NotEqual(t, out.Properties.DeliveryTag, out2.Properties.DeliveryTag)
}

func TestAppendEncodeReusesBuffer(t *testing.T) {
	e := &wire.Envelope{Body: []byte("{}"), ContentType: "application/json", Properties: wire.Properties{DeliveryTag: "x"}}
	buf := make([]byte, 0, 1024)
	out := wire.AppendEncode(buf, e)
	assert.Equal(t, &buf[:1][0], &out[:1][0], "no reallocation when the buffer is big enough")
	assert.Equal(t, 0.0, testing.AllocsPerRun(100, func() { wire.AppendEncode(buf[:0], e) }))
}

// DecodeInto reuses the envelope's body memory when it has room, and
// overwrites every field of what it held before.
func TestDecodeIntoReusesBody(t *testing.T) {
	big := wire.Encode(&wire.Envelope{Body: bytes.Repeat([]byte("x"), 600), ContentType: "application/json",
		Headers: wire.Headers{Ticket: "t1", Extra: []wire.Header{{Key: "traceparent", Value: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}})
	small := wire.Encode(&wire.Envelope{Body: []byte("{}"), ContentType: "application/json"})
	e := &wire.Envelope{}
	require.NoError(t, wire.DecodeInto(big, 0, e))
	mem := &e.Body[0]
	require.NoError(t, wire.DecodeInto(small, 0, e))
	assert.Equal(t, mem, &e.Body[0], "the body is decoded into the memory of the last one")
	want, err := wire.Decode(small, 0)
	require.NoError(t, err)
	assert.Equal(t, want, e, "nothing of the last envelope is left")
	decode := testing.AllocsPerRun(100, func() { _, _ = wire.Decode(big, 0) })
	into := testing.AllocsPerRun(100, func() { _ = wire.DecodeInto(big, 0, e) })
	assert.Less(t, into, decode-1, "neither the envelope nor its body is made anew")
	assert.ErrorIs(t, wire.DecodeInto(big, 10, e), wire.ErrTooLarge)
}

func TestDecodeErrors(t *testing.T) {
	valid := string(wire.Encode(&wire.Envelope{Body: []byte("{}"), ContentType: "application/json"}))
	cases := []struct {
		name, in string
		want     error
		text     string
	}{
		{"not json", "garbage\x00", wire.ErrMalformed, "not a JSON object"},
		{"json array", `[1,2]`, wire.ErrMalformed, "not a JSON object"},
		{"no body", `{"headers": {}}`, wire.ErrMalformed, "no body"},
		{"bad base64", `{"body": "!!!", "properties": {"body_encoding": "base64"}}`, wire.ErrMalformed, "base64"},
		{"bad clock", `{"body": "", "headers": {"clock": "abc"}}`, wire.ErrMalformed, "clock"},
		{"negative clock", `{"body": "", "headers": {"clock": -4}}`, wire.ErrMalformed, "clock"},
		{"bad expires", `{"body": "", "headers": {"expires": "soon"}}`, wire.ErrMalformed, ""},
		{"bad priority", `{"body": "", "properties": {"priority": 1.5}}`, wire.ErrMalformed, "priority"},
		{"unknown body encoding", `{"body": "x", "properties": {"body_encoding": "rot13"}}`, wire.ErrUnsupported, "rot13"},
		{"too large", valid + strings.Repeat(" ", 100), wire.ErrTooLarge, "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := wire.Decode([]byte(tc.in), len(valid))
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.text)
		})
	}
	// A float clock with a whole value is accepted, and a body without
	// body_encoding is taken as it is.
	e, err := wire.Decode([]byte(`{"body": "{}", "headers": {"clock": 7.0}}`), 0)
	require.NoError(t, err)
	assert.Equal(t, uint64(7), e.Headers.Clock)
	assert.Equal(t, "{}", string(e.Body))
}

func TestHeadersExpiry(t *testing.T) {
	now := time.Now()
	h := wire.Headers{Expires: wire.ExpiresAt(now.Add(time.Second))}
	assert.False(t, h.Expired(now))
	assert.True(t, h.Expired(now.Add(2*time.Second)))
	d, ok := h.Deadline()
	require.True(t, ok)
	assert.WithinDuration(t, now.Add(time.Second), d, time.Millisecond)

	never := wire.Headers{}
	assert.False(t, never.Expired(now.Add(1000*time.Hour)))
	_, ok = never.Deadline()
	assert.False(t, ok)
	assert.Equal(t, 0.0, wire.ExpiresAt(time.Time{}))
}

func TestCodecLookup(t *testing.T) {
	c, err := wire.CodecNamed("msgpack")
	require.NoError(t, err)
	assert.Equal(t, "application/x-msgpack", c.ContentType())
	_, err = wire.CodecNamed("pickle")
	assert.ErrorIs(t, err, wire.ErrUnsupported)

	_, err = wire.CodecFor("application/x-msgpack", []string{"json"})
	assert.ErrorIs(t, err, wire.ErrUnsupported, "known but not accepted")
	_, err = wire.CodecFor("application/x-python-serialize", []string{"json", "pickle"})
	assert.ErrorIs(t, err, wire.ErrUnsupported, "pickle is never decoded")
	c, err = wire.CodecFor("application/json", []string{"application/json"})
	require.NoError(t, err)
	assert.Equal(t, "json", c.Name())
}

type args struct {
	Level string `json:"level"`
	N     int    `json:"n"`
}

func TestRequestRoundTrip(t *testing.T) {
	for _, c := range wire.Codecs() {
		t.Run(c.Name(), func(t *testing.T) {
			a, err := c.Marshal(args{Level: "debug", N: 3})
			require.NoError(t, err)
			in := &wire.Request{
				Method: "set_level", Arguments: a, Destination: []string{"a@h", "b@h"},
				Pattern: "w*", Matcher: wire.MatchGlob, Ticket: "t1",
				ReplyTo: &wire.ReplyTo{Exchange: "reply.celery.pidbox", RoutingKey: "oid"},
			}
			data, err := wire.EncodeRequest(c, in)
			require.NoError(t, err)
			out, err := wire.DecodeRequest(c, data)
			require.NoError(t, err)
			assert.Equal(t, in.Method, out.Method)
			assert.Equal(t, in.Destination, out.Destination)
			assert.Equal(t, in.Pattern, out.Pattern)
			assert.Equal(t, in.Matcher, out.Matcher)
			assert.Equal(t, in.Ticket, out.Ticket)
			assert.Equal(t, in.ReplyTo, out.ReplyTo)
			var got args
			require.NoError(t, c.Unmarshal(out.Arguments, &got))
			assert.Equal(t, args{Level: "debug", N: 3}, got)

			// A cast: no ticket, no reply_to, nulls for the rest, {} arguments.
			data, err = wire.EncodeRequest(c, &wire.Request{Method: "ping"})
			require.NoError(t, err)
			var generic map[string]any
			require.NoError(t, c.Unmarshal(data, &generic))
			assert.Equal(t, map[string]any{"method": "ping", "arguments": map[string]any{}, "destination": nil, "pattern": nil, "matcher": nil}, generic)
		})
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	c := wire.JSON{}
	for name, in := range map[string]string{
		"not an object":          `"ping"`,
		"destination not a list": `{"method": "ping", "destination": "a@h"}`,
		"method not a string":    `{"method": 42}`,
		"no method":              `{"arguments": {}}`,
		"reply without ticket":   `{"method": "ping", "reply_to": {"exchange": "x", "routing_key": "y"}}`,
		"truncated":              `{"method": "pi`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := wire.DecodeRequest(c, []byte(in))
			assert.ErrorIs(t, err, wire.ErrMalformed)
		})
	}
	_, err := wire.DecodeRequest(wire.Msgpack{}, []byte{0xa3, 'a', 'b', 'c'})
	assert.ErrorIs(t, err, wire.ErrMalformed)
}

func TestReplies(t *testing.T) {
	for _, c := range wire.Codecs() {
		t.Run(c.Name(), func(t *testing.T) {
			data, err := wire.EncodeReply(c, "w1@h", map[string]string{"ok": "pong"})
			require.NoError(t, err)
			node, val, err := wire.DecodeReply(c, data)
			require.NoError(t, err)
			assert.Equal(t, "w1@h", node)
			_, isErr := wire.ReplyError(c, val)
			assert.False(t, isErr)

			data, err = wire.EncodeReply(c, "w1@h", wire.ErrorValue{Error: "KeyError('nosuch')"})
			require.NoError(t, err)
			_, val, err = wire.DecodeReply(c, data)
			require.NoError(t, err)
			text, isErr := wire.ReplyError(c, val)
			assert.True(t, isErr)
			assert.Equal(t, "KeyError('nosuch')", text)

			// A value that merely mentions "error" is not an error reply.
			data, err = wire.EncodeReply(c, "w1@h", map[string]any{"error": "x", "other": 1})
			require.NoError(t, err)
			_, val, err = wire.DecodeReply(c, data)
			require.NoError(t, err)
			_, isErr = wire.ReplyError(c, val)
			assert.False(t, isErr)

			two, err := c.Marshal(map[string]int{"a": 1, "b": 2})
			require.NoError(t, err)
			_, _, err = wire.DecodeReply(c, two)
			assert.ErrorIs(t, err, wire.ErrMalformed)
		})
	}
}

// trickyEnvelopes are inputs where a hand-written JSON decoder is easy to
// get wrong. They also seed FuzzDecode.
var trickyEnvelopes = []string{
	kombuRequest,
	`{"BODY": "e30=", "Properties": {"BODY_ENCODING": "base64"}}`,
	`{"body": "e30=", "properties": {"body_encoding": "base64"}, "body": null}`,
	`{"body": "x", "body": "e30=", "properties": {"body_encoding": "base64"}}`,
	`{"body": "\u0065\u0033\u0030\u003d", "properties": {"body_encoding": "base64"}}`,
	`{"body": "e3\n0=", "properties": {"body_encoding": "base64"}}`,
	`{"body": "ab\ud83d\ude00\ud800x\udc00", "headers": {"ticket": "\ud83d"}}`,
	"{\"body\": \"\xff\xfe\", \"headers\": {\"ticket\": \"a\xc3\"}}",
	"{\"body\": \"\", \"headers\": {\"cloc\u212a\": 5, \"tic\u212aet\": \"k\"}}",
	"{\"body\": \"\", \"\u017fomething\": 1, \"headers\": {\"expire\u017f\": 2.5}}",
	`{"body": "", "x": [1, {"y": [true, false, null, "s", -0.5e+3]}], "headers": {"z": {}}}`,
	`{"body": "", "headers": null, "properties": null}`,
	`{"body": "", "headers": {"clock": 1}, "headers": {"ticket": "t"}}`,
	`{"body": "", "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "k=v"}}`,
	`{"body": "", "headers": {"traceparent": "a", "x": 1}, "headers": {"tracestate": "b", "y": null}}`,
	`{"body": "", "headers": {"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7", "h": "8", "i": "9", "a": "10"}}`,
	`{"body": "", "headers": {"Compression": "zlib", "COMPRESSION": "x", "traceparent": "A", "k": "é", "": "x", "z": ""}}`,
	"{\"body\": \"\", \"headers\": {\"\xff\": \"x\", \"v\": \"\xff\", \"c\u212aock\": \"1\"}}",
	`{"body": "", "headers": {"clock": "1"}}`,
	`{"body": "", "headers": {"clock": -0}}`,
	`{"body": "", "headers": {"clock": 1.5}}`,
	`{"body": "", "headers": {"expires": 1e400}}`,
	`{"body": "", "properties": {"delivery_info": null, "priority": null}}`,
	`{"body": "", "properties": {"delivery_info": []}}`,
	`{"body": 5}`,
	`{"body": ""} x`,
	`{"body": ""}   `,
	`{"body": "",}`,
	`{"body" "x"}`,
	`{"body": "\x"}`,
	"{\"body\": \"a\tb\"}",
	`{"body": "", "n": 01}`,
	`{"body": "", "n": 1.}`,
	`{"body": "", "n": tru}`,
	`null`,
	`[]`,
	``,
	`{`,
	`{"body": "", "deep": ` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`,
}

// The fast decoder agrees with the encoding/json reference on each tricky
// input.
func TestDecodeAgreesWithReference(t *testing.T) {
	for _, in := range trickyEnvelopes {
		e, err := wire.Decode([]byte(in), 0)
		ref, refErr := wire.ReferenceDecode([]byte(in))
		require.Equal(t, refErr == nil, err == nil, "%q: fast %v, reference %v", in, err, refErr)
		if err == nil {
			assert.Equal(t, ref, e, "%q", in)
		}
	}
}

// trickyRequests and trickyReplies seed the payload fuzz targets and are
// checked against the encoding/json reference in every test run.
var trickyRequests = []string{
	`{"method": "ping", "arguments": {}, "destination": null, "pattern": null, "matcher": null}`,
	`{"METHOD": "ping", "Arguments": { "a" : [1, {"b": null}] }, "Destination": ["a", null, "b"]}`,
	`{"method": "ping", "arguments": null}`,
	`{"method": "ping", "arguments": "str"}`,
	`{"method": "ping", "destination": []}`,
	`{"method": "ping", "destination": ["a"], "destination": null}`,
	`{"method": "ping", "destination": "a"}`,
	`{"method": "ping", "destination": [1]}`,
	`{"method": "ping", "ticket": "t", "reply_to": {"exchange": "x", "Routing_Key": "k", "extra": [1]}}`,
	`{"method": "ping", "reply_to": {"exchange": "x"}, "reply_to": {"routing_key": "k"}}`,
	`{"method": "ping", "reply_to": {"exchange": "x"}, "reply_to": null}`,
	`{"method": "ping", "reply_to": []}`,
	`{"method": "p\u0069ng", "pattern": "w\ud800*"}`,
	"{\"method\": \"ping\", \"tic\u212aet\": \"t\"}",
	`{"method": 5}`,
	`{"method": "ping"} {}`,
	`null`,
	`[]`,
}

var trickyReplies = []string{
	`{"w@h": {"ok": "pong"}}`,
	`{"w@h": 1, "w@h": 2}`,
	`{"a": 1, "b": 2}`,
	`{"a": 1, "b": 2, "a": 3}`,
	`{"W@H": 1, "w@h": 2}`,
	`{"w\u0040h": null}`,
	`{}`,
	`null`,
	`{"w@h": {"error": "KeyError('x')"}}`,
	`{"w@h": [1, 2]} x`,
	// Python's json writes float('nan') and float('inf') as bare tokens.
	`{"w@h": {"a": Infinity, "b": -Infinity, "c": [NaN, 1.5]}}`,
	`{"w@h": NaN}`,
	`{"w@h":-Infinity}`,
	`{"w@h": "NaN Infinity"}`,
	`{"w@h": [1NaN]}`,
	`{"w@h": [NaN1]}`,
	`{"w@h": -NaN}`,
	`{"w@h": [Infinity-]}`,
	`{"w@h": nan}`,
	`{"w@h": inf}`,
	`{"w@h": Infinit}`,
	`{"w@h": [NaNNaN]}`,
	`{NaN: 1}`,
	`NaN`,
	`{"w@h": {"Infinity": Infinity}}`,
}

func TestPayloadDecodersAgreeWithReference(t *testing.T) {
	for _, in := range trickyRequests {
		fast, err := wire.DecodeRequestJSON([]byte(in))
		ref, refErr := wire.ReferenceDecodeRequestJSON([]byte(in))
		require.Equal(t, refErr == nil, err == nil, "%q: fast %v, reference %v", in, err, refErr)
		if err == nil {
			assert.Equal(t, ref, fast, "%q", in)
		}
	}
	for _, in := range trickyReplies {
		node, value, err := wire.DecodeReply(wire.JSON{}, []byte(in))
		refNode, refValue, refErr := wire.ReferenceDecodeReplyJSON([]byte(in))
		require.Equal(t, refErr == nil, err == nil, "%q: fast %v, reference %v", in, err, refErr)
		assert.Equal(t, refNode, node, "%q", in)
		assert.Equal(t, string(refValue), string(value), "%q", in)
	}
}

func TestEncodedLenBoundsEncode(t *testing.T) {
	for _, e := range []*wire.Envelope{
		{},
		{Body: []byte("x"), ContentType: "application/json", ContentEncoding: "utf-8",
			Headers:    wire.Headers{Clock: 1<<64 - 1, Expires: 1.7976931348623157e308, Ticket: wire.NewID()},
			Properties: wire.Properties{DeliveryMode: -1 << 31, Priority: -1 << 31, Exchange: "reply.celery.pidbox", RoutingKey: wire.NewID()}},
		{ContentType: "\x00\x01\xff\xfe\"\\", Headers: wire.Headers{Ticket: strings.Repeat("\x00", 100)}, Body: make([]byte, 1000)},
	} {
		assert.LessOrEqual(t, len(wire.Encode(e)), wire.EncodedLen(e))
	}
}
