package redis

// SendAllBatched makes t send every publish through its batch queue, as
// when others are always in flight.
func SendAllBatched(t *Transport) {
	t.co.mu.Lock()
	t.co.max = 0
	t.co.mu.Unlock()
}
