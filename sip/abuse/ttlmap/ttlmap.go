// Package ttlmap is a sharded map whose entries are forgotten once nobody
// has touched them for a period, with a cap on how many it holds: the state
// of per-source counters under a flood from many sources stays bounded.
//
// There are no timers: each shard keeps two generations, the current one
// and the previous one. When a shard's generation is older than the period
// (or full), the previous generation is dropped and the current one becomes
// the previous. An entry touched in the previous generation moves to the
// current one, so an entry survives at least one period after its last
// touch, and at most two.
package ttlmap

import (
	"sync"
)

// Map holds *V by K.
type Map[K comparable, V any] struct {
	shards   []shard[K, V]
	mask     uint64
	hash     func(K) uint64
	period   int64 // nanoseconds
	shardCap int
}

type shard[K comparable, V any] struct {
	mu        sync.Mutex
	cur, prev map[K]*V
	since     int64 // when cur was started (unix ns)
	_         [40]byte
}

// New returns a map of shards (rounded up to a power of two) holding at
// most maxEntries in all, each forgotten period (ns) after its last touch at
// the earliest. hash spreads keys over the shards.
func New[K comparable, V any](shards, maxEntries int, period int64, hash func(K) uint64) *Map[K, V] {
	n := 1
	for n < shards {
		n <<= 1
	}
	// Each generation of a shard holds up to shardCap: two generations
	// hold at most maxEntries in all.
	c := maxEntries / n / 2
	if c < 1 {
		c = 1
	}
	m := &Map[K, V]{shards: make([]shard[K, V], n), mask: uint64(n - 1), hash: hash, period: period, shardCap: c}
	for i := range m.shards {
		m.shards[i].cur = map[K]*V{}
	}
	return m
}

// Do calls fn with k's entry, under the entry's shard lock; fresh is true
// when the entry was just made (zero V). now is unix nanoseconds.
func (m *Map[K, V]) Do(k K, now int64, fn func(v *V, fresh bool)) {
	s := &m.shards[m.hash(k)&m.mask]
	s.mu.Lock()
	if now-s.since >= m.period {
		m.rotate(s, now)
	}
	v, ok := s.cur[k]
	fresh := false
	if !ok {
		if v, ok = s.prev[k]; ok {
			delete(s.prev, k)
		} else {
			v, fresh = new(V), true
		}
		if len(s.cur) >= m.shardCap {
			m.rotate(s, now) // full: forget the oldest generation early
		}
		s.cur[k] = v
	}
	fn(v, fresh)
	s.mu.Unlock()
}

func (m *Map[K, V]) rotate(s *shard[K, V], now int64) {
	if now-s.since >= 2*m.period {
		s.prev = nil // both generations are idle past the period
	} else {
		s.prev = s.cur
	}
	s.cur = make(map[K]*V, len(s.prev)/2)
	s.since = now
}

// Len counts the entries held (both generations).
func (m *Map[K, V]) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.cur) + len(s.prev)
		s.mu.Unlock()
	}
	return n
}
