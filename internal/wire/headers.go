package wire

// Extra headers: string headers beside clock, expires and ticket, such as
// W3C trace context (traceparent, tracestate). Kombu reads only clock,
// expires and ticket (and acts on compression, which is never written
// here), so Python peers pass the others by. Both directions are bounded:
// a message carries at most MaxExtraHeaders of them, each key at most
// MaxHeaderKey bytes and each value at most MaxHeaderValue bytes of
// printable ASCII. Anything else — too many, too long, not a string,
// control characters — is ignored and counted in Envelope.IgnoredHeaders.
// A broker without envelopes (AMQP) carries them in its frame's headers
// table, beside clock, expires and ticket, under the same bounds.

// Bounds on extra headers.
const (
	MaxExtraHeaders = 8
	MaxHeaderKey    = 64
	MaxHeaderValue  = 2048
)

// Header is one extra header.
type Header struct {
	Key, Value string
}

// Get returns the value of the extra header key, or "".
func (h *Headers) Get(key string) string {
	for _, x := range h.Extra {
		if x.Key == key {
			return x.Value
		}
	}
	return ""
}

// Set sets the extra header key to value, replacing an earlier value. It
// reports false, and changes nothing, for a key or value out of bounds, a
// key that Kombu reads or acts on (clock, expires, ticket, compression, in
// any case), or a header beyond the MaxExtraHeaders-th.
func (h *Headers) Set(key, value string) bool {
	if !validExtra(key, value) {
		return false
	}
	for i := range h.Extra {
		if h.Extra[i].Key == key {
			h.Extra[i].Value = value
			return true
		}
	}
	if len(h.Extra) >= MaxExtraHeaders {
		return false
	}
	h.Extra = append(h.Extra, Header{Key: key, Value: value})
	return true
}

// Keys returns the keys of the extra headers.
func (h *Headers) Keys() []string {
	keys := make([]string, len(h.Extra))
	for i, x := range h.Extra {
		keys[i] = x.Key
	}
	return keys
}

// validExtra reports whether key and value may travel as an extra header.
func validExtra(key, value string) bool {
	if len(key) == 0 || len(key) > MaxHeaderKey || len(value) > MaxHeaderValue || reserved(key) {
		return false
	}
	return printable(key) && printable(value)
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// reserved reports whether key (in any case) is one Kombu reads or acts on.
func reserved(key string) bool {
	switch len(key) {
	case 5, 6, 7, 11:
	default:
		return false
	}
	var low [11]byte
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	switch string(low[:len(key)]) {
	case "clock", "expires", "ticket", "compression":
		return true
	}
	return false
}

// addExtra applies one decoded extra header to h, the same way for the
// fast decoder and the reference: a string within bounds is kept (a
// repeated key replaces the earlier value), anything else is counted.
func addExtra(e *Envelope, key string, value string, isString bool) {
	if !isString || !validExtra(key, value) {
		e.IgnoredHeaders++
		return
	}
	if !e.Headers.Set(key, value) {
		e.IgnoredHeaders++
	}
}

// internKey returns the header keys trace context uses without allocating.
func internKey(b []byte) string {
	switch string(b) {
	case "traceparent":
		return "traceparent"
	case "tracestate":
		return "tracestate"
	case "baggage":
		return "baggage"
	}
	return string(b)
}
