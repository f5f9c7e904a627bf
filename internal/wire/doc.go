// Package wire holds the Kombu 5 message format that pidbox speaks on every
// broker: the JSON envelope with its base64 body, headers and properties,
// the request and reply payloads inside it, and the json and msgpack
// serializers for those payloads.
//
// Everything here is pure data transformation with no I/O, so it can be
// fuzzed and benchmarked on its own. Transports move encoded envelopes as
// opaque bytes; the mailbox and node encode and decode them with this
// package.
package wire
