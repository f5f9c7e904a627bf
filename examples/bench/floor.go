package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gopidbox/pidbox/internal/wire"
	goredis "github.com/redis/go-redis/v9"
)

// The floor: the same Redis traffic as a pidbox call, driven raw with
// go-redis and no pidbox code: PUBLISH a request of the same size, each
// node pushes its reply with one Lua call (LPUSH plus PEXPIRE), and the
// controller pops with BRPOP (then RPOP with a count, for gathers).

var floorPush = goredis.NewScript(`
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

const floorChannel = "/0.floor.pidbox"

// sizes of a pidbox ping request and reply envelope, for equal traffic.
func envelopeSizes() (request, reply int) {
	body, _ := wire.EncodeRequest(wire.JSON{}, &wire.Request{Method: "ping", Destination: []string{"n0000@bench"}, Ticket: uuid.NewString(),
		ReplyTo: &wire.ReplyTo{Exchange: "reply.celery.pidbox", RoutingKey: uuid.NewString()}})
	req := wire.Encode(&wire.Envelope{Body: body, ContentType: "application/json", ContentEncoding: "utf-8", Headers: wire.Headers{Clock: 1234, Expires: 1795446884.7}})
	rb, _ := wire.EncodeReply(wire.JSON{}, "n0000@bench", map[string]string{"ok": "pong"})
	rep := wire.Encode(&wire.Envelope{Body: rb, ContentType: "application/json", ContentEncoding: "utf-8", Headers: wire.Headers{Clock: 1234, Ticket: uuid.NewString()}})
	return len(req), len(rep)
}

func pad(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return s + strings.Repeat("x", n-len(s))
}

func (b *bench) rawClient(poolSize int) *goredis.Client {
	o, err := goredis.ParseURL(b.url)
	check(err)
	o.PoolSize = poolSize
	return goredis.NewClient(o)
}

// floorNodes runs n raw nodes, each on its own subscription; a node
// replies to messages "dest|replykey|..." addressed to it or to "*".
func (b *bench) floorNodes(n int) (names []string, stop func()) {
	client := b.rawClient(0)
	_, replySize := envelopeSizes()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var subs []*goredis.PubSub
	for i := range n {
		name := fmt.Sprintf("f%04d", i)
		names = append(names, name)
		ps := client.Subscribe(ctx, floorChannel)
		_, err := ps.Receive(ctx)
		check(err)
		subs = append(subs, ps)
		reply := pad(name, replySize)
		wg.Go(func() {
			for {
				msg, err := ps.ReceiveMessage(ctx)
				if err != nil {
					return
				}
				dest, rest, _ := strings.Cut(msg.Payload, "|")
				key, _, _ := strings.Cut(rest, "|")
				if dest == name || dest == "*" {
					_ = floorPush.Run(ctx, client, []string{key}, reply, 300000).Err()
				}
			}
		})
	}
	return names, func() {
		cancel()
		for _, ps := range subs {
			_ = ps.Close() // ends ReceiveMessage, which ignores cancellation
		}
		wg.Wait()
		_ = client.Close()
	}
}

// floorSequential returns one raw call to one raw node.
func (b *bench) floorSequential() (call func(), stop func()) {
	names, stopNodes := b.floorNodes(1)
	client := b.rawClient(4)
	reqSize, _ := envelopeSizes()
	key := "floor." + uuid.NewString()
	payload := pad(names[0]+"|"+key+"|", reqSize)
	ctx := context.Background()
	return func() {
			check(client.Publish(ctx, floorChannel, payload).Err())
			_, err := client.BRPop(ctx, 5*time.Second, key).Result()
			check(err)
		}, func() {
			_ = client.Close()
			stopNodes()
		}
}

// floorCaller returns a raw call for callers concurrent callers to
// nodes raw nodes: dest is the caller's index, which picks its node and
// its reply list.
func (b *bench) floorCaller(nodes, callers int) (call func(dest string) bool, stop func()) {
	names, stopNodes := b.floorNodes(nodes)
	client := b.rawClient(4 * callers)
	reqSize, _ := envelopeSizes()
	payloads := make(map[string]string, callers)
	keys := make(map[string]string, callers)
	for c := range callers {
		key := "floor." + uuid.NewString()
		keys[fmt.Sprint(c)] = key
		payloads[fmt.Sprint(c)] = pad(names[c%nodes]+"|"+key+"|", reqSize)
	}
	ctx := context.Background()
	return func(dest string) bool {
			check(client.Publish(ctx, floorChannel, payloads[dest]).Err())
			_, err := client.BRPop(ctx, 5*time.Second, keys[dest]).Result()
			return err == nil
		}, func() {
			_ = client.Close()
			stopNodes()
		}
}

// floorGather returns a function that runs raw gathers of n raw nodes.
func (b *bench) floorGather(n int) (gather func(it int) latencies, stop func()) {
	_, stopNodes := b.floorNodes(n)
	client := b.rawClient(4)
	reqSize, _ := envelopeSizes()
	ctx := context.Background()
	return func(it int) latencies {
			var lat latencies
			for range it {
				key := "floor." + uuid.NewString()
				payload := pad("*|"+key+"|", reqSize)
				t := time.Now()
				check(client.Publish(ctx, floorChannel, payload).Err())
				got := 0
				for got < n {
					if _, err := client.BRPop(ctx, 5*time.Second, key).Result(); err != nil {
						check(fmt.Errorf("floor gather: %w after %d of %d", err, got, n))
					}
					got++
					for got < n {
						vals, err := client.RPopCount(ctx, key, n-got).Result()
						if err != nil || len(vals) == 0 {
							break
						}
						got += len(vals)
					}
				}
				lat = append(lat, time.Since(t))
			}
			return lat
		}, func() {
			_ = client.Close()
			stopNodes()
		}
}
