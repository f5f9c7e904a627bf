package wire

import (
	"bytes"
	"testing"
)

// allPlain agrees with the byte table on every byte but the quote (which
// rawString finds first) at every position of a word and in the tail.
func TestAllPlain(t *testing.T) {
	for n := range 20 {
		for pos := range n {
			for c := range 256 {
				if c == '"' {
					continue
				}
				b := bytes.Repeat([]byte("a"), n)
				b[pos] = byte(c)
				if got, want := allPlain(b), plain[c]; got != want {
					t.Fatalf("allPlain(%q) = %v, want %v", b, got, want)
				}
			}
		}
	}
}
