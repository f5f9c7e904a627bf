package celery

// Arg is a positional argument of a command on Celery's command line: its
// keyword name on the wire and the type Celery converts it to.
type Arg struct {
	// Name is the keyword argument the value is sent as.
	Name string
	// Type is "str", "int", "float" or "bool" (Celery's strtobool).
	Type string
}

// Command describes one command of Celery's remote-control vocabulary as
// celery/worker/control.py declares it, which is what `celery inspect` and
// `celery control` turn command lines into.
type Command struct {
	// Name is the method name on the wire.
	Name string
	// Kind is "inspect" or "control".
	Kind string
	// Args are the positional arguments, in order.
	Args []Arg
	// Variadic, when not empty, is the keyword argument that takes the
	// remaining positional arguments as a list.
	Variadic string
	// Signature is Celery's usage text for the arguments.
	Signature string
	// Help is Celery's one-line description.
	Help string
	// Hidden commands are not offered on Celery's command line (hello).
	Hidden bool
	// Alias is Celery's older name for the command, also served.
	Alias string
	// Supported is false for the commands a Go worker answers with a
	// deliberate error reply (objgraph, pool_restart).
	Supported bool
}

// Commands returns Celery 5.2's whole remote-control vocabulary, in the
// order celery/worker/control.py declares it. Register serves every one.
func Commands() []Command {
	str := func(n string) Arg { return Arg{Name: n, Type: "str"} }
	return []Command{
		{Name: "report", Kind: "inspect", Help: "Information about Celery installation for bug reports.", Supported: true},
		{Name: "conf", Kind: "inspect", Alias: "dump_conf", Args: []Arg{{Name: "with_defaults", Type: "bool"}}, Signature: "[include_defaults=False]", Help: "List configuration.", Supported: true},
		{Name: "query_task", Kind: "inspect", Variadic: "ids", Signature: "[id1 [id2 [... [idN]]]]", Help: "Query for task information by id.", Supported: true},
		{Name: "revoke", Kind: "control", Variadic: "task_id", Signature: "[id1 [id2 [... [idN]]]]", Help: "Revoke task by task id (or list of ids).", Supported: true},
		{Name: "terminate", Kind: "control", Args: []Arg{str("signal")}, Variadic: "task_id", Signature: "<signal> [id1 [id2 [... [idN]]]]", Help: "Terminate task by task id (or list of ids).", Supported: true},
		{Name: "rate_limit", Kind: "control", Args: []Arg{str("task_name"), str("rate_limit")}, Signature: "<task_name> <rate_limit (e.g., 5/s | 5/m | 5/h)>", Help: "Tell worker(s) to modify the rate limit for a task by type.", Supported: true},
		{Name: "time_limit", Kind: "control", Args: []Arg{str("task_name"), {Name: "soft", Type: "float"}, {Name: "hard", Type: "float"}}, Signature: "<task_name> <soft_secs> [hard_secs]", Help: "Tell worker(s) to modify the time limit for task by type.", Supported: true},
		{Name: "clock", Kind: "inspect", Help: "Get current logical clock value.", Supported: true},
		{Name: "election", Kind: "control", Help: "Hold election.", Supported: true},
		{Name: "enable_events", Kind: "control", Help: "Tell worker(s) to send task-related events.", Supported: true},
		{Name: "disable_events", Kind: "control", Help: "Tell worker(s) to stop sending task-related events.", Supported: true},
		{Name: "heartbeat", Kind: "control", Help: "Tell worker(s) to send event heartbeat immediately.", Supported: true},
		{Name: "hello", Kind: "inspect", Hidden: true, Help: "Request mingle sync-data.", Supported: true},
		{Name: "ping", Kind: "inspect", Help: "Ping worker(s).", Supported: true},
		{Name: "stats", Kind: "inspect", Help: "Request worker statistics/information.", Supported: true},
		{Name: "scheduled", Kind: "inspect", Alias: "dump_schedule", Help: "List of currently scheduled ETA/countdown tasks.", Supported: true},
		{Name: "reserved", Kind: "inspect", Alias: "dump_reserved", Help: "List of currently reserved tasks, not including scheduled/active.", Supported: true},
		{Name: "active", Kind: "inspect", Alias: "dump_active", Help: "List of tasks currently being executed.", Supported: true},
		{Name: "revoked", Kind: "inspect", Alias: "dump_revoked", Help: "List of revoked task-ids.", Supported: true},
		{Name: "registered", Kind: "inspect", Alias: "dump_tasks", Variadic: "taskinfoitems", Signature: "[attr1 [attr2 [... [attrN]]]]", Help: "List of registered tasks.", Supported: true},
		{Name: "objgraph", Kind: "inspect", Args: []Arg{str("type"), {Name: "num", Type: "int"}, {Name: "max_depth", Type: "int"}}, Signature: "[object_type=Request] [num=200 [max_depth=10]]", Help: "Create graph of uncollected objects (memory-leak debugging)."},
		{Name: "memsample", Kind: "inspect", Help: "Sample current RSS memory usage.", Supported: true},
		{Name: "memdump", Kind: "inspect", Args: []Arg{{Name: "samples", Type: "int"}}, Signature: "[n_samples=10]", Help: "Dump statistics of previous memsample requests.", Supported: true},
		{Name: "pool_grow", Kind: "control", Args: []Arg{{Name: "n", Type: "int"}}, Signature: "[N=1]", Help: "Grow pool by n processes/threads.", Supported: true},
		{Name: "pool_shrink", Kind: "control", Args: []Arg{{Name: "n", Type: "int"}}, Signature: "[N=1]", Help: "Shrink pool by n processes/threads.", Supported: true},
		{Name: "pool_restart", Kind: "control", Help: "Restart execution pool."},
		{Name: "autoscale", Kind: "control", Args: []Arg{{Name: "max", Type: "int"}, {Name: "min", Type: "int"}}, Signature: "[max [min]]", Help: "Modify autoscale settings.", Supported: true},
		{Name: "shutdown", Kind: "control", Help: "Shutdown worker(s).", Supported: true},
		{Name: "add_consumer", Kind: "control", Args: []Arg{str("queue"), str("exchange"), str("exchange_type"), str("routing_key")}, Signature: "<queue> [exchange [type [routing_key]]]", Help: "Tell worker(s) to consume from task queue by name.", Supported: true},
		{Name: "cancel_consumer", Kind: "control", Args: []Arg{str("queue")}, Signature: "<queue>", Help: "Tell worker(s) to stop consuming from task queue by name.", Supported: true},
		{Name: "active_queues", Kind: "inspect", Help: "List the task queues a worker is currently consuming from.", Supported: true},
	}
}

// Lookup returns the command named name (or by its alias).
func Lookup(name string) (Command, bool) {
	for _, c := range Commands() {
		if c.Name == name || (c.Alias != "" && c.Alias == name) {
			return c, true
		}
	}
	return Command{}, false
}
