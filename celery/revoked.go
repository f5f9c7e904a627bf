package celery

import (
	"sync"
	"time"
)

// Celery keeps revoked task ids in a LimitedSet of at most 50,000 ids,
// each for at most 3 hours (celery/worker/state.py).
const (
	DefaultMaxRevoked     = 50_000
	DefaultRevokedExpires = 3 * time.Hour
)

// revokedSet is Celery's LimitedSet of revoked ids: insertion-ordered,
// bounded in size and age.
type revokedSet struct {
	mu      sync.Mutex
	max     int
	expires time.Duration
	start   time.Time // the origin of the monotonic timestamps hello sends
	at      map[string]revokedEntry
	order   []revokedEntry // oldest first; stale entries are skipped
	seq     uint64
}

type revokedEntry struct {
	id  string
	t   time.Time
	seq uint64
}

func newRevokedSet(max int, expires time.Duration) *revokedSet {
	if max <= 0 {
		max = DefaultMaxRevoked
	}
	if expires <= 0 {
		expires = DefaultRevokedExpires
	}
	return &revokedSet{max: max, expires: expires, start: time.Now(), at: map[string]revokedEntry{}}
}

func (s *revokedSet) add(now time.Time, ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if id == "" {
			continue
		}
		s.seq++
		e := revokedEntry{id: id, t: now, seq: s.seq}
		s.at[id] = e
		s.order = append(s.order, e)
	}
	s.purge(now)
}

// purge drops expired ids and the oldest beyond the limit; the caller
// holds mu.
func (s *revokedSet) purge(now time.Time) {
	i := 0
	for ; i < len(s.order); i++ {
		e := s.order[i]
		cur, ok := s.at[e.id]
		if !ok || cur.seq != e.seq {
			continue // replaced by a later add
		}
		if len(s.at) <= s.max && now.Sub(e.t) < s.expires {
			break
		}
		delete(s.at, e.id)
	}
	s.order = s.order[i:]
	if len(s.order) > 2*len(s.at)+1024 {
		kept := make([]revokedEntry, 0, len(s.at))
		for _, e := range s.order {
			if cur, ok := s.at[e.id]; ok && cur.seq == e.seq {
				kept = append(kept, e)
			}
		}
		s.order = kept
	}
}

func (s *revokedSet) contains(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.at[id]
	return ok && time.Since(e.t) < s.expires
}

// list returns the ids, oldest first.
func (s *revokedSet) list(now time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(now)
	out := make([]string, 0, len(s.at))
	for _, e := range s.order {
		if cur, ok := s.at[e.id]; ok && cur.seq == e.seq {
			out = append(out, e.id)
		}
	}
	return out
}

// data is LimitedSet._data as hello sends it: id -> [timestamp, id].
func (s *revokedSet) data(now time.Time) map[string][2]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(now)
	out := make(map[string][2]any, len(s.at))
	for id, e := range s.at {
		out[id] = [2]any{e.t.Sub(s.start).Seconds(), id}
	}
	return out
}
