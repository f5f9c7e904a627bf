//go:build race

package alloctest

// Race is true when the race detector is on: it allocates on its own, so
// allocation counts are not comparable (scripts/test runs these tests again
// without it).
const Race = true
