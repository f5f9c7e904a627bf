package celery_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/celery"
	"github.com/gopidbox/pidbox/clock"
	"github.com/gopidbox/pidbox/transport"
	"github.com/gopidbox/pidbox/transport/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type collector struct {
	mu  sync.Mutex
	evs []celery.Event
	ch  chan celery.Event
}

func newCollector() *collector { return &collector{ch: make(chan celery.Event, 100)} }

func (c *collector) add(e celery.Event) {
	c.mu.Lock()
	c.evs = append(c.evs, e)
	c.mu.Unlock()
	c.ch <- e
}

func (c *collector) next(t *testing.T, typ string) celery.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e := <-c.ch:
			if e.Type() == typ {
				return e
			}
		case <-deadline:
			c.mu.Lock()
			t.Fatalf("no %s event within 5s; got %v", typ, c.evs)
		}
	}
}

// receive runs celery.Receive on tr until the test ends.
func receive(t *testing.T, tr transport.Transport, opts celery.ReceiveOptions) *collector {
	t.Helper()
	c := newCollector()
	ex := opts.Exchange
	if ex.Name == "" {
		ex = celery.EventExchange(tr)
	}
	before, err := tr.Bindings(context.Background(), ex)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- celery.Receive(ctx, tr, opts, c.add) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	// The subscription is made asynchronously: wait until it is bound.
	require.Eventually(t, func() bool {
		bs, _ := tr.Bindings(context.Background(), ex)
		return len(bs) > len(before)
	}, 5*time.Second, 10*time.Millisecond)
	return c
}

func TestEmitterWorkerEvents(t *testing.T) {
	for _, ser := range []string{"json", "msgpack"} {
		t.Run(ser, func(t *testing.T) {
			br := memory.New(memory.Options{Logger: quiet})
			t.Cleanup(func() { _ = br.Close() })
			assert.Equal(t, transport.Topic, celery.EventExchange(br).Kind, "topic, as Celery, except on Redis")
			got := receive(t, br, celery.ReceiveOptions{})
			clk := clock.New(41)
			em, err := celery.NewEmitter(br, celery.EmitterOptions{
				Hostname: "go@ev", Serializer: ser, Interval: 50 * time.Millisecond, Clock: clk,
				Active: func() int { return 2 }, Processed: func() int { return 7 }, Version: "1.2",
			})
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- em.Run(ctx) }()

			online := got.next(t, "worker-online")
			hb := got.next(t, "worker-heartbeat")
			cancel()
			require.NoError(t, <-done)
			offline := got.next(t, "worker-offline")

			for _, e := range []celery.Event{online, hb, offline} {
				for _, k := range []string{"hostname", "timestamp", "utcoffset", "pid", "clock", "freq", "sw_ident", "sw_ver", "sw_sys", "active", "processed", "loadavg", "type"} {
					assert.Contains(t, e, k, e.Type())
				}
				assert.Equal(t, "go@ev", e.Hostname())
				assert.Equal(t, 0.05, e.Float("freq"))
				assert.Equal(t, 2.0, e.Float("active"))
				assert.Equal(t, 7.0, e.Float("processed"))
				assert.Equal(t, celery.SoftwareIdent, e["sw_ident"])
				assert.Equal(t, "1.2", e["sw_ver"])
				assert.Len(t, e["loadavg"], 3)
				assert.InDelta(t, float64(time.Now().UnixNano())/1e9, e.Float("timestamp"), 10)
			}
			assert.Less(t, online.Float("clock"), hb.Float("clock"))
			assert.Greater(t, online.Float("clock"), 41.0, "the shared clock moves forward")
		})
	}
}

func TestEmitterTaskEventsFollowEnableDisable(t *testing.T) {
	br := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = br.Close() })
	got := receive(t, br, celery.ReceiveOptions{RoutingKey: "task.#"})
	em, err := celery.NewEmitter(br, celery.EmitterOptions{Hostname: "go@ev"})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, em.Send(ctx, "task-started", map[string]any{"uuid": "u1"}))
	assert.True(t, em.EnableTaskEvents())
	assert.False(t, em.EnableTaskEvents())
	require.NoError(t, em.Send(ctx, "task-started", map[string]any{"uuid": "u2"}))
	e := got.next(t, "task-started")
	assert.Equal(t, "u2", e["uuid"], "u1 was sent while task events were off")
	assert.True(t, em.DisableTaskEvents())
	require.NoError(t, em.Send(ctx, "task-started", map[string]any{"uuid": "u3"}))
	require.NoError(t, em.Send(ctx, "worker-heartbeat", nil)) // not routed to task.#
	select {
	case e := <-got.ch:
		t.Fatalf("unexpected event %v", e)
	case <-time.After(150 * time.Millisecond):
	}

	// The heartbeat command's heartbeat: freq 5, software info only.
	all := receive(t, br, celery.ReceiveOptions{})
	require.NoError(t, em.Heartbeat(ctx))
	hb := all.next(t, "worker-heartbeat")
	assert.Equal(t, 5.0, hb.Float("freq"))
	assert.NotContains(t, hb, "active")
}

func TestEmitterBadOptions(t *testing.T) {
	br := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = br.Close() })
	_, err := celery.NewEmitter(br, celery.EmitterOptions{})
	assert.ErrorContains(t, err, "hostname")
	_, err = celery.NewEmitter(br, celery.EmitterOptions{Hostname: "h", Serializer: "pickle"})
	assert.ErrorContains(t, err, "pickle")
	_, err = celery.NewEmitter(nil, celery.EmitterOptions{Hostname: "h"})
	assert.Error(t, err)
}

// sealer is a stand-in signing scheme: it wraps a body in a content type
// of its own and refuses bodies it did not seal.
type sealer struct{}

func (sealer) Seal(b pidbox.Body) (pidbox.Body, error) {
	return pidbox.Body{ContentType: "application/x-sealed", ContentEncoding: "binary", Data: append([]byte(b.ContentType+"\x00"), b.Data...)}, nil
}

func (sealer) Open(b pidbox.Body) (pidbox.Body, string, error) {
	if b.ContentType != "application/x-sealed" {
		return pidbox.Body{}, "", errors.New("not sealed")
	}
	ct, data, _ := bytes.Cut(b.Data, []byte{0})
	return pidbox.Body{ContentType: string(ct), ContentEncoding: "utf-8", Data: data}, "signer", nil
}

// Events are sealed with the emitter's Sealer and opened with the
// receiver's; a receiver without it cannot read them.
func TestEmitterSealsEvents(t *testing.T) {
	br := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = br.Close() })
	sealed := receive(t, br, celery.ReceiveOptions{Sealer: sealer{}})
	plain := receive(t, br, celery.ReceiveOptions{Logger: quiet})
	em, err := celery.NewEmitter(br, celery.EmitterOptions{Hostname: "go@sealed", Sealer: sealer{}})
	require.NoError(t, err)
	require.NoError(t, em.Heartbeat(context.Background()))
	assert.Equal(t, "go@sealed", sealed.next(t, "worker-heartbeat").Hostname())
	select {
	case e := <-plain.ch:
		t.Fatalf("a receiver without the sealer read %v", e)
	case <-time.After(150 * time.Millisecond):
	}
}
