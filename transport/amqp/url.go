package amqp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/gopidbox/pidbox/internal/tlsurl"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// endpoint is a parsed broker URL.
type endpoint struct {
	url        string // for amqp091, always amqp://: TLS is the transport's
	redacted   string // for messages
	vhost      string
	tls        bool
	management string     // management API base URL, credentials included; "" when not configured
	tlsParams  url.Values // the URL's ssl_* parameters (amqps:// only)
}

// parseURL accepts amqp://, amqps://, and Kombu's aliases pyamqp:// and
// librabbitmq:// (both plain amqp), with Kombu's vhost rule: an empty
// path or "/" is the vhost "/"; "//" is "/" too; "/name" is "name". The
// query parameter management=PORT or management=URL (escaped) names the
// management API; it is taken out of the URL passed to the client, as
// are the TLS parameters (see package tlsurl), which need amqps://.
func parseURL(raw string) (endpoint, error) {
	// Messages show the URL without its query (the management URL would
	// make them long) and without the password.
	e := endpoint{redacted: redact(strings.SplitN(raw, "?", 2)[0])}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URL, password included: keep its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return e, fmt.Errorf("amqp transport: bad URL %s: %w", e.redacted, err)
	}
	switch u.Scheme {
	case "amqp", "pyamqp", "librabbitmq":
		u.Scheme = "amqp"
	case "amqps":
		e.tls = true
	default:
		return e, fmt.Errorf("amqp transport: bad URL %s: scheme %q is not amqp, amqps, pyamqp or librabbitmq", e.redacted, u.Scheme)
	}
	q := u.Query()
	mgmt := q.Get("management")
	q.Del("management")
	e.tlsParams = tlsurl.Take(q)
	if len(e.tlsParams) > 0 && !e.tls {
		return e, fmt.Errorf("amqp transport: bad URL %s: ssl_* parameters need the amqps:// scheme", e.redacted)
	}
	u.RawQuery = q.Encode()
	switch p := u.Path; p {
	case "", "/", "//":
		e.vhost = "/"
	default:
		e.vhost, err = url.PathUnescape(strings.TrimPrefix(u.EscapedPath(), "/"))
		if err != nil {
			return e, fmt.Errorf("amqp transport: bad URL %s: vhost: %w", e.redacted, err)
		}
	}
	u.Path, u.RawPath = "/", ""
	if e.tls {
		// The transport does TLS itself (see dial); amqp091 sees plain amqp.
		u.Scheme = "amqp"
		if u.Port() == "" {
			u.Host = net.JoinHostPort(u.Hostname(), "5671")
		}
	}
	e.url = u.String()
	if _, err := amqp091.ParseURI(e.url); err != nil {
		return e, fmt.Errorf("amqp transport: bad URL %s: %w", e.redacted, err)
	}
	if mgmt != "" {
		if e.management, err = managementURL(u, mgmt); err != nil {
			return e, fmt.Errorf("amqp transport: bad URL %s: %w", e.redacted, err)
		}
	}
	return e, nil
}

// managementURL makes the management API's base URL from the query
// parameter: a port on the broker's host, or a whole http(s) URL. Without
// credentials of its own it uses the broker URL's (guest:guest when none).
func managementURL(broker *url.URL, v string) (string, error) {
	var m *url.URL
	if port, err := strconv.Atoi(v); err == nil {
		host := broker.Hostname()
		if host == "" {
			host = "localhost"
		}
		m = &url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(port))}
	} else {
		m, err = url.Parse(v)
		if err != nil || (m.Scheme != "http" && m.Scheme != "https") || m.Host == "" {
			return "", fmt.Errorf("management=%q is neither a port nor an http(s) URL", v)
		}
	}
	if m.User == nil {
		m.User = broker.User
	}
	if m.User == nil {
		m.User = url.UserPassword("guest", "guest")
	}
	m.Path = strings.TrimSuffix(m.Path, "/")
	return m.String(), nil
}

// config makes the client's configuration. On amqps:// the URL's TLS
// parameters apply to a copy of opts.TLS (or to a default that verifies
// the server against the system roots).
func (e endpoint) config(opts Options) (amqp091.Config, error) {
	c := amqp091.Config{Vhost: e.vhost, Heartbeat: opts.Heartbeat, Properties: amqp091.NewConnectionProperties()}
	c.Properties.SetClientConnectionName("pidbox")
	if e.tls {
		if opts.TLS != nil {
			c.TLSClientConfig = opts.TLS.Clone()
		} else {
			c.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			if u, err := url.Parse(e.url); err == nil {
				c.TLSClientConfig.ServerName = u.Hostname()
			}
		}
		if err := tlsurl.Configure(c.TLSClientConfig, e.tlsParams); err != nil {
			return c, fmt.Errorf("amqp transport: bad URL %s: %w", e.redacted, err)
		}
	}
	return c, nil
}

// redact returns a URL with its password replaced by "xxxxx", for
// messages and logs.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || (u.User == nil && strings.Contains(rawURL, "@")) {
		if i := strings.LastIndex(rawURL, "@"); i >= 0 {
			return "xxxxx" + rawURL[i:]
		}
		return rawURL
	}
	q := u.Query()
	if m := q.Get("management"); m != "" {
		q.Set("management", redact(m))
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
