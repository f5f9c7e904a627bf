package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/examples/internal/demo"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
	"github.com/spf13/cobra"
)

// Exit statuses.
const (
	exitOK      = 0 // every expected node replied
	exitNoReply = 1 // no node replied, or the command failed
	exitUsage   = 2 // a mistake on the command line
	exitMissing = 3 // some nodes replied, but an expected node did not
)

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

type cli struct {
	broker, namespace, kind, serializer string
	secKey, secCert, secStore           string
	pattern, matcher, argsJSON          string
	destination                         []string
	timeout                             time.Duration
	limit                               int
	jsonOut                             bool
	celeryKind                          string // inspect, control or status: print as Celery does

	stdout, stderr io.Writer
	exit           int
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	root := c.command()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return c.exit
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "controller: %v\nRun 'controller --help' for usage.\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "controller: %v\n", oneLine(err))
	return exitNoReply
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

func (c *cli) command() *cobra.Command {
	root := &cobra.Command{
		Use:   "controller",
		Short: "Send pidbox commands to Celery and Go workers and print their replies",
		Long: `controller sends remote-control commands to workers through a pidbox
mailbox (Kombu/Celery's wire format on Redis) and prints their replies.

It returns as soon as every destination replied, the --limit was reached,
or every node known to be alive replied; otherwise at --timeout.

Exit status: 0 every expected node replied; 1 no node replied, or the
command failed; 2 usage error; 3 some nodes replied, but an expected node
(a destination, or a node known to be alive) did not. Missing nodes are
listed with the reason: no reply before the deadline, or not known to the
broker.

Broker URLs: redis://[user:pass@]host:port/db, rediss://..., unix:///path;
sentinel://host:26379;sentinel://host2:26379/0?master_name=NAME (Kombu's
Sentinel form); redis+cluster://host:port,host:port (Redis Cluster, Go to Go);
amqp://user:pass@host:5672/vhost, amqps://..., and Kombu's pyamqp:// and
librabbitmq:// (add ?management=15672 so broadcasts know the live nodes);
and memory:// for an in-process demo fleet of three workers.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return usagef("a command is needed")
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&c.broker, "broker", "", "broker URL (default $PIDBOX_BROKER, else "+demo.DefaultBroker+")")
	f.StringVar(&c.namespace, "namespace", pidbox.DefaultNamespace, "pidbox namespace (Celery's control_exchange)")
	f.StringVar(&c.kind, "type", "fanout", "mailbox type: fanout (Celery) or direct")
	f.StringSliceVarP(&c.destination, "destination", "d", nil, "node to address (repeatable, or comma-separated)")
	f.StringVar(&c.pattern, "pattern", "", "address the nodes whose name matches this pattern")
	f.StringVar(&c.matcher, "matcher", "", "pattern matcher: glob (default) or pcre")
	f.DurationVar(&c.timeout, "timeout", time.Second, "total time to wait for replies")
	f.IntVar(&c.limit, "limit", 0, "stop after this many replies")
	f.StringVar(&c.serializer, "serializer", "json", "serializer: json or msgpack")
	f.BoolVar(&c.jsonOut, "json", false, "print one JSON object mapping node name to reply (a float NaN or infinity prints as NaN, Infinity, -Infinity, as Python's json and Celery's --json print it: not standard JSON)")
	f.StringVar(&c.secKey, "security-key", "", "PEM private key that signs messages (Celery's security_key)")
	f.StringVar(&c.secCert, "security-certificate", "", "PEM certificate of that key (Celery's security_certificate)")
	f.StringVar(&c.secStore, "security-cert-store", "", "directory or glob of trusted PEM certificates (Celery's security_cert_store); with all three, unsigned replies are refused")
	f.StringVar(&c.argsJSON, "args", "", `command arguments as a JSON object, e.g. '{"level": "debug"}'`)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	root.AddCommand(
		&cobra.Command{Use: "ping", Short: "Ask workers to reply pong", Args: noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return c.call(cmd.Context(), "ping", nil) }},
		&cobra.Command{Use: "inspect METHOD [ARGS ...]", Short: "Query workers as `celery inspect` does (stats, registered, active, ...)", Args: methodArgs,
			Long: "Runs a command with Celery's positional arguments (key=value pairs for\nmethods outside Celery's vocabulary), as `celery inspect` does:\n\n" + vocabulary("inspect"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return c.celeryCall(cmd.Context(), "inspect", args[0], args[1:])
			}},
		&cobra.Command{Use: "call METHOD [key=value ...]", Short: "Run a command on workers and print their replies", Args: methodArgs,
			RunE: func(cmd *cobra.Command, args []string) error { return c.call(cmd.Context(), args[0], args[1:]) }},
		&cobra.Command{Use: "cast METHOD [key=value ...]", Short: "Send a command and wait for no reply", Args: methodArgs,
			RunE: func(cmd *cobra.Command, args []string) error { return c.cast(cmd.Context(), args[0], args[1:]) }},
		&cobra.Command{Use: "shutdown", Short: "Stop workers (no reply is sent)", Args: noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return c.cast(cmd.Context(), "shutdown", nil) }},
		&cobra.Command{Use: "nodes", Short: "List the nodes bound to the mailbox", Args: noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return c.nodes(cmd.Context()) }},
		&cobra.Command{Use: "demo", Short: "Tour pidbox on an in-process fleet (needs no broker)", Args: noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return c.demo(cmd.Context()) }},
		c.probeCommand(),
		c.statsCommand(),
	)
	root.AddCommand(c.celeryCommands()...)
	return root
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.HasSubCommands() {
			return usagef("unknown command %q", args[0])
		}
		return usagef("%s takes no arguments, got %q", cmd.Name(), args)
	}
	return nil
}

func methodArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return usagef("%s needs a METHOD", cmd.Name())
	}
	return nil
}

// options turns the targeting flags into call options.
func (c *cli) options() ([]pidbox.CallOption, error) {
	if c.timeout <= 0 {
		return nil, usagef("--timeout must be positive, got %s", c.timeout)
	}
	if c.limit < 0 {
		return nil, usagef("--limit must not be negative, got %d", c.limit)
	}
	opts := []pidbox.CallOption{pidbox.Timeout(c.timeout)}
	var dest []string
	for _, d := range c.destination {
		if d = strings.TrimSpace(d); d != "" {
			dest = append(dest, d)
		}
	}
	c.destination = dest
	if len(dest) > 0 {
		if c.pattern != "" {
			return nil, usagef("--destination and --pattern cannot be combined")
		}
		opts = append(opts, pidbox.To(dest...))
	}
	switch {
	case c.pattern == "" && c.matcher != "":
		return nil, usagef("--matcher needs --pattern")
	case c.pattern != "" && (c.matcher == "" || c.matcher == "glob"):
		opts = append(opts, pidbox.Glob(c.pattern))
	case c.pattern != "" && c.matcher == "pcre":
		opts = append(opts, pidbox.PCRE(c.pattern))
	case c.pattern != "":
		return nil, usagef("--matcher %q: want glob or pcre", c.matcher)
	}
	if c.limit > 0 {
		opts = append(opts, pidbox.Limit(c.limit))
	}
	return opts, nil
}

// session is an open mailbox, plus the in-process fleet for memory://.
type session struct {
	mb    *pidbox.Mailbox
	tr    transport.Transport
	close func()
}

func (c *cli) open(ctx context.Context) (*session, error) {
	kind := transport.Kind(c.kind)
	if kind != transport.Fanout && kind != transport.Direct {
		return nil, usagef("--type %q: want fanout or direct", c.kind)
	}
	if c.serializer != "json" && c.serializer != "msgpack" {
		return nil, usagef("--serializer %q: want json or msgpack", c.serializer)
	}
	opts := pidbox.Options{Namespace: c.namespace, Type: kind, Serializer: c.serializer}
	if _, err := demo.Security(c.secKey, c.secCert, c.secStore, &opts); err != nil {
		if errors.Is(err, demo.ErrSecurityFlags) {
			return nil, usageError{err}
		}
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	demo.RouteRedisLogs(log)
	opts.Logger = log
	url := demo.BrokerURL(c.broker)
	octx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	tr, err := demo.Open(octx, url, log)
	if err != nil {
		return nil, err
	}
	var fleet *demo.Fleet
	if demo.IsMemory(url) {
		if fleet, err = demo.StartFleet(ctx, tr, opts, demo.FleetNames()); err != nil {
			tr.Close()
			return nil, err
		}
	}
	mb, err := pidbox.New(tr, opts)
	if err != nil {
		tr.Close()
		return nil, err
	}
	return &session{mb: mb, tr: tr, close: func() {
		mb.Close()
		if fleet != nil {
			fleet.Stop()
		}
		tr.Close()
	}}, nil
}

// prepare checks a command's flags and arguments, then opens the mailbox.
func (c *cli) prepare(ctx context.Context, pairs []string) (*session, []pidbox.CallOption, map[string]any, error) {
	opts, err := c.options()
	if err != nil {
		return nil, nil, nil, err
	}
	args, err := c.arguments(pairs)
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := c.open(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	return s, opts, args, nil
}

func (c *cli) call(ctx context.Context, method string, pairs []string) error {
	s, opts, args, err := c.prepare(ctx, pairs)
	if err != nil {
		return err
	}
	defer s.close()
	return c.gather(ctx, s.mb, method, args, opts)
}

// gather streams the replies of a call to stdout and sets the exit status:
// exitNoReply unless a node replied, exitMissing when an expected node
// did not.
func (c *cli) gather(ctx context.Context, mb *pidbox.Mailbox, method string, args map[string]any, opts []pidbox.CallOption) error {
	call, err := mb.Send(ctx, method, args, opts...)
	if err != nil {
		return err
	}
	progress := newProgress(c.stderr, len(call.Expected()))
	values := map[string]json.RawMessage{}
	replied := map[string]bool{}
	var order, duplicates []string
	var incomplete error
	for r, err := range call.Replies() {
		if errors.Is(err, pidbox.ErrIncomplete) {
			incomplete = err
			break
		}
		if err != nil {
			progress.done()
			return err
		}
		if r.Duplicate {
			progress.clear()
			fmt.Fprintf(c.stderr, "controller: warning: two nodes replied as %q; give every node a unique name\n", r.Node)
			if !slices.Contains(duplicates, r.Node) {
				duplicates = append(duplicates, r.Node)
			}
		}
		if !replied[r.Node] {
			order = append(order, r.Node)
		}
		replied[r.Node] = true
		values[r.Node] = asJSON(r)
		if !c.jsonOut {
			progress.clear()
			c.say(r)
		}
		progress.update(len(replied))
	}
	progress.done()

	outcomes := call.Outcomes()
	var missing []string
	for n, o := range outcomes {
		if o == pidbox.NoReply || o == pidbox.Unknown {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if c.jsonOut {
		out, err := marshalReplies(values)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, string(out))
	} else {
		if c.celeryKind != "" {
			c.summaryCelery(len(order))
		} else {
			fmt.Fprintf(c.stdout, "\n%d %s replied.\n", len(order), plural(len(order), "node", "nodes"))
		}
		if len(duplicates) > 0 {
			fmt.Fprintf(c.stdout, "Duplicate node names (more than one live node replied as): %s\n", strings.Join(duplicates, ", "))
		}
		for _, n := range missing {
			reason := "no reply before the deadline"
			if outcomes[n] == pidbox.Unknown {
				reason = "not known to the broker"
			}
			fmt.Fprintf(c.stdout, "No reply from: %s (%s)\n", n, reason)
		}
	}
	switch {
	case len(order) == 0:
		fmt.Fprintf(c.stderr, "controller: no nodes replied within %s\n", c.timeout)
		c.exit = exitNoReply
	case incomplete != nil || len(missing) > 0:
		c.exit = exitMissing
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// asJSON returns a reply value as JSON, whatever codec it came in.
func asJSON(r reply.Reply) json.RawMessage {
	if r.ContentType == "application/json" && json.Valid(r.Value) {
		return json.RawMessage(r.Value)
	}
	var v any
	if err := r.Decode(&v); err == nil {
		if r.ContentType == "application/json" {
			return json.RawMessage(r.Value) // with Python's NaN or Infinity
		}
		if b, err := marshalValue(v); err == nil {
			return b
		}
		b, _ := json.Marshal(fmt.Sprint(v))
		return b
	}
	b, _ := json.Marshal(map[string]string{"error": "undecodable reply"})
	return b
}

// say prints one reply the way Celery's command line does:
// "->  name: OK pong", or OK/ERROR followed by the indented value.
func (c *cli) say(r reply.Reply) {
	if c.celeryKind != "" {
		c.sayCelery(r)
		return
	}
	status, body := "OK", asJSON(r)
	if r.Err != nil {
		var re *reply.RemoteError
		if errors.As(r.Err, &re) {
			status, body = "ERROR", mustJSON(re.Message)
		}
	} else {
		var ok struct {
			OK *json.RawMessage `json:"ok"`
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) == nil && len(m) == 1 && json.Unmarshal(body, &ok) == nil && ok.OK != nil {
			body = *ok.OK
		}
	}
	name := r.Node
	if r.Duplicate {
		name += " (duplicate)"
	}
	var s string
	if json.Unmarshal(body, &s) == nil && !strings.Contains(s, "\n") {
		fmt.Fprintf(c.stdout, "->  %s: %s %s\n", name, status, s)
		return
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, body, "        ", "    ") != nil {
		pretty.Write(body)
	}
	fmt.Fprintf(c.stdout, "->  %s: %s\n        %s\n", name, status, pretty.String())
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func (c *cli) cast(ctx context.Context, method string, pairs []string) error {
	s, opts, args, err := c.prepare(ctx, pairs)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.mb.Cast(ctx, method, args, opts...); err != nil {
		return err
	}
	target := "every node"
	switch {
	case len(c.destination) > 0:
		target = strings.Join(c.destination, ", ")
	case c.pattern != "":
		target = "nodes matching " + c.pattern
	}
	if c.jsonOut {
		fmt.Fprintln(c.stdout, string(mustJSON(map[string]any{"sent": method, "to": target})))
	} else {
		fmt.Fprintf(c.stdout, "-> sent %s to %s\n", method, target)
	}
	if demo.IsMemory(demo.BrokerURL(c.broker)) {
		time.Sleep(100 * time.Millisecond) // let the in-process fleet act before it stops
	}
	return nil
}

func (c *cli) nodes(ctx context.Context) error {
	if _, err := c.options(); err != nil {
		return err
	}
	s, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	all, err := s.mb.Nodes(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, n := range all {
		ok := len(c.destination) == 0 || slices.Contains(c.destination, n)
		if ok && c.pattern != "" {
			ok, err = pidbox.Match(n, c.pattern, c.matcher)
			if err != nil {
				return usagef("--pattern: %v", err)
			}
		}
		if ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if c.jsonOut {
		out := map[string]any{}
		for _, n := range names {
			out[n] = map[string]string{"queue": n + "." + s.mb.Namespace() + ".pidbox"}
		}
		fmt.Fprintln(c.stdout, string(mustJSON(out)))
	} else {
		for _, n := range names {
			fmt.Fprintf(c.stdout, "->  %s\n", n)
		}
		fmt.Fprintf(c.stdout, "\n%d %s known.\n", len(names), plural(len(names), "node", "nodes"))
	}
	if len(names) == 0 {
		c.exit = exitNoReply
	}
	return nil
}

// progress shows "k/n replied" on a terminal.
type progress struct {
	w     io.Writer
	total int
	on    bool
}

func newProgress(w io.Writer, total int) *progress {
	f, ok := w.(*os.File)
	on := false
	if ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			on = true
		}
	}
	return &progress{w: w, total: total, on: on}
}

func (p *progress) update(n int) {
	if !p.on {
		return
	}
	if p.total > 0 {
		fmt.Fprintf(p.w, "\r%d/%d replied", n, p.total)
	} else {
		fmt.Fprintf(p.w, "\r%d replied", n)
	}
}

func (p *progress) clear() {
	if p.on {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func (p *progress) done() { p.clear() }
