package amqp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/gopidbox/pidbox/transport"
)

// httpTimeout bounds a management API request when ctx has no deadline.
const httpTimeout = 10 * time.Second

// maxBindingsResponse bounds the management API's answer we read.
const maxBindingsResponse = 64 << 20

// management asks RabbitMQ's management HTTP API for an exchange's
// bindings.
type management struct {
	base       *url.URL // without credentials
	user, pass string
	vhost      string
	tr         *http.Transport
	client     *http.Client
}

func newManagement(raw, vhost string) (*management, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("management API URL %s is not an http(s) URL", redact(raw))
	}
	m := &management{vhost: vhost, tr: http.DefaultTransport.(*http.Transport).Clone()}
	if u.User != nil {
		m.user = u.User.Username()
		m.pass, _ = u.User.Password()
		u.User = nil
	}
	m.base = u
	m.client = &http.Client{Transport: m.tr}
	return m, nil
}

func (m *management) close() { m.tr.CloseIdleConnections() }

type bindingJSON struct {
	Source          string `json:"source"`
	Destination     string `json:"destination"`
	DestinationType string `json:"destination_type"`
	RoutingKey      string `json:"routing_key"`
}

// bindings lists the queues bound to ex; an exchange that does not exist
// has none.
func (m *management) bindings(ctx context.Context, ex transport.Exchange) ([]transport.Binding, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, httpTimeout)
		defer cancel()
	}
	u := *m.base
	u.Path += "/api/exchanges/" + m.vhost + "/" + ex.Name + "/bindings/source"
	u.RawPath = m.base.EscapedPath() + "/api/exchanges/" + url.PathEscape(m.vhost) + "/" + url.PathEscape(ex.Name) + "/bindings/source"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if m.user != "" {
		req.SetBasicAuth(m.user, m.pass)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("management API: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return []transport.Binding{}, nil
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return nil, fmt.Errorf("management API %s: %s: %s", m.base.Redacted(), resp.Status, msg)
	}
	var raw []bindingJSON
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBindingsResponse)).Decode(&raw); err != nil {
		return nil, fmt.Errorf("management API: bad answer: %w", err)
	}
	out := make([]transport.Binding, 0, len(raw))
	for _, b := range raw {
		if b.DestinationType == "queue" && b.Source == ex.Name {
			out = append(out, transport.Binding{Exchange: ex, RoutingKey: b.RoutingKey, Queue: b.Destination})
		}
	}
	return out, nil
}
