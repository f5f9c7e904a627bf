package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"

	"github.com/vmihailenco/msgpack/v5"
)

// Codec serializes payloads. It is what Kombu calls a serializer.
//
// Both built-in codecs read and write Go structs by their json tags, so one
// struct serves whichever codec a mailbox uses.
type Codec interface {
	// Name is the Kombu serializer name: "json" or "msgpack".
	Name() string
	// ContentType is the envelope's content-type for this codec.
	ContentType() string
	// ContentEncoding is the envelope's content-encoding for this codec.
	ContentEncoding() string
	// Marshal serializes v.
	Marshal(v any) ([]byte, error)
	// Unmarshal parses data into v, which must be a pointer.
	Unmarshal(data []byte, v any) error
}

// JSON is the json codec, Kombu's default ("application/json").
type JSON struct{}

// Name implements Codec.
func (JSON) Name() string { return "json" }

// ContentType implements Codec.
func (JSON) ContentType() string { return "application/json" }

// ContentEncoding implements Codec.
func (JSON) ContentEncoding() string { return "utf-8" }

// Marshal implements Codec. A whole float64 in a plain tree (any,
// map[string]any, []any) is written as Python writes it, 3.0 not 3, so a
// Python peer reads a float; see PyFloat.
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(pyFloats(v)) }

// Unmarshal implements Codec. Numbers decoded into interfaces keep
// Python's int and float apart: see NumberValue.
func (JSON) Unmarshal(data []byte, v any) error { return decodeJSON(data, v) }

// Msgpack is the msgpack codec ("application/x-msgpack"), as written by
// Python's msgpack with use_bin_type=True.
type Msgpack struct{}

// Name implements Codec.
func (Msgpack) Name() string { return "msgpack" }

// ContentType implements Codec.
func (Msgpack) ContentType() string { return "application/x-msgpack" }

// ContentEncoding implements Codec.
func (Msgpack) ContentEncoding() string { return "binary" }

// Marshal implements Codec. A json.Number inside a map[string]any or
// []any is written as the int or float it stands for. What a Python peer
// could not read is an error wrapping ErrUnsupported: an integer beyond
// 64 bits, a string that is not valid UTF-8.
func (Msgpack) Marshal(v any) ([]byte, error) {
	v, err := toMsgpack(v)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(&buf)
	enc.SetCustomStructTag("json")
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := checkMsgpack(buf.Bytes()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Unmarshal implements Codec. It first checks the value's declared
// lengths and nesting against the data, so hostile input cannot make it
// allocate much more than its own size, and refuses a str that is not
// valid UTF-8, as Python's msgpack does. Integers decoded into interfaces
// are int64 (uint64 above math.MaxInt64) and floats float64, as from the
// json codec, whatever width msgpack stored them in; bin stays []byte
// and str string.
func (Msgpack) Unmarshal(data []byte, v any) error {
	if err := checkMsgpack(data); err != nil {
		return err
	}
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	rd := bytes.NewReader(data)
	dec.Reset(rd)
	dec.SetCustomStructTag("json")
	if err := dec.Decode(v); err != nil {
		return err
	}
	if rd.Len() != 0 {
		return fmt.Errorf("msgpack: %d trailing bytes after the value", rd.Len())
	}
	if holdsInterface(reflect.TypeOf(v), nil) {
		fixNumbers(reflect.ValueOf(v), msgpackNumber)
	}
	return nil
}

// Codecs lists the built-in codecs.
func Codecs() []Codec { return []Codec{JSON{}, Msgpack{}} }

// CodecNamed returns the codec with a Kombu serializer name.
func CodecNamed(name string) (Codec, error) {
	for _, c := range Codecs() {
		if c.Name() == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: serializer %q (have json, msgpack)", ErrUnsupported, name)
}

// CodecFor returns the codec for an envelope's content type, if that
// content type is in accept (a list of serializer names or content types).
func CodecFor(contentType string, accept []string) (Codec, error) {
	for _, c := range Codecs() {
		if c.ContentType() != contentType {
			continue
		}
		if slices.Contains(accept, c.Name()) || slices.Contains(accept, contentType) {
			return c, nil
		}
		return nil, fmt.Errorf("%w: content type %q is not accepted (accept: %v)", ErrUnsupported, contentType, accept)
	}
	return nil, fmt.Errorf("%w: content type %q", ErrUnsupported, contentType)
}

// Raw holds one value still in its codec's serialized form, such as a
// request's arguments or a reply's value. It is decoded later, by whoever
// knows the Go type it should become.
type Raw []byte

// MarshalJSON writes the raw JSON unchanged; an empty Raw is written as {}.
func (r Raw) MarshalJSON() ([]byte, error) {
	if len(r) == 0 {
		return []byte("{}"), nil
	}
	return r, nil
}

// UnmarshalJSON keeps a copy of the raw JSON.
func (r *Raw) UnmarshalJSON(b []byte) error {
	*r = append((*r)[:0], b...)
	return nil
}

// EncodeMsgpack writes the raw msgpack unchanged; an empty Raw is written
// as an empty map.
func (r Raw) EncodeMsgpack(enc *msgpack.Encoder) error {
	if len(r) == 0 {
		return enc.EncodeMapLen(0)
	}
	return enc.Encode(msgpack.RawMessage(r))
}

// DecodeMsgpack keeps a copy of the raw msgpack value.
func (r *Raw) DecodeMsgpack(dec *msgpack.Decoder) error {
	b, err := dec.DecodeRaw()
	if err != nil {
		return err
	}
	*r = append((*r)[:0], b...)
	return nil
}

// CodecOf returns the built-in codec for a content type, accepted or not.
func CodecOf(contentType string) (Codec, error) {
	for _, c := range Codecs() {
		if c.ContentType() == contentType {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: content type %q", ErrUnsupported, contentType)
}

// IsMap reports whether data, serialized by c, is a map or null: the
// shapes a command's keyword arguments may take.
func IsMap(c Codec, data []byte) bool {
	if len(data) == 0 {
		return false
	}
	if _, ok := c.(Msgpack); ok {
		b := data[0]
		return b&0xf0 == 0x80 || b == 0xde || b == 0xdf || b == 0xc0
	}
	return data[0] == '{' || string(data) == "null"
}
