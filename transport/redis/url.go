package redis

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"

	"github.com/gopidbox/pidbox/internal/tlsurl"
	"github.com/gopidbox/pidbox/transport"
	goredis "github.com/redis/go-redis/v9"
)

// Open makes a transport on the Redis a URL names. The transport owns its
// client; Close closes it.
//
// On a single server Open makes no round trip: the first operation dials,
// and checks that the server answers in the same round trip as its own
// commands, so that a controller's first call sets up in one (the check,
// its reply binding and, for a broadcast, the node lookup, pipelined
// together). An unreachable server is then that operation's error, which
// wraps transport.ErrUnreachable and says why; call Ping to find out before.
// On Sentinel and Cluster, Open finds the servers and checks, within ctx,
// that they answer.
//
// Accepted URLs:
//
//	redis://[user:password@]host[:port][/db]
//	rediss://...                      TLS
//	unix:///path/to/redis.sock[?db=N]
//	redis+socket:///path/to/redis.sock[?virtual_host=N]   Kombu's spelling
//
// Kombu's transport options may be given as query parameters:
// global_keyprefix=STR, fanout_prefix=true|false|STR, fanout_patterns=true|false.
// They override opts. Other go-redis URL parameters (dial_timeout, ...)
// pass through. Errors name the URL without its password.
//
// A rediss:// URL takes the TLS parameters of Kombu's and redis-py's
// broker URLs:
//
//	ssl_cert_reqs=required|optional|none   (or CERT_REQUIRED, ...) verify the server's certificate; default required
//	ssl_ca_certs=/path/ca.pem              the CAs to verify it against; default the system's
//	ssl_certfile=/path/client.pem          a client certificate, with
//	ssl_keyfile=/path/client.key           its private key
//	ssl_check_hostname=true|false          whether the certificate must name the host; default true
//
// Two defaults differ from Kombu's, on the safe side: a rediss:// URL
// without ssl_cert_reqs verifies the server (Kombu then verifies nothing),
// and the certificate must name the host unless ssl_check_hostname=false
// (redis-py checks only the chain by default). "optional" verifies as
// "required" does, as it does for Python's TLS clients.
//
// Sentinel (see ParseSentinelURL):
//
//	sentinel://[user:password@]host:26379[/db];sentinel://host2:26380?master_name=NAME
//
// Redis Cluster, pidbox to pidbox only (see ParseClusterURL):
//
//	redis+cluster://[user:password@]host:port,host:port[?params]
func Open(ctx context.Context, rawURL string, opts Options) (*Transport, error) {
	var client goredis.UniversalClient
	var ropts *goredis.Options
	var fo *goredis.FailoverOptions
	switch {
	case strings.HasPrefix(rawURL, "sentinel://"):
		var err error
		fo, err = ParseSentinelURL(rawURL, &opts)
		if err != nil {
			return nil, err
		}
		fo.ContextTimeoutEnabled = true
		client = goredis.NewFailoverClient(fo)
	case strings.HasPrefix(rawURL, ClusterScheme+"://"), strings.HasPrefix(rawURL, "rediss+cluster://"):
		co, err := ParseClusterURL(rawURL, &opts)
		if err != nil {
			return nil, err
		}
		co.ContextTimeoutEnabled = true
		client = goredis.NewClusterClient(co)
	default:
		var err error
		ropts, err = ParseURL(rawURL, &opts)
		if err != nil {
			return nil, err
		}
		ropts.ContextTimeoutEnabled = true // calls end at their context's deadline
		// No round trip on every new connection to name the library
		// (CLIENT SETINFO): a short-lived process (a controller) pays it
		// on each of its connections.
		ropts.DisableIdentity = true
		client = goredis.NewClient(ropts)
	}
	t := NewFromClient(client, opts)
	t.owned = append(t.owned, client)
	t.addr = Redact(rawURL)
	if ropts != nil && tlsurl.Unverified(ropts.TLSConfig) {
		lg := opts.Logger
		if lg == nil {
			lg = slog.Default()
		}
		lg.Warn("redis transport: ssl_cert_reqs=none: the server's certificate is not verified, so anyone on the path can pose as it", "url", Redact(rawURL))
	}
	if ropts != nil {
		// A single server is checked by the first pipeline, in the same
		// round trip (see checkHook): Open itself makes none.
		t.client.AddHook(&checkHook{t: t})
		return t, nil
	}
	if err := t.check(ctx); err != nil {
		_ = t.Close()
		if fo != nil {
			err = sentinelDialError(ctx, fo, err)
		}
		return nil, t.errorf("%w: %w", transport.ErrUnreachable, err)
	}
	return t, nil
}

// ParseURL turns a URL into go-redis options and applies the Kombu
// transport options it carries to opts (see Open).
func ParseURL(rawURL string, opts *Options) (*goredis.Options, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis transport: bad URL %s: %w", Redact(rawURL), err)
	}
	q := u.Query()
	if err := takeKombuOptions(q, opts); err != nil {
		return nil, fmt.Errorf("redis transport: bad URL %s: %w", Redact(rawURL), err)
	}
	tlsq := tlsurl.Take(q)
	if len(tlsq) > 0 && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redis transport: bad URL %s: ssl_* parameters need the rediss:// scheme", Redact(rawURL))
	}
	if !q.Has("protocol") {
		// RESP2, as Kombu speaks: RESP3 adds a check for push
		// notifications to every reply that pidbox has no use for.
		q.Set("protocol", "2")
	}
	switch u.Scheme {
	case "redis+socket", "socket":
		u.Scheme = "unix"
		if v, ok := take(q, "virtual_host"); ok {
			q.Set("db", v)
		}
	}
	u.RawQuery = q.Encode()
	ropts, err := goredis.ParseURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("redis transport: bad URL %s: %w", Redact(rawURL), err)
	}
	opts.DB = ropts.DB
	if ropts.TLSConfig != nil {
		if err := tlsurl.Configure(ropts.TLSConfig, tlsq); err != nil {
			return nil, fmt.Errorf("redis transport: bad URL %s: %w", Redact(rawURL), err)
		}
	}
	return ropts, nil
}

// takeKombuOptions moves Kombu's transport options from URL parameters
// to opts.
func takeKombuOptions(q url.Values, opts *Options) error {
	if v, ok := take(q, "global_keyprefix"); ok {
		opts.KeyPrefix = v
	}
	if v, ok := take(q, "fanout_prefix"); ok {
		if b, err := strconv.ParseBool(v); err == nil {
			opts.NoFanoutPrefix = !b
		} else {
			opts.FanoutPrefix, opts.NoFanoutPrefix = v, false
		}
	}
	if v, ok := take(q, "fanout_patterns"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("fanout_patterns=%q is not true or false", v)
		}
		opts.NoFanoutPatterns = !b
	}
	return nil
}

func take(q url.Values, key string) (string, bool) {
	if !q.Has(key) {
		return "", false
	}
	v := q.Get(key)
	q.Del(key)
	return v, true
}

// Redact returns a URL with its password replaced by "xxxxx", for
// messages and logs.
func Redact(rawURL string) string {
	if strings.Contains(rawURL, ";") { // Kombu's list of sentinels
		parts := strings.Split(rawURL, ";")
		for i, p := range parts {
			parts[i] = Redact(p)
		}
		return strings.Join(parts, ";")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// Not a URL: keep the scheme and host part only.
		if i := strings.LastIndex(rawURL, "@"); i >= 0 {
			return "xxxxx" + rawURL[i:]
		}
		return rawURL
	}
	return u.Redacted()
}
