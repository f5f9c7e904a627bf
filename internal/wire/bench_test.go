package wire_test

import (
	"testing"

	"github.com/gopidbox/pidbox/internal/wire"
)

func sampleRequest() *wire.Request {
	return &wire.Request{Method: "ping", Arguments: []byte(`{}`), Destination: []string{"worker1@host"},
		Ticket: wire.NewID(), ReplyTo: &wire.ReplyTo{Exchange: "reply.celery.pidbox", RoutingKey: wire.NewID()}}
}

func BenchmarkEncodeEnvelope(b *testing.B) {
	body, _ := wire.EncodeRequest(wire.JSON{}, sampleRequest())
	e := &wire.Envelope{Body: body, ContentType: "application/json", ContentEncoding: "utf-8",
		Headers: wire.Headers{Clock: 1234, Expires: 1795446884.7}, Properties: wire.Properties{DeliveryMode: 2, Exchange: "celery.pidbox"}}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = wire.AppendEncode(buf[:0], e)
	}
}

func BenchmarkDecodeEnvelope(b *testing.B) {
	body, _ := wire.EncodeRequest(wire.JSON{}, sampleRequest())
	msg := wire.Encode(&wire.Envelope{Body: body, ContentType: "application/json", ContentEncoding: "utf-8",
		Headers: wire.Headers{Clock: 1234, Expires: 1795446884.7}, Properties: wire.Properties{DeliveryMode: 2, Exchange: "celery.pidbox"}})
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.Decode(msg, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRequest(b *testing.B) {
	for _, c := range wire.Codecs() {
		r := sampleRequest()
		args, _ := c.Marshal(map[string]any{})
		r.Arguments = args
		data, _ := wire.EncodeRequest(c, r)
		b.Run("encode/"+c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := wire.EncodeRequest(c, r); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("decode/"+c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := wire.DecodeRequest(c, data); err != nil {
					b.Fatal(err)
				}
			}
		})
		if c.Name() == "json" {
			// What a node pays for a command that names another node.
			b.Run("notaddressed/json", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if !wire.NotAddressed(c, data, "other@h") {
						b.Fatal("addressed")
					}
				}
			})
		}
	}
}

func BenchmarkReply(b *testing.B) {
	for _, c := range wire.Codecs() {
		value := map[string]string{"ok": "pong"}
		data, _ := wire.EncodeReply(c, "worker1@host", value)
		b.Run("encode/"+c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := wire.EncodeReply(c, "worker1@host", value); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("decode/"+c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, v, err := wire.DecodeReply(c, data)
				if err != nil {
					b.Fatal(err)
				}
				wire.ReplyError(c, v)
			}
		})
	}
}
