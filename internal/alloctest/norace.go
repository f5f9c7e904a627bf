//go:build !race

package alloctest

// Race is true when the race detector is on.
const Race = false
