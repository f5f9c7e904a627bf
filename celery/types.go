package celery

import (
	"net/url"
	"strconv"
	"strings"
)

// Task describes a task type a Go task runner serves, as `registered`,
// `rate_limit` and `time_limit` see it. Zero fields are Celery's None.
type Task struct {
	// Name is the task's name, such as "tasks.add".
	Name string
	// Exchange and RoutingKey are the task's default routing, if any.
	Exchange, RoutingKey string
	// RateLimit is the task's rate limit, such as "10/m".
	RateLimit string
	// TimeLimit and SoftTimeLimit are in seconds.
	TimeLimit, SoftTimeLimit float64
}

// info returns the task's attributes by Celery's names; absent ones are
// left out, as Celery leaves out attributes that are None.
func (t Task) info() map[string]string {
	m := map[string]string{"name": t.Name}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set("exchange", t.Exchange)
	set("routing_key", t.RoutingKey)
	set("rate_limit", t.RateLimit)
	if t.TimeLimit != 0 {
		m["time_limit"] = pyFloat(t.TimeLimit)
	}
	if t.SoftTimeLimit != 0 {
		m["soft_time_limit"] = pyFloat(t.SoftTimeLimit)
	}
	return m
}

// Request is a task request as Celery's Request.info() describes it, the
// item of the active, reserved and scheduled replies.
type Request struct {
	ID           string         `json:"id"`
	Name         string         `json:"name"`
	Args         []any          `json:"args"`
	Kwargs       map[string]any `json:"kwargs"`
	Type         string         `json:"type"`
	Hostname     string         `json:"hostname"`
	TimeStart    *float64       `json:"time_start"`
	Acknowledged bool           `json:"acknowledged"`
	DeliveryInfo DeliveryInfo   `json:"delivery_info"`
	WorkerPID    *int           `json:"worker_pid"`
}

// DeliveryInfo is where a task message came from.
type DeliveryInfo struct {
	Exchange    string `json:"exchange"`
	RoutingKey  string `json:"routing_key"`
	Priority    int    `json:"priority"`
	Redelivered *bool  `json:"redelivered"`
}

// Scheduled is an item of the scheduled reply: a request waiting for its
// ETA.
type Scheduled struct {
	// ETA is an ISO 8601 time, or nil.
	ETA      *string `json:"eta"`
	Priority int     `json:"priority"`
	Request  Request `json:"request"`
}

// Exchange is an exchange as Kombu's Exchange.as_dict describes it, inside
// an active_queues item.
type Exchange struct {
	Name         string         `json:"name"`
	Type         string         `json:"type"`
	Arguments    map[string]any `json:"arguments"`
	Durable      bool           `json:"durable"`
	Passive      bool           `json:"passive"`
	AutoDelete   bool           `json:"auto_delete"`
	DeliveryMode *int           `json:"delivery_mode"`
	NoDeclare    bool           `json:"no_declare"`
}

// Queue is a task queue as Kombu's Queue.as_dict describes it: the item of
// the active_queues reply.
type Queue struct {
	Name              string         `json:"name"`
	Exchange          Exchange       `json:"exchange"`
	RoutingKey        string         `json:"routing_key"`
	QueueArguments    map[string]any `json:"queue_arguments"`
	BindingArguments  map[string]any `json:"binding_arguments"`
	ConsumerArguments map[string]any `json:"consumer_arguments"`
	Durable           bool           `json:"durable"`
	Exclusive         bool           `json:"exclusive"`
	AutoDelete        bool           `json:"auto_delete"`
	NoAck             bool           `json:"no_ack"`
	Alias             *string        `json:"alias"`
	Bindings          []any          `json:"bindings"`
	NoDeclare         *bool          `json:"no_declare"`
	Expires           *float64       `json:"expires"`
	MessageTTL        *float64       `json:"message_ttl"`
	MaxLength         *int           `json:"max_length"`
	MaxLengthBytes    *int           `json:"max_length_bytes"`
	MaxPriority       *int           `json:"max_priority"`
}

// NewQueue returns a queue as Celery declares a task queue by name: bound
// to a durable direct exchange of the same name under the same routing
// key (or exchange and routing key as given, when not empty).
func NewQueue(name, exchange, exchangeType, routingKey string) Queue {
	if exchange == "" {
		exchange = name
	}
	if exchangeType == "" {
		exchangeType = "direct"
	}
	if routingKey == "" {
		routingKey = name
	}
	return Queue{
		Name:       name,
		Exchange:   Exchange{Name: exchange, Type: exchangeType, Durable: true},
		RoutingKey: routingKey,
		Durable:    true,
		Bindings:   []any{},
	}
}

// Broker is the "broker" entry of stats: the connection, as Kombu's
// Connection.info() describes it.
type Broker struct {
	Hostname         string         `json:"hostname"`
	UserID           *string        `json:"userid"`
	VirtualHost      string         `json:"virtual_host"`
	Port             int            `json:"port"`
	Insist           bool           `json:"insist"`
	SSL              bool           `json:"ssl"`
	Transport        string         `json:"transport"`
	ConnectTimeout   float64        `json:"connect_timeout"`
	TransportOptions map[string]any `json:"transport_options"`
	LoginMethod      *string        `json:"login_method"`
	URIPrefix        *string        `json:"uri_prefix"`
	Heartbeat        Float          `json:"heartbeat"`
	FailoverStrategy string         `json:"failover_strategy"`
	Alternates       []string       `json:"alternates"`
}

// BrokerFromURL describes a broker URL for stats the way Kombu describes
// its connection: host, port (Redis: 6379 by default), virtual host (the
// Redis database number), user and transport name. The password is not
// kept.
func BrokerFromURL(rawURL string) Broker {
	b := Broker{
		ConnectTimeout:   4,
		TransportOptions: map[string]any{},
		Heartbeat:        120,
		FailoverStrategy: "round-robin",
		Alternates:       []string{},
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return b
	}
	b.Transport = strings.SplitN(u.Scheme, "+", 2)[0]
	switch u.Scheme {
	case "rediss":
		b.Transport, b.SSL = "redis", true
	case "unix", "redis+socket", "socket":
		b.Transport = "redis"
	case "amqps":
		b.Transport, b.SSL = "amqp", true
	}
	b.Hostname = u.Hostname()
	if p, err := strconv.Atoi(u.Port()); err == nil {
		b.Port = p
	} else if b.Transport == "redis" && b.Hostname != "" {
		b.Port = 6379
	} else if b.Transport == "amqp" {
		b.Port = 5672
	}
	if u.User != nil && u.User.Username() != "" {
		name := u.User.Username()
		b.UserID = &name
	}
	b.VirtualHost = strings.TrimPrefix(u.Path, "/")
	if b.Transport == "redis" && b.VirtualHost == "" {
		b.VirtualHost = "0"
		if db := u.Query().Get("db"); db != "" {
			b.VirtualHost = db
		}
	}
	return b
}

// PoolInfo is the "pool" entry of stats.
type PoolInfo struct {
	MaxConcurrency        int       `json:"max-concurrency"`
	Processes             []int     `json:"processes"`
	MaxTasksPerChild      *int      `json:"max-tasks-per-child"`
	PutGuardedBySemaphore bool      `json:"put-guarded-by-semaphore"`
	Timeouts              []float64 `json:"timeouts"`
}

// Stats is the reply of stats, in Celery's shape.
type Stats struct {
	// Total counts the tasks processed, by name.
	Total map[string]int64 `json:"total"`
	PID   int              `json:"pid"`
	// Clock is the Lamport clock, as a string (Celery sends str(clock)).
	Clock string `json:"clock"`
	// Uptime is in whole seconds.
	Uptime        int64    `json:"uptime"`
	Pool          PoolInfo `json:"pool"`
	Broker        Broker   `json:"broker"`
	PrefetchCount int      `json:"prefetch_count"`
	// Rusage is getrusage(RUSAGE_SELF) as a map, or "N/A" where the
	// platform has none.
	Rusage any `json:"rusage"`
}
