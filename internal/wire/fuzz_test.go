package wire_test

import (
	"bytes"
	"reflect"
	"slices"
	"testing"

	"github.com/gopidbox/pidbox/internal/wire"
)

// Seed corpora live in testdata/fuzz/<Target>; CI runs each target briefly
// (see scripts/test), and `go test -fuzz=<Target> ./wire` runs it longer.

// FuzzDecode: the fast decoder agrees with the encoding/json reference on
// every input, and what decodes survives re-encoding unchanged.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(kombuRequest))
	f.Add(wire.Encode(&wire.Envelope{Body: []byte{0, 1, 2}, ContentType: "application/x-msgpack", Headers: wire.Headers{Clock: 9, Ticket: "t"}}))
	f.Add([]byte(`{"body": "", "headers": {"clock": 1e300}}`))
	for _, in := range trickyEnvelopes {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := wire.Decode(data, 0)
		ref, refErr := wire.ReferenceDecode(data)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("decoders disagree on %q: fast %v, reference %v", data, err, refErr)
		}
		if intoErr := wire.DecodeInto(data, 0, &wire.Envelope{Body: make([]byte, 0, 64)}); (intoErr == nil) != (err == nil) {
			t.Fatalf("DecodeInto and Decode disagree on %q: %v, %v", data, intoErr, err)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(e.Body, ref.Body) || e.ContentType != ref.ContentType || e.ContentEncoding != ref.ContentEncoding ||
			!reflect.DeepEqual(e.Headers, ref.Headers) || e.Properties != ref.Properties || e.IgnoredHeaders != ref.IgnoredHeaders {
			t.Fatalf("decoders disagree on %q:\nfast      %+v\nreference %+v", data, e, ref)
		}
		// DecodeInto an envelope that held another one (with a body
		// larger, then smaller, than this one's) decodes the same.
		for _, prev := range []string{kombuRequest, `{"body": "", "headers": {"x": "y"}, "properties": {"body_encoding": "base64"}}`} {
			into := &wire.Envelope{}
			if err := wire.DecodeInto([]byte(prev), 0, into); err != nil {
				t.Fatalf("DecodeInto(%q): %v", prev, err)
			}
			if err := wire.DecodeInto(data, 0, into); err != nil {
				t.Fatalf("DecodeInto refuses what Decode takes: %v", err)
			}
			if !bytes.Equal(into.Body, e.Body) || (into.Body == nil) != (e.Body == nil) || into.ContentType != e.ContentType || into.ContentEncoding != e.ContentEncoding ||
				!reflect.DeepEqual(into.Headers, e.Headers) || into.Properties != e.Properties || into.IgnoredHeaders != e.IgnoredHeaders {
				t.Fatalf("DecodeInto after %q disagrees with Decode on %q:\ninto   %+v\ndecode %+v", prev, data, into, e)
			}
		}
		again, err := wire.Decode(wire.Encode(e), 0)
		if err != nil {
			t.Fatalf("re-encoded envelope does not decode: %v", err)
		}
		if !bytes.Equal(again.Body, e.Body) || again.Headers.Clock != e.Headers.Clock || again.ContentType != e.ContentType ||
			!reflect.DeepEqual(again.Headers.Extra, e.Headers.Extra) || again.IgnoredHeaders != 0 {
			t.Fatalf("round trip changed the envelope: %+v != %+v", again, e)
		}
	})
}

// FuzzDecodeRequest: request bodies in either codec never panic, and what
// decodes re-encodes to the same request.
func FuzzDecodeRequest(f *testing.F) {
	for _, c := range wire.Codecs() {
		b, _ := wire.EncodeRequest(c, &wire.Request{Method: "ping", Destination: []string{"a@h"}, Ticket: "t", ReplyTo: &wire.ReplyTo{Exchange: "reply.celery.pidbox", RoutingKey: "oid"}})
		f.Add(c.Name() == "msgpack", b)
	}
	f.Add(false, []byte(`{"method": "x", "destination": "not a list"}`))
	f.Add(true, []byte{0x81, 0xa6, 'm', 'e', 't', 'h', 'o', 'd', 0xc0})
	for _, in := range trickyRequests {
		f.Add(false, []byte(in))
	}
	f.Fuzz(func(t *testing.T, msgpack bool, data []byte) {
		var c wire.Codec = wire.JSON{}
		if msgpack {
			c = wire.Msgpack{}
		} else {
			fast, err := wire.DecodeRequestJSON(data)
			ref, refErr := wire.ReferenceDecodeRequestJSON(data)
			if (err == nil) != (refErr == nil) {
				t.Fatalf("request decoders disagree on %q: fast %v, reference %v", data, err, refErr)
			}
			if err == nil && !reflect.DeepEqual(fast, ref) {
				t.Fatalf("request decoders disagree on %q:\nfast      %#v\nreference %#v", data, fast, ref)
			}
		}
		r, err := wire.DecodeRequest(c, data)
		if err != nil {
			return
		}
		// NotAddressed agrees with the full decode on every request it
		// decodes, for a name it lists and one it does not.
		for _, h := range append(slices.Clone(r.Destination), "a@h", "") {
			want := c.Name() == "json" && len(r.Destination) > 0 && !slices.Contains(r.Destination, h)
			if got := wire.NotAddressed(c, data, h); got != want {
				t.Fatalf("NotAddressed(%q, %q) = %v; the decoded destination is %q", data, h, got, r.Destination)
			}
		}
		b, err := wire.EncodeRequest(c, r)
		if err != nil {
			t.Fatalf("decoded request does not encode: %v", err)
		}
		r2, err := wire.DecodeRequest(c, b)
		if err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
		if r2.Method != r.Method || r2.Ticket != r.Ticket || len(r2.Destination) != len(r.Destination) || r2.Pattern != r.Pattern {
			t.Fatalf("round trip changed the request: %+v != %+v", r2, r)
		}
	})
}

// FuzzDecodeReply: reply bodies in either codec never panic, and what
// decodes re-encodes to a reply from the same node with the same error
// status.
func FuzzDecodeReply(f *testing.F) {
	for _, c := range wire.Codecs() {
		b, _ := wire.EncodeReply(c, "w@h", wire.ErrorValue{Error: "x"})
		f.Add(c.Name() == "msgpack", b)
	}
	for _, in := range trickyReplies {
		f.Add(false, []byte(in))
	}
	f.Fuzz(func(t *testing.T, msgpack bool, data []byte) {
		var c wire.Codec = wire.JSON{}
		if msgpack {
			c = wire.Msgpack{}
		}
		node, value, err := wire.DecodeReply(c, data)
		if !msgpack {
			refNode, refValue, refErr := wire.ReferenceDecodeReplyJSON(data)
			if (err == nil) != (refErr == nil) || node != refNode || !bytes.Equal(value, refValue) {
				t.Fatalf("reply decoders disagree on %q: fast %q %q %v, reference %q %q %v", data, node, value, err, refNode, refValue, refErr)
			}
		}
		if err != nil {
			return
		}
		b, err := wire.EncodeReply(c, node, value)
		if err != nil {
			t.Fatalf("decoded reply does not encode: %v", err)
		}
		node2, value2, err := wire.DecodeReply(c, b)
		if err != nil || node2 != node {
			t.Fatalf("round trip changed the reply: %q %v", node2, err)
		}
		text, isErr := wire.ReplyError(c, value)
		text2, isErr2 := wire.ReplyError(c, value2)
		if isErr != isErr2 || text != text2 {
			t.Fatalf("round trip changed the error status: %v %q / %v %q", isErr, text, isErr2, text2)
		}
	})
}
