package wire

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Delivery modes, as in AMQP and Kombu's properties.
const (
	// Transient is Kombu's delivery_mode for replies.
	Transient = 1
	// Persistent is Kombu's delivery_mode for requests.
	Persistent = 2
)

// Envelope is one Kombu message as stored on the broker: a payload plus the
// metadata Kombu puts around it.
type Envelope struct {
	// Body is the serialized payload, already base64-decoded.
	Body []byte
	// ContentType names the payload's codec, such as "application/json".
	ContentType string
	// ContentEncoding is "utf-8" for json and "binary" for msgpack.
	ContentEncoding string
	// Headers carries the clock, expiry and ticket, and extra headers.
	Headers Headers
	// Properties carries Kombu's routing metadata.
	Properties Properties
	// IgnoredHeaders counts the extra headers Decode ignored: not a
	// string, out of bounds, or beyond MaxExtraHeaders.
	IgnoredHeaders int
}

// Headers are the envelope headers pidbox reads and writes.
type Headers struct {
	// Clock is the sender's Lamport time.
	Clock uint64
	// Expires is a Unix time in seconds after which the message is stale;
	// 0 means never.
	Expires float64
	// Ticket ties a reply to its request; empty on requests.
	Ticket string
	// Extra holds bounded string headers beside those three, such as
	// trace context; see Header.
	Extra []Header
}

// Expired reports whether the message has expired at now.
func (h Headers) Expired(now time.Time) bool {
	return h.Expires > 0 && float64(now.UnixNano())/1e9 > h.Expires
}

// ExpiresAt converts a deadline to the header's float seconds; the zero
// time becomes 0 (never).
func ExpiresAt(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// Deadline converts the header's expiry back to a time; ok is false when
// the message never expires.
func (h Headers) Deadline() (t time.Time, ok bool) {
	if h.Expires <= 0 || math.IsNaN(h.Expires) || math.IsInf(h.Expires, 0) {
		return time.Time{}, false
	}
	sec, frac := math.Modf(h.Expires)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// Properties are Kombu's message properties.
type Properties struct {
	// DeliveryMode is Persistent for requests and Transient for replies.
	DeliveryMode int
	// Exchange is the exchange the message was published to.
	Exchange string
	// RoutingKey is the routing key it was published with.
	RoutingKey string
	// Priority is the message priority (0-9); pidbox always sends 0.
	Priority int
	// DeliveryTag is a per-message uuid; Encode makes one when it is empty.
	DeliveryTag string
}

// AppendEncode appends the JSON encoding of e to dst, the way Kombu's Redis
// transport stores it, and returns the extended buffer. It allocates
// nothing beyond growing dst.
func AppendEncode(dst []byte, e *Envelope) []byte {
	dst = append(dst, `{"body": "`...)
	n := base64.StdEncoding.EncodedLen(len(e.Body))
	dst = growBy(dst, n)
	base64.StdEncoding.Encode(dst[len(dst)-n:], e.Body)
	dst = append(dst, `", "content-encoding": `...)
	dst = appendString(dst, e.ContentEncoding)
	dst = append(dst, `, "content-type": `...)
	dst = appendString(dst, e.ContentType)
	dst = append(dst, `, "headers": {"clock": `...)
	dst = strconv.AppendUint(dst, e.Headers.Clock, 10)
	dst = append(dst, `, "expires": `...)
	if x := e.Headers.Expires; x > 0 && !math.IsInf(x, 0) && !math.IsNaN(x) {
		dst = strconv.AppendFloat(dst, x, 'f', -1, 64)
	} else {
		dst = append(dst, '0')
	}
	if e.Headers.Ticket != "" {
		dst = append(dst, `, "ticket": `...)
		dst = appendString(dst, e.Headers.Ticket)
	}
	for _, x := range e.Headers.Extra {
		if validExtra(x.Key, x.Value) {
			dst = append(dst, ", "...)
			dst = appendString(dst, x.Key)
			dst = append(dst, ": "...)
			dst = appendString(dst, x.Value)
		}
	}
	p := &e.Properties
	dst = append(dst, `}, "properties": {"delivery_mode": `...)
	dst = strconv.AppendInt(dst, int64(p.DeliveryMode), 10)
	dst = append(dst, `, "delivery_info": {"exchange": `...)
	dst = appendString(dst, p.Exchange)
	dst = append(dst, `, "routing_key": `...)
	dst = appendString(dst, p.RoutingKey)
	dst = append(dst, `}, "priority": `...)
	dst = strconv.AppendInt(dst, int64(p.Priority), 10)
	dst = append(dst, `, "body_encoding": "base64", "delivery_tag": `...)
	if p.DeliveryTag != "" {
		dst = appendString(dst, p.DeliveryTag)
	} else {
		dst = append(dst, '"')
		dst = appendID(dst)
		dst = append(dst, '"')
	}
	return append(dst, "}}"...)
}

// Encode returns the JSON encoding of e. See AppendEncode.
func Encode(e *Envelope) []byte {
	return AppendEncode(make([]byte, 0, EncodedLen(e)), e)
}

// EncodedLen bounds the length of e's encoding, for sizing buffers.
func EncodedLen(e *Envelope) int {
	strs := len(e.ContentType) + len(e.ContentEncoding) + len(e.Headers.Ticket) +
		len(e.Properties.Exchange) + len(e.Properties.RoutingKey) + len(e.Properties.DeliveryTag)
	for _, x := range e.Headers.Extra {
		strs += len(x.Key) + len(x.Value) + 6 // ", " and ": " beside the quotes
	}
	// fixed text and numbers < 300 bytes; a string escapes to at most 6x.
	return 300 + 6*strs + base64.StdEncoding.EncodedLen(len(e.Body))
}

// Decode parses one envelope. A limit above 0 refuses envelopes longer
// than limit bytes before any parsing. Errors wrap ErrTooLarge,
// ErrMalformed or ErrUnsupported.
func Decode(data []byte, limit int) (*Envelope, error) {
	e := &Envelope{}
	if err := DecodeInto(data, limit, e); err != nil {
		return nil, err
	}
	return e, nil
}

// DecodeInto is Decode into e, whose fields it overwrites: the body is
// decoded into e.Body's memory when it has room. For a reader that is done
// with an envelope before the next (a node skipping a command for another
// node), so that envelopes and bodies are reused rather than made anew.
// On error, e holds nothing of use.
func DecodeInto(data []byte, limit int, e *Envelope) error {
	if limit > 0 && len(data) > limit {
		return fmt.Errorf("%w: envelope of %d bytes is above the %d-byte limit", ErrTooLarge, len(data), limit)
	}
	*e = Envelope{Body: e.Body[:0]}
	return decodeEnvelope(data, e)
}

func clockValue(n string) (uint64, error) {
	if n == "" {
		return 0, nil
	}
	if v, err := strconv.ParseUint(n, 10, 64); err == nil {
		return v, nil
	}
	// Some clients send the clock as a float; accept whole values.
	f, err := strconv.ParseFloat(n, 64)
	if err != nil || f < 0 || f != math.Trunc(f) || f >= math.MaxUint64 {
		return 0, fmt.Errorf("%w: header clock=%.40q is not a non-negative integer", ErrMalformed, n)
	}
	return uint64(f), nil
}

func expiresValue(n string) (float64, error) {
	if n == "" {
		return 0, nil
	}
	x, err := strconv.ParseFloat(n, 64)
	if err != nil || math.IsNaN(x) {
		return 0, fmt.Errorf("%w: header expires=%.40q is not a number", ErrMalformed, n)
	}
	return x, nil
}

func smallInt(name string, n string) (int, error) {
	if n == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(n, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: property %s=%.40q is not an integer", ErrMalformed, name, n)
	}
	return int(v), nil
}

// truncErr keeps error texts that quote hostile input to a readable size.
func truncErr(err error) string {
	s := err.Error()
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func growBy(dst []byte, n int) []byte {
	if cap(dst)-len(dst) < n {
		grown := make([]byte, len(dst), 2*cap(dst)+n)
		copy(grown, dst)
		dst = grown
	}
	return dst[:len(dst)+n]
}

const hexDigits = "0123456789abcdef"

// appendID appends a random version-4 UUID in its text form, as Kombu
// uses for delivery tags. google/uuid draws it from crypto/rand (about
// 70 ns), the one source of IDs in pidbox: tickets and tags that cannot be
// guessed cost nothing measurable on a call.
func appendID(dst []byte) []byte {
	u := uuid.New()
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[b>>4], hexDigits[b&0xf])
	}
	return dst
}

// NewID returns a ticket: a version-7 UUID, which carries the time it was
// made in its first 48 bits beside 74 random ones. Kombu takes any UUID; a
// node that verifies signatures reads the time from the ticket inside the
// signed body, so a captured command cannot be replayed later with a fresh
// expiry (see security.ReplayGuard).
func NewID() string {
	u, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return u.String()
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
