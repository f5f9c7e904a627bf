package redis

import "github.com/gopidbox/pidbox/transport"

// SendAllBatched makes t send every publish through its batch queue, as
// when others are always in flight.
func SendAllBatched(t *Transport) {
	t.co.mu.Lock()
	t.co.max = 0
	t.co.mu.Unlock()
}

// RepliesExpected is how many more replies sub, a queue read by blocking
// pops, expects: the requests published with it as their reply binding,
// less the messages it delivered since.
func RepliesExpected(sub transport.Subscription) int64 {
	return sub.(*subscription).expecting.Load()
}
