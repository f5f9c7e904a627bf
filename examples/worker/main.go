// Command worker is an example Go service that takes remote commands
// through pidbox, from the example controller or from Celery's own command
// line (`celery inspect ping`, `celery control shutdown`).
//
// It serves Celery's whole inspect/control vocabulary (package celery:
// ping, stats in Celery's shape, registered, revoke, rate_limit, ...) and
// sends Celery's worker events (worker-online, a worker-heartbeat every
// 2 s, worker-offline), so `celery inspect`, `celery control`, `celery
// events` and Flower list it as they list a Celery worker; --celery=false
// leaves only pidbox's built-ins (ping, clock, hello, stats, shutdown).
// Besides these it serves commands of its own, each a typed handler:
//
//	set_log_level level=debug|info|warn|error
//	get_config [key=NAME]
//	pause, resume, status   (its simulated work)
//
// It stops cleanly, with status 0, on SIGINT, SIGTERM or a remote
// shutdown, and unbinds its queue so it is no longer listed. With
// --health ADDR it serves its health (package health) at /healthz. With
// --security-key, --security-certificate and --security-cert-store it
// signs every message with Celery's auth serializer and refuses unsigned,
// badly signed and replayed commands (package security).
//
//	worker --broker redis://127.0.0.1:6379/0 --hostname worker1@$(hostname)
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/examples/internal/demo"
	"github.com/gopidbox/pidbox/health"
	"github.com/gopidbox/pidbox/transport"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	host, _ := os.Hostname()
	var (
		broker     = fs.String("broker", "", "broker URL (default $PIDBOX_BROKER, else "+demo.DefaultBroker+")")
		namespace  = fs.String("namespace", pidbox.DefaultNamespace, "pidbox namespace (Celery's control_exchange)")
		hostname   = fs.String("hostname", "worker@"+host, "node name")
		kind       = fs.String("type", "fanout", "mailbox type: fanout (Celery) or direct (Kombu's default)")
		serializer = fs.String("serializer", "json", "serializer for outgoing messages: json or msgpack")
		levelName  = fs.String("log-level", "info", "log level: debug, info, warn or error")
		healthAddr = fs.String("health", "", "serve the node's health at http://ADDR/healthz (e.g. 127.0.0.1:8081), for Kubernetes probes")
		secKey     = fs.String("security-key", "", "PEM private key that signs messages (Celery's security_key)")
		secCert    = fs.String("security-certificate", "", "PEM certificate of that key (Celery's security_certificate)")
		secStore   = fs.String("security-cert-store", "", "directory or glob of the PEM certificates whose signatures are trusted (Celery's security_cert_store); with all three, unsigned messages are refused")
		asCelery   = fs.Bool("celery", true, "serve Celery's inspect/control vocabulary and send Celery's worker events")
		evSer      = fs.String("event-serializer", "json", "serializer of events: json (what every Celery event receiver accepts) or msgpack")
		heartbeat  = fs.Float64("heartbeat-interval", 2, "seconds between worker-heartbeat events")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	level := new(slog.LevelVar)
	if err := level.UnmarshalText([]byte(*levelName)); err != nil {
		fmt.Fprintf(os.Stderr, "worker: --log-level %q: want debug, info, warn or error\n", *levelName)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	demo.RouteRedisLogs(log)
	url := demo.BrokerURL(*broker)
	if demo.IsMemory(url) {
		fmt.Fprintln(os.Stderr, "worker: memory:// lives inside one process; use `controller --broker memory://` for the in-process demo fleet")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tr, err := demo.Open(ctx, url, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		return 1
	}
	defer tr.Close()
	opts := pidbox.Options{Namespace: *namespace, Type: transport.Kind(*kind), Serializer: *serializer, Logger: log}
	signer, err := demo.Security(*secKey, *secCert, *secStore, &opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		return 2
	}
	mb, err := pidbox.New(tr, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		return 2
	}
	defer mb.Close()

	var nodeOpts pidbox.NodeOptions
	if signer != nil {
		nodeOpts.Authorize = demo.ReplayCheck()
		log.Info("message signing on: unsigned and replayed commands are refused", "signer", signer.ID(), "trusted", signer.Store().Len())
	}
	node := mb.NewNode(*hostname, nodeOpts)
	w := demo.NewWorker(level, map[string]string{
		"namespace":  *namespace,
		"hostname":   *hostname,
		"go_version": runtime.Version(),
		"queue":      "default",
	})
	w.Register(node)
	if *asCelery {
		stopEvents, err := celeryMember(node, tr, url, *evSer, *heartbeat, w, log)
		if err != nil {
			fmt.Fprintf(os.Stderr, "worker: %v\n", err)
			return 2
		}
		defer stopEvents() // worker-offline, before the transport closes
	} else {
		go w.Work(ctx)
	}
	if *healthAddr != "" {
		ln, err := net.Listen("tcp", *healthAddr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "worker: --health: %v\n", err)
			return 2
		}
		mux := http.NewServeMux()
		mux.Handle("/healthz", health.Handler(node))
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		defer hs.Close()
		log.Info("health endpoint", "url", "http://"+ln.Addr().String()+"/healthz")
	}
	go func() {
		select {
		case <-node.Ready():
			log.Info("worker ready", "hostname", *hostname, "broker", demo.Redact(url), "commands", node.Methods())
		case <-ctx.Done():
		}
	}()
	if err := node.Serve(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		return 1
	}
	log.Info("worker stopped", "hostname", *hostname)
	return 0
}
