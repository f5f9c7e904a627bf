package clock_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/gopidbox/pidbox/clock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestForwardAndAdjust(t *testing.T) {
	var c clock.Lamport
	assert.Equal(t, uint64(0), c.Value())
	assert.Equal(t, uint64(1), c.Forward())
	assert.Equal(t, uint64(2), c.Forward())

	assert.Equal(t, uint64(11), c.Adjust(10), "max(2,10)+1")
	assert.Equal(t, uint64(12), c.Adjust(3), "an older time still ticks the clock")
	assert.Equal(t, uint64(13), c.Adjust(12), "equal time: max+1")
	assert.Equal(t, uint64(13), c.Value())

	assert.Equal(t, uint64(6), clock.New(5).Forward())
}

// Under concurrent Forward and Adjust, every observed value is unique for
// Forward and the clock never goes backwards.
func TestMonotonicUnderConcurrency(t *testing.T) {
	var c clock.Lamport
	const workers, per = 8, 2000
	var wg sync.WaitGroup
	seen := make([][]uint64, workers)
	for w := range workers {
		wg.Go(func() {
			last := uint64(0)
			for i := range per {
				var v uint64
				if i%3 == 0 {
					v = c.Adjust(uint64(i * w))
				} else {
					v = c.Forward()
				}
				if v <= last {
					t.Errorf("worker %d: clock went from %d to %d", w, last, v)
					return
				}
				last = v
				seen[w] = append(seen[w], v)
			}
		})
	}
	wg.Wait()
	all := map[uint64]bool{}
	for _, vs := range seen {
		for _, v := range vs {
			require.False(t, all[v], "value %d returned twice", v)
			all[v] = true
		}
	}
	assert.Len(t, all, workers*per)
	assert.GreaterOrEqual(t, c.Value(), uint64(workers*per))
}

func ExampleLamport() {
	var c clock.Lamport
	sent := c.Forward()        // stamp an outgoing message
	now := c.Adjust(sent + 41) // a peer is ahead of us
	fmt.Println(sent, now)
	// Output: 1 43
}
