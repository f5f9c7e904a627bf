package security

import "testing"

// The cost signing adds to a call: the controller signs the request, the
// node verifies it and signs its reply, the controller verifies that.
func BenchmarkSign(b *testing.B) {
	s := newSigner(b, ctl, Config{})
	body := []byte(`{"method": "ping", "arguments": {}, "destination": ["node1@host"], "pattern": null, "matcher": null, "ticket": "c8e0e6a4-4f0b-4b7e-9a55-2d8f3c1b7a10", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "5b1f0b52-8e57-4a4b-b3a5-1f1d5b0c2e11"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign("application/json", "utf-8", body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	s := newSigner(b, ctl, Config{})
	sealed, err := s.Sign("application/json", "utf-8", []byte(`{"node1@host": {"ok": "pong"}}`))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Verify(sealed); err != nil {
			b.Fatal(err)
		}
	}
}
