package main

// The AMQP figures: pidbox on RabbitMQ, a raw amqp091-go floor driving
// the same traffic, and Kombu on py-amqp, on one private rabbitmq-server
// started for the run.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/internal/wire"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// amqpBench holds the broker of the AMQP figures.
type amqpBench struct {
	*bench
	srv   *rabbittest.Server
	url   string // with the management API
	plain string
}

func (b *bench) amqp() {
	dir, err := os.MkdirTemp("", "pidbox-bench-amqp")
	check(err)
	defer os.RemoveAll(dir)
	srv, err := rabbittest.Launch(dir)
	if err != nil {
		fmt.Printf("figure=amqp skipped=%q\n", err.Error())
		return
	}
	defer srv.Kill()
	a := &amqpBench{bench: b, srv: srv, plain: srv.URL(), url: srv.URL() + "?management=" + srv.ManagementURL()}
	fmt.Printf("amqp rabbitmq=%s boot_s=%.1f\n", srv.Addr(), srv.BootTime.Seconds())
	a.sequential()
	for _, n := range []int{10, 100} {
		a.gather(n)
	}
	if *kombu {
		a.kombu()
	}
	a.ratios()
}

func (a *amqpBench) open() *pidamqp.Transport {
	ctx, cancel := ctxTimeout(10 * time.Second)
	defer cancel()
	tr, err := pidamqp.Open(ctx, a.url, pidamqp.Options{Logger: quiet})
	check(err)
	return tr
}

// fleet runs n pidbox nodes on one transport, each with its own queue.
func (a *amqpBench) fleet(prefix string, n int) (names []string, stop func()) {
	tr := a.open()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
		check(err)
		node := mb.NewNode(fmt.Sprintf("%s%04d@bench", prefix, i), pidbox.NodeOptions{Concurrency: 256})
		wg.Go(func() { _ = node.Serve(ctx) })
		<-node.Ready()
		names = append(names, node.Hostname())
	}
	return names, func() { cancel(); wg.Wait(); _ = tr.Close() }
}

func (a *amqpBench) controller() (*pidbox.Mailbox, func()) {
	tr := a.open()
	mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
	check(err)
	return mb, func() { _ = mb.Close(); _ = tr.Close() }
}

func (a *amqpBench) sequential() {
	n := iters(2000)
	names, stopFleet := a.fleet("aseq", 1)
	defer stopFleet()
	ctl, done := a.controller()
	defer done()
	call := func() {
		rs, err := ctl.Call(context.Background(), "ping", nil, pidbox.To(names[0]), pidbox.Timeout(5*time.Second))
		check(err)
		if len(rs.Replies) != 1 {
			check(fmt.Errorf("amqp sequential call: %d replies", len(rs.Replies)))
		}
	}
	fl := a.newFloor(1)
	defer fl.stop()
	floorCall := func() { fl.call(fl.names[0], 1) }
	var lat, flat latencies
	for range 200 {
		call()
		floorCall()
	}
	for range rounds {
		lat = append(lat, timeEach(call, n/rounds)...)
		flat = append(flat, timeEach(floorCall, n/rounds)...)
	}
	a.record("amqp_seq_call", "pidbox", "n", len(lat), "p50_ms", lat.pct(0.5), "p99_ms", lat.pct(0.99))
	a.record("amqp_seq_call", "floor", "n", len(flat), "p50_ms", flat.pct(0.5), "p99_ms", flat.pct(0.99))
}

func timeEach(fn func(), k int) latencies {
	lat := make(latencies, 0, k)
	for range k {
		t := time.Now()
		fn()
		lat = append(lat, time.Since(t))
	}
	return lat
}

func (a *amqpBench) gather(n int) {
	it := iters(map[int]int{10: 300, 100: 150}[n])
	_, stopFleet := a.fleet("ag", n)
	ctl, done := a.controller()
	fl := a.newFloor(n)
	call := func() {
		rs, err := ctl.Call(context.Background(), "ping", nil, pidbox.Limit(n), pidbox.Timeout(10*time.Second))
		check(err)
		if len(rs.Replies) != n {
			check(fmt.Errorf("amqp gather of %d nodes got %d replies", n, len(rs.Replies)))
		}
	}
	floorCall := func() { fl.call("*", n) }
	call()
	floorCall()
	var lat, flat latencies
	for range rounds {
		lat = append(lat, timeEach(call, max(it/rounds, 1))...)
		flat = append(flat, timeEach(floorCall, max(it/rounds, 1))...)
	}
	// A broadcast with no limit, which returns once every node the
	// management API lists replied.
	nolimit := timeEach(func() {
		rs, err := ctl.Call(context.Background(), "ping", nil, pidbox.Timeout(10*time.Second))
		check(err)
		if len(rs.Replies) != n {
			check(fmt.Errorf("amqp broadcast to %d nodes got %d replies", n, len(rs.Replies)))
		}
	}, max(it/5, 3))
	fl.stop()
	done()
	stopFleet()
	fig := fmt.Sprintf("amqp_gather_%d", n)
	a.record(fig, "pidbox", "nodes", n, "iters", len(lat), "p50_ms", lat.pct(0.5), "p99_ms", lat.pct(0.99))
	a.record(fig, "floor", "nodes", n, "iters", len(flat), "p50_ms", flat.pct(0.5), "p99_ms", flat.pct(0.99))
	a.record(fmt.Sprintf("amqp_nolimit_%d", n), "pidbox", "nodes", n, "iters", len(nolimit), "p50_ms", nolimit.pct(0.5), "p99_ms", nolimit.pct(0.99))
}

// floor is the same traffic as pidbox's, driven raw with amqp091-go and
// no pidbox code: n consumers on exclusive queues bound to a fanout
// exchange, each replying to the caller's reply queue through a direct
// exchange, with bodies and headers the size of pidbox's.
type floor struct {
	names   []string
	conn    *amqp091.Connection
	pub     *amqp091.Channel
	replies <-chan amqp091.Delivery
	reqBody []byte
	key     string
	done    chan struct{}
	wg      sync.WaitGroup
}

const floorExchange, floorReply = "floor.pidbox", "reply.floor.pidbox"

// bodySizes are the sizes of a pidbox ping request's and reply's payloads.
func bodySizes() (request, reply int) {
	body, _ := wire.EncodeRequest(wire.JSON{}, &wire.Request{Method: "ping", Destination: []string{"n0000@bench"}, Ticket: wire.NewID(),
		ReplyTo: &wire.ReplyTo{Exchange: "reply.celery.pidbox", RoutingKey: wire.NewID()}})
	rb, _ := wire.EncodeReply(wire.JSON{}, "n0000@bench", map[string]string{"ok": "pong"})
	return len(body), len(rb)
}

func (a *amqpBench) newFloor(n int) *floor {
	conn, err := amqp091.Dial(a.plain)
	check(err)
	f := &floor{conn: conn, done: make(chan struct{}), key: wire.NewID()}
	f.pub, err = conn.Channel()
	check(err)
	check(f.pub.ExchangeDeclare(floorExchange, "fanout", false, false, false, false, nil))
	check(f.pub.ExchangeDeclare(floorReply, "direct", false, false, false, false, nil))
	reqSize, repSize := bodySizes()
	f.reqBody = []byte(strings.Repeat("x", reqSize))
	rq, err := conn.Channel()
	check(err)
	q := f.key + "." + floorReply
	_, err = rq.QueueDeclare(q, false, true, true, false, nil)
	check(err)
	check(rq.QueueBind(q, f.key, floorReply, false, nil))
	f.replies, err = rq.Consume(q, "", true, false, false, false, nil)
	check(err)
	for i := range n {
		name := fmt.Sprintf("f%04d", i)
		f.names = append(f.names, name)
		ch, err := conn.Channel()
		check(err)
		nq := name + "." + floorExchange
		_, err = ch.QueueDeclare(nq, false, true, true, false, nil)
		check(err)
		check(ch.QueueBind(nq, "", floorExchange, false, nil))
		deliveries, err := ch.Consume(nq, "", true, false, false, false, nil)
		check(err)
		reply := amqp091.Publishing{ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: 1,
			Body: []byte(strings.Repeat("y", repSize))}
		f.wg.Go(func() {
			for d := range deliveries {
				dest, _ := d.Headers["dest"].(string)
				if dest == name || dest == "*" {
					p := reply
					p.Headers = amqp091.Table{"clock": int64(1), "ticket": d.Headers["ticket"]}
					_ = ch.Publish(floorReply, d.Headers["reply"].(string), false, false, p)
				}
			}
		})
	}
	return f
}

// call publishes one request to dest ("*" for all) and waits for n replies.
func (f *floor) call(dest string, n int) {
	ticket := wire.NewID()
	check(f.pub.Publish(floorExchange, "", false, false, amqp091.Publishing{
		ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: 2,
		Headers: amqp091.Table{"clock": int64(1), "expires": 1795446884.7, "dest": dest, "reply": f.key, "ticket": ticket},
		Body:    f.reqBody,
	}))
	timeout := time.After(10 * time.Second)
	for got := 0; got < n; {
		select {
		case d := <-f.replies:
			if d.Headers["ticket"] == ticket {
				got++
			}
		case <-timeout:
			check(fmt.Errorf("amqp floor: %d of %d replies", got, n))
		}
	}
}

func (f *floor) stop() {
	_ = f.conn.Close()
	f.wg.Wait()
}

// kombu measures Debian's python3-kombu on py-amqp on the same broker.
func (a *amqpBench) kombu() {
	if err := exec.Command(redistest.Python, "-c", "import kombu, amqp").Run(); err != nil {
		fmt.Println("figure=amqp_kombu skipped=no-kombu")
		return
	}
	k := &bench{url: a.plain, dir: a.dir, results: a.results}
	stop := k.kombuNodes("ak", 1)
	lat := k.kombuRun("seq", "ak0000@bench", strconv.Itoa(iters(300)))
	stop()
	a.record("amqp_seq_call", "kombu", "n", len(lat), "p50_ms", lat.pct(0.5), "p99_ms", lat.pct(0.99))
	stop = k.kombuNodes("ak", 10)
	lat = k.kombuRun("gather", "10", strconv.Itoa(iters(100)))
	stop()
	a.record("amqp_gather_10", "kombu", "nodes", 10, "iters", len(lat), "p50_ms", lat.pct(0.5), "p99_ms", lat.pct(0.99))
}

func (a *amqpBench) ratios() {
	for _, r := range []struct {
		name, num, den string
		target         float64
	}{
		{"amqp_seq_call_p50 pidbox/floor", "amqp_seq_call/pidbox/p50_ms", "amqp_seq_call/floor/p50_ms", 1.5},
		{"amqp_seq_call_p50 pidbox/kombu", "amqp_seq_call/pidbox/p50_ms", "amqp_seq_call/kombu/p50_ms", 0.2},
		{"amqp_gather10_p50 pidbox/floor", "amqp_gather_10/pidbox/p50_ms", "amqp_gather_10/floor/p50_ms", 1.5},
		{"amqp_gather10_p50 pidbox/kombu", "amqp_gather_10/pidbox/p50_ms", "amqp_gather_10/kombu/p50_ms", 0.2},
		{"amqp_gather100_p50 pidbox/floor", "amqp_gather_100/pidbox/p50_ms", "amqp_gather_100/floor/p50_ms", 1.5},
	} {
		num, ok1 := a.results[r.num]
		den, ok2 := a.results[r.den]
		if !ok1 || !ok2 || den == 0 {
			continue
		}
		v := num / den
		fmt.Printf("ratio=%s value=%.3f target=<=%.2f met=%v\n", strings.ReplaceAll(r.name, " ", " of="), v, r.target, v <= r.target)
	}
}
