package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// maxMsgpackDepth bounds the nesting of msgpack values: a decoder recursing
// into a million nested arrays would overflow its stack.
const maxMsgpackDepth = 1000

var errMsgpackShape = errors.New("msgpack: declared length larger than the data, or nested too deeply")

var errInvalidUTF8 = errors.New("a string is not valid UTF-8, which a Python peer refuses; send bytes as []byte")

// checkMsgpack walks one msgpack value without decoding it and refuses
// values whose declared lengths exceed the bytes left, or that nest
// deeper than maxMsgpackDepth, or that hold a str that is not valid UTF-8.
// The msgpack library sizes its slices and maps from declared lengths, so
// without this check a ten-byte message could make it allocate tens of
// megabytes. Python's msgpack decodes str as UTF-8 and refuses the whole
// message otherwise, so Kombu would lose such a message without a word:
// pidbox refuses to write one, and refuses to read one, as Kombu does.
// Bytes belong in bin, which Go's []byte is.
func checkMsgpack(data []byte) error {
	// pending[i] counts the values still to read at nesting level i.
	pending := make([]int, 1, 16)
	pending[0] = 1
	i := 0
	need := func(n int) error {
		if n < 0 || n > len(data)-i {
			return fmt.Errorf("%w (at byte %d)", errMsgpackShape, i)
		}
		return nil
	}
	length := func(size int) (int, error) {
		if err := need(size); err != nil {
			return 0, err
		}
		var n uint64
		switch size {
		case 1:
			n = uint64(data[i])
		case 2:
			n = uint64(binary.BigEndian.Uint16(data[i:]))
		case 4:
			n = uint64(binary.BigEndian.Uint32(data[i:]))
		}
		i += size
		if n > uint64(len(data)-i) {
			return 0, fmt.Errorf("%w (at byte %d)", errMsgpackShape, i)
		}
		return int(n), nil
	}
	str := func(n int) error {
		if !utf8.Valid(data[i-n : i]) {
			return fmt.Errorf("%w: %w (at byte %d)", ErrUnsupported, errInvalidUTF8, i-n)
		}
		return nil
	}
	open := func(items int) error {
		if items > len(data)-i {
			return fmt.Errorf("%w (at byte %d)", errMsgpackShape, i)
		}
		if items > 0 {
			if len(pending) >= maxMsgpackDepth {
				return fmt.Errorf("%w (at byte %d)", errMsgpackShape, i)
			}
			pending = append(pending, items)
		}
		return nil
	}
	for len(pending) > 0 {
		if pending[len(pending)-1] == 0 {
			pending = pending[:len(pending)-1]
			continue
		}
		pending[len(pending)-1]--
		if err := need(1); err != nil {
			return err
		}
		c := data[i]
		i++
		var err error
		var n int
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			err = open(2 * int(c&0x0f))
		case c >= 0x90 && c <= 0x9f:
			err = open(int(c & 0x0f))
		case c >= 0xa0 && c <= 0xbf:
			err = need(int(c & 0x1f))
			if err == nil {
				i += int(c & 0x1f)
				err = str(int(c & 0x1f))
			}
		case c == 0xc4:
			n, err = length(1)
			i += n
		case c == 0xc5:
			n, err = length(2)
			i += n
		case c == 0xc6:
			n, err = length(4)
			i += n
		case c == 0xd9, c == 0xda, c == 0xdb:
			n, err = length(map[byte]int{0xd9: 1, 0xda: 2, 0xdb: 4}[c])
			if err == nil {
				i += n
				err = str(n)
			}
		case c == 0xc7, c == 0xc8, c == 0xc9: // ext 8/16/32: length, type, data
			n, err = length(map[byte]int{0xc7: 1, 0xc8: 2, 0xc9: 4}[c])
			if err == nil {
				err = need(n + 1)
				i += n + 1
			}
		case c == 0xca || c == 0xce || c == 0xd2:
			err = need(4)
			i += 4
		case c == 0xcb || c == 0xcf || c == 0xd3:
			err = need(8)
			i += 8
		case c == 0xcc || c == 0xd0:
			err = need(1)
			i++
		case c == 0xcd || c == 0xd1:
			err = need(2)
			i += 2
		case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16: type, data
			size := 1 << (c - 0xd4)
			err = need(1 + size)
			i += 1 + size
		case c == 0xdc:
			n, err = length(2)
			if err == nil {
				err = open(n)
			}
		case c == 0xdd:
			n, err = length(4)
			if err == nil {
				err = open(n)
			}
		case c == 0xde:
			n, err = length(2)
			if err == nil {
				err = open(2 * n)
			}
		case c == 0xdf:
			n, err = length(4)
			if err == nil {
				err = open(2 * n)
			}
		default: // 0xc1 is never used
			err = fmt.Errorf("msgpack: invalid code %#x at byte %d", c, i-1)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
