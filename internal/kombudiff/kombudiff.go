// Package kombudiff is a differential test harness: it runs the same
// pidbox operation once through Kombu (real Python processes, Debian's
// python3-kombu) and once through this module, on a real broker, and
// compares what reaches the broker and what the peer's handler receives,
// field by field and value by value.
//
// The harness knows no broker: a Broker gives two isolated fleets (two
// Redis databases, two AMQP virtual hosts), a way to open a Go transport,
// and a Tap that reports every message published. Run runs the suite.
package kombudiff

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/gopidbox/pidbox/transport"
	"github.com/vmihailenco/msgpack/v5"
)

// Broker is one broker the suite runs on. Fleet 0 holds Kombu's nodes,
// fleet 1 Go's; the two must not see each other's messages.
type Broker struct {
	// Name names the broker in test output.
	Name string
	// KombuURL is each fleet's URL as Kombu's Connection takes it.
	KombuURL [2]string
	// GoURL is each fleet's URL as Open takes it.
	GoURL [2]string
	// Open opens a Go transport on a fleet's URL.
	Open func(ctx context.Context, url string) (transport.Transport, error)
	// Tap starts watching the broker.
	Tap func(ctx context.Context) (Tap, error)
	// Controller, when set, is the path of a built examples/controller
	// binary, taking GoURL[0] as its --broker: the suite then checks that
	// its arguments reach a Kombu node as Kombu's own caller sends them,
	// and that it prints replies as Kombu's caller reads them.
	Controller string
}

// Tap reports the messages published on a broker. On Redis, NewRedisTap
// uses MONITOR. On RabbitMQ, NewRabbitTap reads RabbitMQ's firehose
// (rabbitmqctl trace_on, a queue bound to amq.rabbitmq.trace with
// "publish.#"), which sees every publish with its properties.
type Tap interface {
	// Sync returns the messages published since the previous Sync; every
	// publish that returned before Sync was called is included.
	Sync(ctx context.Context) ([]Frame, error)
	// Close stops watching.
	Close() error
}

// Frame is one message as it reached the broker.
type Frame struct {
	// Fleet is the fleet it was published in (0 or 1).
	Fleet int
	// Route says where it went, with per-run names (Redis db, a caller's
	// uuid) made comparable: "publish /{db}.ns.pidbox", "lpush {oid}.reply.ns.pidbox".
	Route string
	// Fields are the envelope's fields, flattened: "content-type",
	// "headers.clock", "properties.delivery_info.exchange", and the
	// decoded payload under "body" ("body.arguments.a" -> "int 1").
	Fields map[string]string
}

// EnvelopeFields decodes a Kombu JSON envelope (the form Kombu's Redis
// transport stores) with its payload, and flattens it; see Frame.Fields.
func EnvelopeFields(raw []byte) (map[string]string, error) {
	var env map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&env); err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	body, _ := env["body"].(string)
	delete(env, "body")
	props, _ := env["properties"].(map[string]any)
	if enc, _ := props["body_encoding"].(string); enc != "base64" {
		return nil, fmt.Errorf("envelope: body_encoding %q", enc)
	}
	payload, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("envelope body: %w", err)
	}
	return MessageFields(env, payload), nil
}

// MessageFields flattens a message given as Kombu's envelope fields
// without the body ("content-type", "content-encoding", "headers",
// "properties" with "delivery_info" inside; json.Number for numbers) and
// its payload. A Tap on a broker without JSON envelopes (AMQP's frames)
// builds the same map from its frames, so the paths compare alike.
func MessageFields(envelope map[string]any, payload []byte) map[string]string {
	out := map[string]string{}
	Flatten("", Describe(envelope), out)
	delete(out, "")
	ct, _ := envelope["content-type"].(string)
	v, err := DecodePayload(ct, payload)
	if err != nil {
		// Python's json writes NaN and Infinity, which no JSON decoder
		// reads: the payload is kept as text, so it still compares.
		out["body"] = fmt.Sprintf("undecodable %q", payload)
		return out
	}
	Flatten("body", Describe(v), out)
	return out
}

// DecodePayload decodes a payload into plain values the way Python's json
// and msgpack modules see it: json numbers keep int or float (json.Number),
// msgpack keeps str apart from bin.
func DecodePayload(contentType string, payload []byte) (any, error) {
	var v any
	switch contentType {
	case "application/json":
		dec := json.NewDecoder(bytes.NewReader(payload))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("json payload: %w", err)
		}
	case "application/x-msgpack":
		dec := msgpack.NewDecoder(bytes.NewReader(payload))
		dec.SetMapDecoder(func(d *msgpack.Decoder) (any, error) { return d.DecodeUntypedMap() })
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("msgpack payload: %w", err)
		}
	default:
		return nil, fmt.Errorf("payload of content type %q", contentType)
	}
	return v, nil
}
