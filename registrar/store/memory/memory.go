// Package memory is the single-node store: bindings and subscribers in this
// process, sharded by AOR so concurrent REGISTERs for different users do not
// contend. Everything is lost when the process exits.
package memory

import (
	"context"
	"hash/maphash"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/sori-voice/sori/registrar/store"
)

const shards = 64

// Store implements store.Store in memory.
type Store struct {
	seed   maphash.Seed
	shards [shards]shard

	usersMu sync.RWMutex
	users   map[string]store.Subscriber
	numbers map[string]string // E.164 -> user

	stop chan struct{}
	done chan struct{}
}

type shard struct {
	mu   sync.Mutex
	aors map[string][]store.Binding
}

// New returns an empty store; it sweeps expired bindings every sweep interval.
func New(sweep time.Duration) *Store {
	s := &Store{
		seed:  maphash.MakeSeed(),
		users: map[string]store.Subscriber{}, numbers: map[string]string{},
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for i := range s.shards {
		s.shards[i].aors = map[string][]store.Binding{}
	}
	go s.sweeper(sweep)
	return s
}

func (s *Store) shard(aor string) *shard {
	return &s.shards[maphash.String(s.seed, aor)%shards]
}

func live(bs []store.Binding, now time.Time) []store.Binding {
	out := make([]store.Binding, 0, len(bs))
	for _, b := range bs {
		if b.Expires.After(now) {
			out = append(out, b)
		}
	}
	return out
}

func allLive(bs []store.Binding, now time.Time) bool {
	for i := range bs {
		if !bs[i].Expires.After(now) {
			return false
		}
	}
	return true
}

// Update implements store.Bindings.
func (s *Store) Update(ctx context.Context, u store.Update) ([]store.Binding, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sh := s.shard(u.AOR)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// Apply copies what it is given, so the stored slice goes in as it is
	// when none of it has expired: live's copy was one of three slice
	// allocations per REGISTER (BenchmarkRegisterMemory, 2026-12-04: 6446 → 6178 B/op,
	// 92 → 91 allocs/op).
	cur := sh.aors[u.AOR]
	if !allLive(cur, u.Now) {
		cur = live(cur, u.Now)
	}
	next, err := store.Apply(cur, u)
	if err != nil {
		return nil, err
	}
	if len(next) == 0 {
		delete(sh.aors, u.AOR)
		return nil, nil
	}
	sh.aors[u.AOR] = next
	return slices.Clone(next), nil
}

// Lookup implements store.Bindings.
func (s *Store) Lookup(ctx context.Context, aor string, now time.Time) ([]store.Binding, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sh := s.shard(aor)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return live(sh.aors[aor], now), nil
}

// Count implements store.Bindings.
func (s *Store) Count(ctx context.Context, now time.Time) (int, error) {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, bs := range sh.aors {
			for _, b := range bs {
				if b.Expires.After(now) {
					n++
				}
			}
		}
		sh.mu.Unlock()
	}
	return n, ctx.Err()
}

func (s *Store) sweeper(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			for i := range s.shards {
				sh := &s.shards[i]
				sh.mu.Lock()
				for aor, bs := range sh.aors {
					if l := live(bs, now); len(l) == 0 {
						delete(sh.aors, aor)
					} else if len(l) != len(bs) {
						sh.aors[aor] = l
					}
				}
				sh.mu.Unlock()
			}
		}
	}
}

// Subscriber implements store.Subscribers.
func (s *Store) Subscriber(_ context.Context, name string) (store.Subscriber, error) {
	s.usersMu.RLock()
	defer s.usersMu.RUnlock()
	u, ok := s.users[name]
	if !ok {
		return store.Subscriber{}, store.ErrNotFound
	}
	return u, nil
}

// PutSubscriber implements store.Subscribers.
func (s *Store) PutSubscriber(_ context.Context, u store.Subscriber) error {
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	for _, n := range s.users[u.Name].Numbers {
		delete(s.numbers, n)
	}
	for _, n := range u.Numbers {
		s.numbers[n] = u.Name
	}
	s.users[u.Name] = u
	return nil
}

// SubscriberByNumber implements store.Subscribers.
func (s *Store) SubscriberByNumber(_ context.Context, number string) (store.Subscriber, error) {
	s.usersMu.RLock()
	defer s.usersMu.RUnlock()
	name, ok := s.numbers[number]
	if !ok {
		return store.Subscriber{}, store.ErrNotFound
	}
	return s.users[name], nil
}

// DeleteSubscriber implements store.Subscribers.
func (s *Store) DeleteSubscriber(_ context.Context, name string) error {
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	u, ok := s.users[name]
	if !ok {
		return store.ErrNotFound
	}
	for _, n := range u.Numbers {
		delete(s.numbers, n)
	}
	delete(s.users, name)
	return nil
}

// ListSubscribers implements store.Subscribers.
func (s *Store) ListSubscribers(context.Context) ([]store.Subscriber, error) {
	s.usersMu.RLock()
	defer s.usersMu.RUnlock()
	out := make([]store.Subscriber, 0, len(s.users))
	for _, u := range s.users {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error { return ctx.Err() }

// Close stops the sweeper.
func (s *Store) Close() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
		<-s.done
	}
	return nil
}
