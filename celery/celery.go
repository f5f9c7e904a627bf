// Package celery makes a Go service a full member of a Celery control
// plane, so that `celery inspect`, `celery control`, `celery events` and
// Flower see it as they see a Celery worker. Register serves Celery 5.2's
// whole remote-control vocabulary on a pidbox Node, with Celery's argument
// names and reply shapes; an Emitter publishes Celery's worker events:
//
//	em, err := celery.NewEmitter(tr, celery.EmitterOptions{Hostname: node.Hostname(), Clock: mb.Clock()})
//	state := celery.Register(node, celery.Options{Broker: celery.BrokerFromURL(url), Events: em})
//	go em.Run(ctx) // worker-online, heartbeats, worker-offline
//
// Options connect the commands to the service (its tasks, requests, pool);
// Register's documentation says what each command answers. It is opt-in:
// the pidbox core never imports it.
package celery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopidbox/pidbox"
)

// ErrUnsupported is the error reply of the commands a Go worker cannot
// carry out (objgraph, pool_restart) and of hook commands whose hook is
// not set.
var ErrUnsupported = errors.New("not supported by this worker")

// Requests lists the task requests a Go task runner holds, for active,
// reserved, scheduled and query_task.
type Requests interface {
	// Active lists the requests being executed.
	Active() []Request
	// Reserved lists the requests received and waiting to run.
	Reserved() []Request
	// Scheduled lists the requests waiting for their ETA.
	Scheduled() []Scheduled
}

// Revocation is what revoke and terminate ask of the service.
type Revocation struct {
	// IDs are the task ids.
	IDs []string
	// Terminate asks to stop the tasks if they are running.
	Terminate bool
	// Signal is the signal name Celery would send ("SIGTERM" by default)
	// when Terminate is set.
	Signal string
}

// Pool is a pool of task executors that pool_grow and pool_shrink resize.
type Pool interface {
	Grow(ctx context.Context, n int) error
	Shrink(ctx context.Context, n int) error
}

// Consumers lets add_consumer and cancel_consumer change the task queues
// the service consumes.
type Consumers interface {
	AddConsumer(ctx context.Context, q Queue) error
	CancelConsumer(ctx context.Context, queue string) error
}

// Events is what enable_events, disable_events and heartbeat act on; an
// *Emitter is one.
type Events interface {
	// EnableTaskEvents turns task events on and reports whether they were
	// off.
	EnableTaskEvents() bool
	// DisableTaskEvents turns task events off and reports whether they
	// were on.
	DisableTaskEvents() bool
	// Heartbeat sends a worker-heartbeat now.
	Heartbeat(ctx context.Context) error
}

// Options configure Register. The zero value works: a Go service with no
// tasks, no pool and no events.
type Options struct {
	// Broker is the "broker" entry of stats; see BrokerFromURL.
	Broker Broker
	// Concurrency reports the pool's max-concurrency for stats. Default
	// runtime.GOMAXPROCS(0).
	Concurrency func() int
	// PrefetchCount is stats' prefetch_count.
	PrefetchCount int
	// Settings are the service's settings, for conf and report. Values
	// under keys that look secret (as Celery judges: API, TOKEN, KEY,
	// SECRET, PASS, SIGNATURE, DATABASE) are replaced by "********", and
	// passwords in URLs under keys containing "url" are masked.
	Settings map[string]any
	// Software names the service in report, such as "billing:1.4".
	Software string
	// Queues are the task queues reported by active_queues at start.
	Queues []Queue

	// Tasks lists the task types the service runs (registered,
	// rate_limit, time_limit).
	Tasks func() []Task
	// Requests lists the requests it holds (active, reserved, scheduled,
	// query_task).
	Requests Requests
	// Totals counts the tasks processed, by name (stats' total).
	Totals func() map[string]int64

	// Revoke acts on revoke and terminate; for terminate it returns the
	// ids it terminated. The ids are kept as revoked whatever it does.
	Revoke func(ctx context.Context, r Revocation) (terminated []string, err error)
	// RateLimit applies a new rate limit ("10/m"; "" disables it).
	RateLimit func(ctx context.Context, task, rate string) error
	// TimeLimit applies new time limits in seconds (0 means none).
	TimeLimit func(ctx context.Context, task string, soft, hard float64) error
	// Pool serves pool_grow and pool_shrink.
	Pool Pool
	// Autoscale serves autoscale; nil arguments are not given. It returns
	// the new maximum and minimum.
	Autoscale func(ctx context.Context, max, min *int) (newMax, newMin int, err error)
	// Consumers serves add_consumer and cancel_consumer.
	Consumers Consumers
	// Events serves enable_events, disable_events and heartbeat.
	Events Events
	// Shutdown stops the service on the shutdown command. Default: the
	// node's Shutdown.
	Shutdown func(msg string)

	// MaxRevoked and RevokedExpires bound the revoked ids kept. Defaults
	// 50,000 and 3 hours, as Celery.
	MaxRevoked     int
	RevokedExpires time.Duration
	// Logger receives what the commands log. Nil means slog.Default().
	Logger *slog.Logger
}

// State is what Register keeps for a node: revoked ids, changed limits,
// consumed queues.
type State struct {
	opts    Options
	node    *pidbox.Node
	log     *slog.Logger
	started time.Time
	revoked *revokedSet

	mu         sync.Mutex
	rateLimits map[string]string
	timeLimits map[string][2]float64
	queues     []Queue
	taskEvents bool
	memSamples []string
}

// Register serves Celery's whole remote-control vocabulary on node (every
// command of celery/worker/control.py), replacing pidbox's built-in ping,
// clock, hello, stats and shutdown with Celery-shaped ones. It returns the
// state the commands keep.
//
// What a Go service does for each command:
//
//   - ping, clock, hello, stats (Celery's shape: total, pid, clock, uptime,
//     pool, broker, prefetch_count, rusage), report, conf (the service's
//     own settings, secrets redacted), active_queues, registered (the tasks
//     Options.Tasks reports, then the service's own commands as
//     "name [type=control]"), memsample, memdump: answered from the
//     process and Options.
//   - active, reserved, scheduled, query_task: from Options.Requests;
//     empty without it.
//   - revoke, terminate: the ids are kept (`revoked` lists them, `hello`
//     shares them, IsRevoked tells the service) and Options.Revoke acts.
//   - rate_limit, time_limit: known tasks (Options.Tasks) get the new
//     limits, which `registered` shows and Options.RateLimit or
//     Options.TimeLimit act on; unknown tasks get Celery's "unknown task".
//   - pool_grow, pool_shrink, autoscale, add_consumer, cancel_consumer:
//     through their hooks, replying Celery's texts; without a hook, an
//     error reply saying the worker has no such thing (autoscale's is
//     Celery's own "ValueError('Autoscale not enabled')").
//   - enable_events, disable_events, heartbeat: through Options.Events
//     (an Emitter), as Celery's worker does.
//   - election: null, as a Celery worker started without gossip replies.
//   - shutdown: stops the node (Options.Shutdown), no reply.
//   - objgraph and pool_restart graph Python objects and reload Python
//     modules: a deliberate error reply wrapping ErrUnsupported.
func Register(node *pidbox.Node, opts Options) *State {
	if opts.Concurrency == nil {
		opts.Concurrency = func() int { return runtime.GOMAXPROCS(0) }
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &State{
		opts:       opts,
		node:       node,
		log:        opts.Logger,
		started:    time.Now(),
		revoked:    newRevokedSet(opts.MaxRevoked, opts.RevokedExpires),
		rateLimits: map[string]string{},
		timeLimits: map[string][2]float64{},
		queues:     slices.Clone(opts.Queues),
	}
	handlers := map[string]pidbox.Handler{
		"report":          pidbox.HandlerFunc(s.report),
		"conf":            pidbox.HandlerFunc(s.conf),
		"query_task":      pidbox.HandlerFunc(s.queryTask),
		"revoke":          pidbox.HandlerFunc(s.revoke),
		"terminate":       pidbox.HandlerFunc(s.terminate),
		"rate_limit":      pidbox.HandlerFunc(s.rateLimit),
		"time_limit":      pidbox.HandlerFunc(s.timeLimit),
		"clock":           pidbox.HandlerFunc(s.clock),
		"election":        pidbox.HandlerFunc(election),
		"enable_events":   pidbox.HandlerFunc(s.enableEvents),
		"disable_events":  pidbox.HandlerFunc(s.disableEvents),
		"heartbeat":       pidbox.HandlerFunc(s.heartbeat),
		"hello":           pidbox.HandlerFunc(s.hello),
		"ping":            pidbox.HandlerFunc(func(context.Context, *pidbox.Request) (any, error) { return pidbox.OK{OK: "pong"}, nil }),
		"stats":           pidbox.HandlerFunc(func(_ context.Context, r *pidbox.Request) (any, error) { return s.Stats(), nil }),
		"scheduled":       pidbox.HandlerFunc(s.scheduled),
		"reserved":        pidbox.HandlerFunc(s.reserved),
		"active":          pidbox.HandlerFunc(s.active),
		"revoked":         pidbox.HandlerFunc(func(context.Context, *pidbox.Request) (any, error) { return s.Revoked(), nil }),
		"registered":      pidbox.HandlerFunc(s.registered),
		"objgraph":        unsupported("objgraph", "it graphs Python objects"),
		"memsample":       pidbox.HandlerFunc(s.memsample),
		"memdump":         pidbox.HandlerFunc(s.memdump),
		"pool_grow":       pidbox.HandlerFunc(s.poolGrow),
		"pool_shrink":     pidbox.HandlerFunc(s.poolShrink),
		"pool_restart":    unsupported("pool_restart", "it reloads Python modules in a process pool"),
		"autoscale":       pidbox.HandlerFunc(s.autoscale),
		"shutdown":        pidbox.HandlerFunc(s.shutdown),
		"add_consumer":    pidbox.HandlerFunc(s.addConsumer),
		"cancel_consumer": pidbox.HandlerFunc(s.cancelConsumer),
		"active_queues":   pidbox.HandlerFunc(s.activeQueues),
	}
	for _, c := range Commands() {
		h := handlers[c.Name]
		if h == nil {
			panic("celery: no handler for " + c.Name) // a programming error, caught by the tests
		}
		node.Register(c.Name, h)
		if c.Alias != "" {
			node.Register(c.Alias, h)
		}
	}
	return s
}

// election replies as a Celery worker without gossip does: nothing (None)
// to a well-formed request, Celery's TypeError to one without id and
// topic, which is what `celery control election` sends.
func election(_ context.Context, r *pidbox.Request) (any, error) {
	var a struct {
		ID    *string `json:"id"`
		Topic *string `json:"topic"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	var missing []string
	if a.ID == nil {
		missing = append(missing, "'id'")
	}
	if a.Topic == nil {
		missing = append(missing, "'topic'")
	}
	switch len(missing) {
	case 1:
		return nil, fmt.Errorf(`TypeError("election() missing 1 required positional argument: %s")`, missing[0])
	case 2:
		return nil, errors.New(`TypeError("election() missing 2 required positional arguments: 'id' and 'topic'")`)
	}
	return nil, nil
}

func unsupported(method, why string) pidbox.Handler {
	return pidbox.HandlerFunc(func(context.Context, *pidbox.Request) (any, error) {
		return nil, fmt.Errorf("%s: %w: %s", method, ErrUnsupported, why)
	})
}

// errorReply is Celery's nok(): {"error": text}, a reply rather than an
// exception.
type errorReply struct {
	Error string `json:"error"`
}

func ok(text string) pidbox.OK { return pidbox.OK{OK: text} }

// IsRevoked reports whether a task id was revoked (and has not expired).
func (s *State) IsRevoked(id string) bool { return s.revoked.contains(id) }

// Revoked lists the revoked task ids, oldest first.
func (s *State) Revoked() []string { return s.revoked.list(time.Now()) }

// RateLimit returns a task's rate limit: the last one set by rate_limit,
// else the one Options.Tasks reports.
func (s *State) RateLimit(task string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.rateLimits[task]; ok {
		return r
	}
	if t, ok := s.task(task); ok {
		return t.RateLimit
	}
	return ""
}

// Queues lists the task queues active_queues reports.
func (s *State) Queues() []Queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.queues)
}

// tasks returns the tasks with the limits set remotely applied.
func (s *State) tasks() []Task {
	if s.opts.Tasks == nil {
		return nil
	}
	ts := slices.Clone(s.opts.Tasks())
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, t := range ts {
		if r, ok := s.rateLimits[t.Name]; ok {
			ts[i].RateLimit = r
		}
		if l, ok := s.timeLimits[t.Name]; ok {
			ts[i].SoftTimeLimit, ts[i].TimeLimit = l[0], l[1]
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	return ts
}

// task finds a task by name in Options.Tasks.
func (s *State) task(name string) (Task, bool) {
	if s.opts.Tasks == nil {
		return Task{}, false
	}
	for _, t := range s.opts.Tasks() {
		if t.Name == name {
			return t, true
		}
	}
	return Task{}, false
}

// Stats returns the reply of stats.
func (s *State) Stats() Stats {
	total := map[string]int64{}
	if s.opts.Totals != nil {
		for k, v := range s.opts.Totals() {
			total[k] = v
		}
	}
	return Stats{
		Total:  total,
		PID:    os.Getpid(),
		Clock:  strconv.FormatUint(s.node.Mailbox().Clock().Value(), 10),
		Uptime: int64(time.Since(s.started).Round(time.Second) / time.Second),
		Pool: PoolInfo{
			MaxConcurrency: s.opts.Concurrency(),
			Processes:      []int{os.Getpid()},
			Timeouts:       []float64{},
		},
		Broker:        s.opts.Broker,
		PrefetchCount: s.opts.PrefetchCount,
		Rusage:        rusage(),
	}
}

func (s *State) clock(_ context.Context, r *pidbox.Request) (any, error) {
	return pidbox.ClockReply{Clock: r.Node.Mailbox().Clock().Value()}, nil
}

// idList reads an argument Celery sends as one id or a list of them
// (maybe_list).
func idList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func (s *State) hello(_ context.Context, r *pidbox.Request) (any, error) {
	var a struct {
		FromNode string `json:"from_node"`
		Revoked  any    `json:"revoked"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if a.FromNode == r.Node.Hostname() {
		return nil, pidbox.ErrNoReply // no reply to itself, as Celery
	}
	now := time.Now()
	switch rv := a.Revoked.(type) {
	case map[string]any:
		ids := make([]string, 0, len(rv))
		for id := range rv {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		s.revoked.add(now, ids...)
	default:
		s.revoked.add(now, idList(rv)...)
	}
	return struct {
		Revoked map[string][2]any `json:"revoked"`
		Clock   uint64            `json:"clock"`
	}{s.revoked.data(now), r.Node.Mailbox().Clock().Forward()}, nil
}

func (s *State) requests() (active, reserved []Request, scheduled []Scheduled) {
	if s.opts.Requests == nil {
		return nil, nil, nil
	}
	return s.opts.Requests.Active(), s.opts.Requests.Reserved(), s.opts.Requests.Scheduled()
}

func nonNil[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}

func (s *State) active(context.Context, *pidbox.Request) (any, error) {
	a, _, _ := s.requests()
	return nonNil(a), nil
}

func (s *State) reserved(context.Context, *pidbox.Request) (any, error) {
	_, r, _ := s.requests()
	return nonNil(r), nil
}

func (s *State) scheduled(context.Context, *pidbox.Request) (any, error) {
	_, _, sc := s.requests()
	return nonNil(sc), nil
}

func (s *State) queryTask(_ context.Context, r *pidbox.Request) (any, error) {
	var a struct {
		IDs any `json:"ids"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	active, reserved, scheduled := s.requests()
	out := map[string][2]any{}
	for _, id := range idList(a.IDs) {
		for _, q := range active {
			if q.ID == id {
				out[id] = [2]any{"active", q}
			}
		}
		if _, found := out[id]; found {
			continue
		}
		for _, q := range reserved {
			if q.ID == id {
				out[id] = [2]any{"reserved", q}
			}
		}
		for _, sc := range scheduled {
			if _, found := out[id]; !found && sc.Request.ID == id {
				out[id] = [2]any{"reserved", sc.Request}
			}
		}
	}
	return out, nil
}

type revokeArgs struct {
	TaskID    any     `json:"task_id"`
	Terminate bool    `json:"terminate"`
	Signal    *string `json:"signal"`
}

func (s *State) revoke(ctx context.Context, r *pidbox.Request) (any, error) {
	var a revokeArgs
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	return s.doRevoke(ctx, a)
}

func (s *State) terminate(ctx context.Context, r *pidbox.Request) (any, error) {
	var a revokeArgs
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	a.Terminate = true
	return s.doRevoke(ctx, a)
}

func (s *State) doRevoke(ctx context.Context, a revokeArgs) (any, error) {
	ids := slices.Compact(slices.Sorted(slices.Values(idList(a.TaskID))))
	s.revoked.add(time.Now(), ids...)
	rev := Revocation{IDs: ids, Terminate: a.Terminate}
	if a.Terminate {
		rev.Signal = "SIGTERM"
		if a.Signal != nil && *a.Signal != "" {
			rev.Signal = strings.ToUpper(*a.Signal)
			if !strings.HasPrefix(rev.Signal, "SIG") {
				rev.Signal = "SIG" + rev.Signal
			}
		}
	}
	var terminated []string
	if s.opts.Revoke != nil {
		var err error
		if terminated, err = s.opts.Revoke(ctx, rev); err != nil {
			return nil, err
		}
	}
	if a.Terminate {
		if len(terminated) == 0 {
			return ok("terminate: tasks unknown"), nil
		}
		return ok("terminate: " + strings.Join(terminated, ", ")), nil
	}
	s.log.Info("celery: tasks flagged as revoked", "ids", ids)
	return ok(fmt.Sprintf("tasks %s flagged as revoked", strings.Join(ids, ", "))), nil
}

// checkRate validates a rate limit as Celery's rate() does: "N", "N/s",
// "N/m" or "N/h".
func checkRate(r string) error {
	if r == "" {
		return nil
	}
	ops, mod, _ := strings.Cut(r, "/")
	switch mod {
	case "", "s", "m", "h":
	default:
		return fmt.Errorf("KeyError(%s)", pyRepr(mod))
	}
	if _, err := strconv.ParseFloat(strings.TrimSpace(ops), 64); err != nil {
		msg := "could not convert string to float: " + pyRepr(ops)
		return fmt.Errorf("Invalid rate limit string: ValueError(%s)", pyRepr(msg))
	}
	return nil
}

func (s *State) rateLimit(ctx context.Context, r *pidbox.Request) (any, error) {
	var a struct {
		TaskName  string `json:"task_name"`
		RateLimit any    `json:"rate_limit"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	var rate string
	switch x := a.RateLimit.(type) {
	case string:
		rate = x
	case float64:
		if x != 0 {
			rate = strconv.FormatFloat(x, 'f', -1, 64)
		}
	case int64, uint64, int8, int16, int32, uint8, uint16, uint32:
		if fmt.Sprint(x) != "0" {
			rate = fmt.Sprint(x)
		}
	}
	if err := checkRate(rate); err != nil {
		if strings.HasPrefix(err.Error(), "KeyError") {
			return nil, err
		}
		return errorReply{err.Error()}, nil
	}
	if _, known := s.task(a.TaskName); !known {
		s.log.Error("celery: rate limit attempt for unknown task", "task", a.TaskName)
		return errorReply{"unknown task"}, nil
	}
	if s.opts.RateLimit != nil {
		if err := s.opts.RateLimit(ctx, a.TaskName, rate); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	s.rateLimits[a.TaskName] = rate
	s.mu.Unlock()
	if rate == "" {
		return ok("rate limit disabled successfully"), nil
	}
	return ok("new rate limit set successfully"), nil
}

func (s *State) timeLimit(ctx context.Context, r *pidbox.Request) (any, error) {
	var a struct {
		TaskName string   `json:"task_name"`
		Soft     *float64 `json:"soft"`
		Hard     *float64 `json:"hard"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if _, known := s.task(a.TaskName); !known {
		s.log.Error("celery: time limit attempt for unknown task", "task", a.TaskName)
		return errorReply{"unknown task"}, nil
	}
	var soft, hard float64
	if a.Soft != nil {
		soft = *a.Soft
	}
	if a.Hard != nil {
		hard = *a.Hard
	}
	if s.opts.TimeLimit != nil {
		if err := s.opts.TimeLimit(ctx, a.TaskName, soft, hard); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	s.timeLimits[a.TaskName] = [2]float64{soft, hard}
	s.mu.Unlock()
	return ok("time limits set successfully"), nil
}

// defaultTaskInfo is Celery's DEFAULT_TASK_INFO_ITEMS.
var defaultTaskInfo = [...]string{"exchange", "routing_key", "rate_limit"}

func (s *State) registered(_ context.Context, r *pidbox.Request) (any, error) {
	var a struct {
		TaskInfoItems any `json:"taskinfoitems"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	items := idList(a.TaskInfoItems)
	if len(items) == 0 {
		items = defaultTaskInfo[:]
	}
	out := []string{}
	for _, t := range s.tasks() {
		info := t.info()
		var fields []string
		for _, k := range items {
			if v, ok := info[k]; ok && !slices.Contains(fields, k+"="+v) {
				fields = append(fields, k+"="+v)
			}
		}
		if len(fields) == 0 {
			out = append(out, t.Name)
		} else {
			out = append(out, t.Name+" ["+strings.Join(fields, " ")+"]")
		}
	}
	for _, m := range r.Node.Methods() {
		// pidbox's own commands (pidbox_stats) are not the service's.
		if _, celery := Lookup(m); !celery && !strings.HasPrefix(m, "pidbox_") {
			out = append(out, m+" [type=control]")
		}
	}
	return out, nil
}

func (s *State) enableEvents(context.Context, *pidbox.Request) (any, error) {
	changed := false
	if s.opts.Events != nil {
		changed = s.opts.Events.EnableTaskEvents()
	} else {
		s.mu.Lock()
		changed, s.taskEvents = !s.taskEvents, true
		s.mu.Unlock()
	}
	if changed {
		s.log.Info("celery: events of group {task} enabled by remote")
		return ok("task events enabled"), nil
	}
	return ok("task events already enabled"), nil
}

func (s *State) disableEvents(context.Context, *pidbox.Request) (any, error) {
	changed := false
	if s.opts.Events != nil {
		changed = s.opts.Events.DisableTaskEvents()
	} else {
		s.mu.Lock()
		changed, s.taskEvents = s.taskEvents, false
		s.mu.Unlock()
	}
	if changed {
		s.log.Info("celery: events of group {task} disabled by remote")
		return ok("task events disabled"), nil
	}
	return ok("task events already disabled"), nil
}

func (s *State) heartbeat(ctx context.Context, _ *pidbox.Request) (any, error) {
	if s.opts.Events != nil {
		if err := s.opts.Events.Heartbeat(ctx); err != nil {
			s.log.Warn("celery: heartbeat requested by remote not sent", "err", err)
		}
	}
	return nil, nil // Celery's heartbeat replies None
}

func (s *State) memsample(context.Context, *pidbox.Request) (any, error) {
	n, ok := rss()
	if !ok {
		return nil, nil // Celery without psutil replies None
	}
	v := humanBytes(n)
	s.mu.Lock()
	if len(s.memSamples) >= 1000 {
		s.memSamples = s.memSamples[1:]
	}
	s.memSamples = append(s.memSamples, v)
	s.mu.Unlock()
	return v, nil
}

func (s *State) memdump(_ context.Context, r *pidbox.Request) (any, error) {
	a := struct {
		Samples int `json:"samples"`
	}{Samples: 10}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if _, ok := rss(); !ok {
		return "- rss: (psutil not installed).\n", nil
	}
	s.mu.Lock()
	prev := s.memSamples
	if a.Samples >= 0 && len(prev) > a.Samples {
		prev = prev[len(prev)-a.Samples:]
	}
	s.memSamples = nil
	s.mu.Unlock()
	runtime.GC() // as Celery's gc.collect()
	after, _ := rss()
	var b strings.Builder
	if len(prev) > 0 {
		b.WriteString("- rss (sample):\n")
		for _, m := range prev {
			fmt.Fprintf(&b, "-    > %s,\n", m)
		}
	}
	fmt.Fprintf(&b, "- rss (end): %s.\n", humanBytes(after))
	return b.String(), nil
}

func (s *State) poolResize(ctx context.Context, r *pidbox.Request, grow bool) (any, error) {
	a := struct {
		N int `json:"n"`
	}{N: 1}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if s.opts.Pool == nil {
		return nil, fmt.Errorf("%s: %w: the worker has no resizable pool", r.Method, ErrUnsupported)
	}
	if grow {
		if err := s.opts.Pool.Grow(ctx, a.N); err != nil {
			return nil, err
		}
		return ok("pool will grow"), nil
	}
	if err := s.opts.Pool.Shrink(ctx, a.N); err != nil {
		return nil, err
	}
	return ok("pool will shrink"), nil
}

func (s *State) poolGrow(ctx context.Context, r *pidbox.Request) (any, error) {
	return s.poolResize(ctx, r, true)
}

func (s *State) poolShrink(ctx context.Context, r *pidbox.Request) (any, error) {
	return s.poolResize(ctx, r, false)
}

func (s *State) autoscale(ctx context.Context, r *pidbox.Request) (any, error) {
	var a struct {
		Max *int `json:"max"`
		Min *int `json:"min"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if s.opts.Autoscale == nil {
		return nil, errors.New("ValueError('Autoscale not enabled')")
	}
	mx, mn, err := s.opts.Autoscale(ctx, a.Max, a.Min)
	if err != nil {
		return nil, err
	}
	return ok(fmt.Sprintf("autoscale now max=%d min=%d", mx, mn)), nil
}

func (s *State) shutdown(_ context.Context, r *pidbox.Request) (any, error) {
	a := struct {
		Msg string `json:"msg"`
	}{Msg: "Got shutdown from remote"}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	s.log.Warn("celery: " + a.Msg)
	if s.opts.Shutdown != nil {
		s.opts.Shutdown(a.Msg)
	} else {
		r.Node.Shutdown()
	}
	return nil, pidbox.ErrNoReply
}

func (s *State) addConsumer(ctx context.Context, r *pidbox.Request) (any, error) {
	var a struct {
		Queue        string `json:"queue"`
		Exchange     string `json:"exchange"`
		ExchangeType string `json:"exchange_type"`
		RoutingKey   string `json:"routing_key"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if a.Queue == "" {
		return nil, fmt.Errorf("%w for add_consumer: no queue", pidbox.ErrBadArguments)
	}
	if s.opts.Consumers == nil {
		return nil, fmt.Errorf("add_consumer: %w: the worker consumes no task queues", ErrUnsupported)
	}
	q := NewQueue(a.Queue, a.Exchange, a.ExchangeType, a.RoutingKey)
	s.mu.Lock()
	full := len(s.queues) >= maxQueues
	s.mu.Unlock()
	if full {
		return nil, fmt.Errorf("add_consumer: the worker already consumes %d queues", maxQueues)
	}
	if err := s.opts.Consumers.AddConsumer(ctx, q); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if !slices.ContainsFunc(s.queues, func(o Queue) bool { return o.Name == q.Name }) {
		s.queues = append(s.queues, q)
	}
	s.mu.Unlock()
	return ok("add consumer " + a.Queue), nil
}

// maxQueues bounds the queues add_consumer records, so that a flood of
// commands cannot grow them without limit.
const maxQueues = 1024

func (s *State) cancelConsumer(ctx context.Context, r *pidbox.Request) (any, error) {
	var a struct {
		Queue string `json:"queue"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if s.opts.Consumers == nil {
		return nil, fmt.Errorf("cancel_consumer: %w: the worker consumes no task queues", ErrUnsupported)
	}
	if err := s.opts.Consumers.CancelConsumer(ctx, a.Queue); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.queues = slices.DeleteFunc(s.queues, func(o Queue) bool { return o.Name == a.Queue })
	s.mu.Unlock()
	return ok("no longer consuming from " + a.Queue), nil
}

func (s *State) activeQueues(context.Context, *pidbox.Request) (any, error) {
	return nonNil(s.Queues()), nil
}

// hiddenSetting is Celery's HIDDEN_SETTINGS (celery/app/utils.py). It and
// urlPassword are compiled on first use, not when a program that links
// this package starts: only inspect conf needs them.
var hiddenSetting = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`(?i)API|TOKEN|KEY|SECRET|PASS|PROFANITIES_LIST|SIGNATURE|DATABASE`)
})

// urlPassword matches the password of a URL's user info.
var urlPassword = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*:)([^@/]*)@`)
})

const mask = "********"

// redact returns settings with secrets masked as Celery masks them in its
// bug reports: values under keys matching API, TOKEN, KEY, SECRET, PASS,
// SIGNATURE or DATABASE become "********", and URLs under other keys
// lose their password. Nested maps are redacted too.
func redact(settings map[string]any) map[string]any {
	out := make(map[string]any, len(settings))
	for k, v := range settings {
		out[k] = redactValue(k, v)
	}
	return out
}

func redactValue(key string, v any) any {
	if hiddenSetting().MatchString(key) {
		return mask
	}
	switch x := v.(type) {
	case map[string]any:
		return redact(x)
	case string:
		return urlPassword().ReplaceAllString(x, "${1}"+mask+"@")
	}
	return v
}

func (s *State) conf(_ context.Context, r *pidbox.Request) (any, error) {
	// with_defaults is accepted and has no effect: a Go service has no
	// defaults apart from its settings.
	out := map[string]any{}
	for k, v := range redact(s.opts.Settings) {
		if !strings.HasPrefix(k, "__") {
			out[k] = v
		}
	}
	return out, nil
}

func (s *State) report(context.Context, *pidbox.Request) (any, error) {
	software := s.opts.Software
	if software == "" {
		software = "pidbox"
	}
	transport := s.opts.Broker.Transport
	if transport == "" {
		transport = "unknown"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nsoftware -> %s go:%s\n", software, strings.TrimPrefix(runtime.Version(), "go"))
	fmt.Fprintf(&b, "platform -> system:%s arch:%s\n", pySystem(), runtime.GOARCH)
	fmt.Fprintf(&b, "            kernel version:%s imp:%s\n", kernelRelease(), runtime.Compiler)
	fmt.Fprintf(&b, "settings -> transport:%s results:disabled\n\n", transport)
	settings := redact(s.opts.Settings)
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, pyRepr(settings[k]))
	}
	return ok(b.String()), nil
}

// pySystem is Python's platform.system(): "Linux", "Darwin", "Windows".
func pySystem() string {
	switch runtime.GOOS {
	case "darwin":
		return "Darwin"
	case "":
		return ""
	default:
		return strings.ToUpper(runtime.GOOS[:1]) + runtime.GOOS[1:]
	}
}
