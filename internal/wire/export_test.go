package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// ReferenceDecode is the envelope decoder written with encoding/json, the
// yardstick the fast decoder is fuzzed against.
var ReferenceDecode = referenceDecode

type rawEnvelope struct {
	Body            *string `json:"body"`
	ContentType     string  `json:"content-type"`
	ContentEncoding string  `json:"content-encoding"`
	Headers         struct {
		Clock   json.RawMessage `json:"clock"`
		Expires json.RawMessage `json:"expires"`
		Ticket  string          `json:"ticket"`
	} `json:"headers"`
	Properties struct {
		BodyEncoding string          `json:"body_encoding"`
		DeliveryMode json.RawMessage `json:"delivery_mode"`
		DeliveryTag  string          `json:"delivery_tag"`
		Priority     json.RawMessage `json:"priority"`
		DeliveryInfo struct {
			Exchange   string `json:"exchange"`
			RoutingKey string `json:"routing_key"`
		} `json:"delivery_info"`
	} `json:"properties"`
}

func rawText(v json.RawMessage) string {
	if string(v) == "null" {
		return ""
	}
	return string(v)
}

func referenceDecode(data []byte) (*Envelope, error) {
	var raw rawEnvelope
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	e := &Envelope{
		ContentType:     raw.ContentType,
		ContentEncoding: raw.ContentEncoding,
		Headers:         Headers{Ticket: raw.Headers.Ticket},
		Properties: Properties{
			Exchange:    raw.Properties.DeliveryInfo.Exchange,
			RoutingKey:  raw.Properties.DeliveryInfo.RoutingKey,
			DeliveryTag: raw.Properties.DeliveryTag,
		},
	}
	var err error
	if err := referenceExtras(data, e); err != nil {
		return nil, err
	}
	if e.Headers.Clock, err = clockValue(rawText(raw.Headers.Clock)); err != nil {
		return nil, err
	}
	if e.Headers.Expires, err = expiresValue(rawText(raw.Headers.Expires)); err != nil {
		return nil, err
	}
	if e.Properties.DeliveryMode, err = smallInt("delivery_mode", rawText(raw.Properties.DeliveryMode)); err != nil {
		return nil, err
	}
	if e.Properties.Priority, err = smallInt("priority", rawText(raw.Properties.Priority)); err != nil {
		return nil, err
	}
	if raw.Body == nil {
		return nil, fmt.Errorf("%w: envelope has no body", ErrMalformed)
	}
	switch raw.Properties.BodyEncoding {
	case "base64":
		if e.Body, err = base64.StdEncoding.DecodeString(*raw.Body); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	case "":
		e.Body = []byte(*raw.Body)
	default:
		return nil, fmt.Errorf("%w: body_encoding %q", ErrUnsupported, raw.Properties.BodyEncoding)
	}
	return e, nil
}

// ReferenceDecodeRequestJSON and ReferenceDecodeReplyJSON decode json
// payloads with encoding/json, the yardstick for the fast decoders.
func ReferenceDecodeRequestJSON(data []byte) (*Request, error) {
	var r Request
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func ReferenceDecodeReplyJSON(data []byte) (string, Raw, error) {
	// Python's NaN, Infinity and -Infinity, where a value stands, become
	// numbers of the same length, so that offsets in std are offsets in
	// data and a value is kept as the reply held it.
	std := referencePyTokens(data)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(std, &m); err != nil {
		return "", nil, err
	}
	if len(m) != 1 {
		return "", nil, fmt.Errorf("%d nodes", len(m))
	}
	dec := json.NewDecoder(bytes.NewReader(std))
	if _, err := dec.Token(); err != nil {
		return "", nil, err
	}
	var node string
	var value Raw
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", nil, err
		}
		end := int(dec.InputOffset())
		node, value = tok.(string), Raw(data[end-len(v):end])
	}
	return node, value, nil
}

// referencePyTokens replaces every NaN, Infinity and -Infinity outside
// strings that stands between value delimiters by a number of the same
// length.
func referencePyTokens(data []byte) []byte {
	out := bytes.Clone(data)
	delimBefore := func(i int) bool { return i == 0 || strings.IndexByte(" \t\n\r[,:", data[i-1]) >= 0 }
	delimAfter := func(i int) bool { return i == len(data) || strings.IndexByte(" \t\n\r],}", data[i]) >= 0 }
	inString, escaped := false, false
	for i := 0; i < len(data); i++ {
		switch {
		case inString && escaped:
			escaped = false
		case inString && data[i] == '\\':
			escaped = true
		case inString:
			inString = data[i] != '"'
		case data[i] == '"':
			inString = true
		default:
			for _, tok := range []string{"NaN", "Infinity", "-Infinity"} {
				if bytes.HasPrefix(data[i:], []byte(tok)) && delimBefore(i) && delimAfter(i+len(tok)) {
					copy(out[i:], "1."+strings.Repeat("0", len(tok)-2))
					i += len(tok) - 1
					break
				}
			}
		}
	}
	return out
}

// DecodeRequestJSON is the fast decoder alone, without DecodeRequest's
// checks.
func DecodeRequestJSON(data []byte) (*Request, error) {
	var r Request
	if err := decodeRequestJSON(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// referenceExtras finds the extra headers with encoding/json: the last
// "headers" object (as a json.RawMessage keeps it), walked in order.
func referenceExtras(data []byte, e *Envelope) error {
	var top struct {
		Headers json.RawMessage `json:"headers"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(top.Headers) == 0 || string(top.Headers) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(top.Headers))
	if _, err := dec.Token(); err != nil { // {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		known := false
		for _, k := range []string{"clock", "expires", "ticket", "compression"} {
			known = known || strings.EqualFold(key, k)
		}
		if known {
			continue
		}
		var str string
		isString := len(v) > 0 && v[0] == '"' && json.Unmarshal(v, &str) == nil
		addExtra(e, key, str, isString)
	}
	return nil
}
