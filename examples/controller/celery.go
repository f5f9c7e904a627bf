package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gopidbox/pidbox/celery"
	"github.com/gopidbox/pidbox/examples/internal/demo"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/reply"
	"github.com/spf13/cobra"
)

// celeryCommands are the commands that mirror Celery's command line:
// `control ACTION [ARGS]`, `status` and `events` (`inspect ACTION [ARGS]`
// is in cli.go and runs celeryCall too).
func (c *cli) celeryCommands() []*cobra.Command {
	var dump bool
	var duration time.Duration
	ev := &cobra.Command{Use: "events", Short: "Watch the fleet's worker events (heartbeats), like `celery events`", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.events(cmd.Context(), dump, duration) }}
	ev.Flags().BoolVar(&dump, "dump", false, "print every event, as `celery events --dump` does")
	ev.Flags().DurationVar(&duration, "duration", 0, "stop after this long (default: until interrupted)")
	return []*cobra.Command{
		{Use: "control ACTION [ARGS ...]", Short: "Celery's control commands: revoke, rate_limit, pool_grow, add_consumer, ...", Args: methodArgs,
			Long: "Runs a command with Celery's positional arguments, as `celery control` does:\n\n" + vocabulary("control"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return c.celeryCall(cmd.Context(), "control", args[0], args[1:])
			}},
		{Use: "status", Short: "List the workers that are online, like `celery status`", Args: noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return c.celeryCall(cmd.Context(), "status", "ping", nil) }},
		ev,
	}
}

// vocabulary lists Celery's commands of a kind with their arguments, for
// help texts.
func vocabulary(kind string) string {
	var b strings.Builder
	for _, cmd := range celery.Commands() {
		if cmd.Kind == kind && !cmd.Hidden {
			fmt.Fprintf(&b, "  %-16s %-44s %s\n", cmd.Name, cmd.Signature, cmd.Help)
		}
	}
	return b.String()
}

// celeryArguments turns a command line into a command's keyword arguments
// the way Celery's command line does (celery/bin/control.py): positional
// values take the command's argument names in order, converted to their
// types, and the rest go to its variadic argument as a list. Methods
// outside Celery's vocabulary take key=value pairs, as `call` does.
func (c *cli) celeryArguments(action string, rest []string) (map[string]any, error) {
	cmd, known := celery.Lookup(action)
	if !known {
		return c.arguments(rest)
	}
	args, err := c.arguments(nil) // --args
	if err != nil {
		return nil, err
	}
	i := 0
	for ; i < len(rest) && i < len(cmd.Args); i++ {
		a := cmd.Args[i]
		v, err := convert(a.Type, rest[i])
		if err != nil {
			return nil, usagef("%s: argument %s: %v", action, a.Name, err)
		}
		args[a.Name] = v
	}
	switch {
	case cmd.Variadic != "":
		args[cmd.Variadic] = append([]string{}, rest[i:]...)
	case i < len(rest):
		return nil, usagef("command %q takes arguments: %s", action, cmd.Signature)
	}
	return args, nil
}

// convert applies a Celery argument type to a command-line value.
func convert(typ, v string) (any, error) {
	switch typ {
	case "int":
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", v)
		}
		return n, nil
	case "float":
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", v)
		}
		return f, nil
	case "bool": // celery.utils.serialization.strtobool
		switch strings.ToLower(v) {
		case "true", "yes", "1", "on", "y", "t":
			return true, nil
		case "false", "no", "0", "off", "n", "f":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not a boolean", v)
	}
	return v, nil
}

// celeryCall runs an inspect or control command, or status, and prints the
// replies as Celery's command line does.
func (c *cli) celeryCall(ctx context.Context, kind, action string, rest []string) error {
	opts, err := c.options()
	if err != nil {
		return err
	}
	args, err := c.celeryArguments(action, rest)
	if err != nil {
		return err
	}
	s, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	c.celeryKind = kind
	return c.gather(ctx, s.mb, action, args, opts)
}

// sayCelery prints one reply as Celery's _say_remote_command_reply does:
// "->  node: OK" or "ERROR", then the reply indented (except for status).
func (c *cli) sayCelery(r reply.Reply) {
	// An error reply's value is {"error": text}, which pretty shows.
	status, body := pretty(decodeJSON(asJSON(r)))
	name := r.Node
	if r.Duplicate {
		name += " (duplicate)"
	}
	fmt.Fprintf(c.stdout, "->  %s: %s\n", name, status)
	if body != "" && c.celeryKind != "status" {
		fmt.Fprintln(c.stdout, indent(body, 4))
	}
}

// summaryCelery is the line after the replies: Celery prints "N nodes
// online." after inspect and status, nothing after control.
func (c *cli) summaryCelery(n int) {
	if c.celeryKind != "control" {
		fmt.Fprintf(c.stdout, "\n%d %s online.\n", n, plural(n, "node", "nodes"))
	}
}

func decodeJSON(b []byte) any {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		// Python's NaN and Infinity, as in Celery's conf.
		v = nil
		if wire.UnmarshalReply(wire.JSON{}, b, &v) != nil {
			return string(b)
		}
	}
	return v
}

// pretty is Celery's CLIContext.pretty: a status and the text of a value.
func pretty(v any) (string, string) {
	switch x := v.(type) {
	case []any:
		if len(x) == 0 {
			return "OK", "- empty -"
		}
		lines := make([]string, len(x))
		for i, e := range x {
			lines[i] = "* " + pyStr(e)
		}
		return "OK", strings.Join(lines, "\n")
	case map[string]any:
		if okv, has := x["ok"]; has {
			_, t := pretty(okv)
			return "OK", indent(t, 4)
		}
		if errv, has := x["error"]; has {
			_, t := pretty(errv)
			return "ERROR", indent(t, 4)
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "    ")
		if enc.Encode(x) != nil { // ends in a newline, as Celery's highlighted JSON does
			return "OK", string(pyDumps(nil, x, "    ", "")) + "\n"
		}
		return "OK", b.String()
	case string:
		return "OK", x
	}
	return "OK", pyStr(v)
}

// indent is celery.utils.text.indent: every line of t prefixed, a final
// empty line included.
func indent(t string, n int) string {
	lines := strings.Split(t, "\n")
	pad := strings.Repeat(" ", n)
	for i, l := range lines {
		lines[i] = pad + l
	}
	return strings.Join(lines, "\n")
}

// pyStr formats a decoded JSON value as Python's str() would.
func pyStr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case string:
		return x
	case json.Number:
		return x.String()
	case float64: // Python's repr of a float: 2.0, 0.25, inf, nan
		switch {
		case math.IsNaN(x):
			return "nan"
		case math.IsInf(x, 1):
			return "inf"
		case math.IsInf(x, -1):
			return "-inf"
		}
		f := strconv.FormatFloat(x, 'f', -1, 64)
		if !strings.ContainsAny(f, ".eEIN") {
			f += ".0"
		}
		return f
	case []any, map[string]any:
		return pyRepr(v)
	}
	return fmt.Sprint(v) // other numbers, as msgpack decodes them
}

func pyRepr(v any) string {
	switch x := v.(type) {
	case string:
		return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`, "\n", `\n`).Replace(x) + "'"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = pyRepr(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		keys := slices.Sorted(maps.Keys(x))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = pyRepr(k) + ": " + pyRepr(x[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return pyStr(v)
}

// worker is what the events view knows of one worker.
type worker struct {
	name               string
	offline            bool
	seen               time.Time // when its last event arrived
	freq               float64
	active, processed  string
	loadavg, software  string
	heartbeats, events int
}

// events watches Celery's worker events on the broker: a compact table of
// the fleet's heartbeats (redrawn every second on a terminal, printed at
// the end otherwise), or every event with --dump (JSON lines with --json).
func (c *cli) events(ctx context.Context, dump bool, duration time.Duration) error {
	if duration < 0 {
		return usagef("--duration must not be negative, got %s", duration)
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	demo.RouteRedisLogs(log)
	url := demo.BrokerURL(c.broker)
	octx, cancel := context.WithTimeout(ctx, c.timeout)
	tr, err := demo.Open(octx, url, log)
	cancel()
	if err != nil {
		return err
	}
	defer tr.Close()
	if duration > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, duration)
		defer stop()
	}
	ctx, stop := signalContext(ctx)
	defer stop()

	evs := make(chan celery.Event, 1024)
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	errc := make(chan error, 1)
	go func() {
		errc <- celery.Receive(rctx, tr, celery.ReceiveOptions{Logger: log}, func(e celery.Event) {
			select {
			case evs <- e:
			default: // a slow terminal drops events rather than memory growing
			}
		})
	}()
	if !dump && !c.jsonOut {
		fmt.Fprintf(c.stderr, "-> events: watching %s (Ctrl-C to stop)\n", demo.Redact(url))
	}
	live := isTerminal(c.stdout) && !dump && !c.jsonOut
	workers := map[string]*worker{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case e := <-evs:
			c.onEvent(workers, e, dump)
		case <-tick.C:
			if live {
				fmt.Fprint(c.stdout, "\033[H\033[2J")
				c.table(c.stdout, workers)
			}
		case <-ctx.Done():
			rcancel()
			if err := <-errc; err != nil {
				return err
			}
			if !dump && !c.jsonOut {
				c.table(c.stdout, workers)
			}
			return nil
		case err := <-errc:
			return err
		}
	}
}

func (c *cli) onEvent(workers map[string]*worker, e celery.Event, dump bool) {
	host := e.Hostname()
	typ := e.Type()
	if dump {
		if c.jsonOut {
			b, _ := json.Marshal(e)
			fmt.Fprintln(c.stdout, string(b))
		} else {
			fmt.Fprintln(c.stdout, dumpLine(e))
		}
	}
	if !strings.HasPrefix(typ, "worker-") || host == "" {
		return
	}
	w := workers[host]
	if w == nil {
		w = &worker{name: host}
		workers[host] = w
	}
	w.events++
	w.seen = time.Now()
	w.offline = typ == "worker-offline"
	if typ == "worker-heartbeat" {
		w.heartbeats++
	}
	if f := e.Float("freq"); f > 0 {
		w.freq = f
	}
	if _, ok := e["active"]; ok {
		w.active = pyStr(e["active"])
		w.processed = pyStr(e["processed"])
	}
	if la, ok := e["loadavg"].([]any); ok {
		parts := make([]string, len(la))
		for i, v := range la {
			parts[i] = pyStr(v)
		}
		w.loadavg = strings.Join(parts, " ")
	}
	if id, ok := e["sw_ident"].(string); ok {
		w.software = fmt.Sprintf("%s %s (%s)", id, pyStr(e["sw_ver"]), pyStr(e["sw_sys"]))
	}
}

// status is the worker's state as Celery's events.State judges it: alive
// while heartbeats come within twice their frequency.
func (w *worker) status(now time.Time) string {
	switch {
	case w.offline:
		return "offline"
	case w.freq > 0 && now.Sub(w.seen) > time.Duration(2*w.freq*float64(time.Second)):
		return "lost"
	}
	return "online"
}

// table prints the compact view: one line per worker.
func (c *cli) table(out io.Writer, workers map[string]*worker) {
	names := slices.Sorted(maps.Keys(workers))
	now := time.Now()
	fmt.Fprintf(out, "%-28s %-8s %9s %5s %6s %9s %-17s %s\n", "WORKER", "STATUS", "HEARTBEAT", "FREQ", "ACTIVE", "PROCESSED", "LOADAVG", "SOFTWARE")
	for _, n := range names {
		w := workers[n]
		fmt.Fprintf(out, "%-28s %-8s %8.1fs %5s %6s %9s %-17s %s\n", w.name, w.status(now), now.Sub(w.seen).Seconds(),
			strconv.FormatFloat(w.freq, 'f', -1, 64), w.active, w.processed, w.loadavg, w.software)
	}
	online := 0
	for _, w := range workers {
		if w.status(now) == "online" {
			online++
		}
	}
	fmt.Fprintf(out, "\n%d %s online, %d known.\n", online, plural(online, "worker", "workers"), len(workers))
}

var humanTypes = map[string]string{"worker-offline": "shutdown", "worker-online": "started", "worker-heartbeat": "heartbeat"}

// dumpLine formats an event as `celery events --dump` does.
func dumpLine(e celery.Event) string {
	ts := time.Unix(0, int64(e.Float("timestamp")*1e9)).UTC().Format("2006-01-02 15:04:05.000000")
	typ := strings.ToLower(e.Type())
	human, ok := humanTypes[typ]
	if !ok {
		human = strings.ReplaceAll(typ, "-", " ")
	}
	keys := make([]string, 0, len(e))
	for k := range e {
		if k != "timestamp" && k != "type" && k != "hostname" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	fields := make([]string, len(keys))
	for i, k := range keys {
		fields[i] = k + "=" + pyStr(e[k])
	}
	sep := ""
	if len(fields) > 0 {
		sep = ":"
	}
	return fmt.Sprintf("%s [%s] %s%s %s", e.Hostname(), ts, human, sep, strings.Join(fields, ", "))
}

// signalContext ends on Ctrl-C or SIGTERM, so the events view can print
// its last table.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
