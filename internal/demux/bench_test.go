package demux_test

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/gopidbox/pidbox/internal/demux"
	"github.com/gopidbox/pidbox/internal/wire"
)

// BenchmarkDemux routes a reply envelope to a waiting call: decode,
// clock, expiry, ticket lookup and hand-over, as the reply reader does for
// every reply.
func BenchmarkDemux(b *testing.B) {
	for _, c := range wire.Codecs() {
		b.Run(c.Name(), func(b *testing.B) {
			d := demux.New(demux.Options{Logger: slog.New(slog.DiscardHandler)})
			in := d.Wait("T")
			defer in.Close()
			msg := msg{ticket: "T", node: "worker1@host", value: map[string]string{"ok": "pong"}, codec: c}.encode(b)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := d.Dispatch(msg); err != nil {
					b.Fatal(err)
				}
				if i++; i%1024 == 0 { // drain, as the waiting call would
					for range 1024 {
						_, _ = in.Next(b.Context())
					}
				}
			}
		})
	}
}

// BenchmarkDemuxUnclaimed keeps replies nobody waits for, at the bound.
func BenchmarkDemuxUnclaimed(b *testing.B) {
	d := demux.New(demux.Options{Logger: slog.New(slog.DiscardHandler), MaxUnclaimed: 1000})
	msgs := make([][]byte, 4096)
	for i := range msgs {
		msgs[i] = pong(fmt.Sprint("t", i), "w").encode(b)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = d.Dispatch(msgs[i%len(msgs)])
		i++
	}
}
