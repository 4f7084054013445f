// Package bans is the list of banned source addresses. Every node keeps the
// whole list in memory, so checking a packet never waits for the network;
// with a Shared store (Redis) the list is the same on every node: a ban
// added on one is published to the others at once, and each node re-reads
// the whole list now and then in case it missed a message. Bans end by
// themselves at their Until.
package bans

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Ban is one banned address.
type Ban struct {
	Address netip.Addr `json:"address"`
	Reason  string     `json:"reason"`
	Since   time.Time  `json:"since"`
	Until   time.Time  `json:"until"`
	Node    string     `json:"node"` // who banned it: a node name, or "cli"
}

// Event is a change another node (or this one) published.
type Event struct {
	Ban     Ban  // the ban added; for a removal only Ban.Address is set
	Removed bool // the ban was lifted
}

// Shared is a store the ban list of several nodes lives in.
type Shared interface {
	Add(ctx context.Context, b Ban) error
	Remove(ctx context.Context, a netip.Addr) error
	// All returns the live bans (and forgets the expired ones).
	All(ctx context.Context, now time.Time) ([]Ban, error)
	// Watch calls fn for every published change until ctx ends; ready
	// is called once the subscription is in place.
	Watch(ctx context.Context, ready func(), fn func(Event)) error
}

// MaxBans caps the list: a flood of bans (many sources over their limit)
// cannot grow it without end. Beyond it new bans are refused.
const MaxBans = 1_000_000

// List is the ban list of this node.
type List struct {
	node   string
	shared Shared // nil: this process only
	log    *slog.Logger

	mu sync.RWMutex
	m  map[[16]byte]Ban
	n  atomic.Int64 // len(m), read without the lock

	writes chan Ban // bans added from the packet path, written to shared in the background

	ready     chan struct{} // closed once Run has the shared list and its updates
	readyOnce sync.Once
}

// New returns a List; shared may be nil (the list lives in this process).
func New(node string, shared Shared, log *slog.Logger) *List {
	return &List{node: node, shared: shared, log: log, m: map[[16]byte]Ban{}, writes: make(chan Ban, 4096), ready: make(chan struct{})}
}

func key(a netip.Addr) [16]byte { return a.As16() }

// Banned reports whether a is banned now. Without any ban it costs one
// atomic load; a ban is looked up under a read lock.
func (l *List) Banned(a netip.Addr) bool {
	if l.n.Load() == 0 {
		return false
	}
	l.mu.RLock()
	b, ok := l.m[key(a)]
	l.mu.RUnlock()
	return ok && time.Now().Before(b.Until)
}

// put records b locally; false when a ban at least as long is already there.
func (l *List) put(b Ban) bool {
	b.Address = b.Address.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.m[key(b.Address)]; ok && !old.Until.Before(b.Until) {
		return false
	}
	if len(l.m) >= MaxBans {
		return false
	}
	l.m[key(b.Address)] = b
	l.n.Store(int64(len(l.m)))
	return true
}

func (l *List) drop(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.m[key(a)]
	delete(l.m, key(a))
	l.n.Store(int64(len(l.m)))
	return ok
}

func (l *List) fill(b *Ban) {
	if b.Node == "" {
		b.Node = l.node
	}
	if b.Since.IsZero() {
		b.Since = time.Now()
	}
	b.Address = b.Address.Unmap()
}

// Post bans b.Address at once on this node; other nodes learn it a moment
// later (it is written to the shared store in the background, so the
// packet path never waits). False when it was banned already.
func (l *List) Post(b Ban) bool {
	l.fill(&b)
	if !l.put(b) {
		return false
	}
	if l.shared != nil {
		select {
		case l.writes <- b:
		default:
			l.log.Warn("ban not shared: too many bans at once", "address", b.Address)
		}
	}
	return true
}

// Add bans b.Address and waits until the shared store has it.
func (l *List) Add(ctx context.Context, b Ban) error {
	l.fill(&b)
	l.mu.Lock()
	l.m[key(b.Address)] = b // replaces a longer ban too: the operator decides
	l.n.Store(int64(len(l.m)))
	l.mu.Unlock()
	if l.shared != nil {
		return l.shared.Add(ctx, b)
	}
	return nil
}

// Remove lifts the ban of a; found is false when a was not banned here.
func (l *List) Remove(ctx context.Context, a netip.Addr) (found bool, err error) {
	a = a.Unmap()
	found = l.drop(a)
	if l.shared != nil {
		err = l.shared.Remove(ctx, a)
	}
	return found, err
}

// List returns the live bans, soonest to end first.
func (l *List) List(now time.Time) []Ban {
	l.mu.RLock()
	out := make([]Ban, 0, len(l.m))
	for _, b := range l.m {
		if now.Before(b.Until) {
			out = append(out, b)
		}
	}
	l.mu.RUnlock()
	slices.SortFunc(out, func(a, b Ban) int { return a.Until.Compare(b.Until) })
	return out
}

// Len is the number of bans held (some may have just expired).
func (l *List) Len() int { return int(l.n.Load()) }

// Run keeps the list current until ctx ends: expired bans are forgotten
// every sweep; with a shared store, bans posted here are written, changes
// published by other nodes are applied, and the whole list is re-read
// every sweep.
func (l *List) Run(ctx context.Context, sweep time.Duration) {
	if l.shared == nil {
		l.readyOnce.Do(func() { close(l.ready) })
	} else {
		go l.writer(ctx)
		go func() {
			for ctx.Err() == nil {
				err := l.shared.Watch(ctx, func() {
					l.resync(ctx) // what was published before the subscription
					l.readyOnce.Do(func() { close(l.ready) })
				}, l.apply)
				if ctx.Err() != nil {
					return
				}
				l.log.Warn("ban updates: subscription lost", "error", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}()
	}
	t := time.NewTicker(sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.expire(time.Now())
		if l.shared != nil {
			l.resync(ctx)
		}
	}
}

// Ready is closed once Run has read the shared list and follows its
// updates (at once without a shared store).
func (l *List) Ready() <-chan struct{} { return l.ready }

func (l *List) apply(e Event) {
	if e.Removed {
		l.drop(e.Ban.Address.Unmap())
		return
	}
	l.mu.Lock()
	l.m[key(e.Ban.Address.Unmap())] = e.Ban
	l.n.Store(int64(len(l.m)))
	l.mu.Unlock()
}

func (l *List) writer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-l.writes:
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := l.shared.Add(wctx, b); err != nil {
				l.log.Warn("ban not shared", "address", b.Address, "error", err)
			}
			cancel()
		}
	}
}

// resync replaces the list with the shared store's. Bans posted here in the
// last moments and not written yet are kept.
func (l *List) resync(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	now := time.Now()
	all, err := l.shared.All(rctx, now)
	if err != nil {
		l.log.Warn("ban list not re-read", "error", err)
		return
	}
	m := make(map[[16]byte]Ban, len(all))
	for _, b := range all {
		m[key(b.Address.Unmap())] = b
	}
	l.mu.Lock()
	for k, b := range l.m {
		if _, ok := m[k]; !ok && b.Node == l.node && now.Sub(b.Since) < 5*time.Second && now.Before(b.Until) {
			m[k] = b
		}
	}
	l.m = m
	l.n.Store(int64(len(m)))
	l.mu.Unlock()
}

func (l *List) expire(now time.Time) {
	l.mu.Lock()
	for k, b := range l.m {
		if !now.Before(b.Until) {
			delete(l.m, k)
		}
	}
	l.n.Store(int64(len(l.m)))
	l.mu.Unlock()
}
