// Package ports hands out RTP/RTCP socket pairs from a port range: an even
// port for RTP and the next odd one for RTCP (RFC 3550 §11), bound on the
// anchor's media address.
//
// On Linux a released pair is parked rather than closed, and handed out
// again once it has been quiet for Quarantine: binding and closing two
// sockets per leg was a fifth of sori-anchor's CPU at 800 anchored calls/s
// (ListenUDP, Go's poller taking them and giving them up, close; profile
// of make load-calls MEDIA=1, 2026-12-03).
package ports

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// ErrExhausted: no free pair is left in the range.
var ErrExhausted = errors.New("ports: range exhausted")

// Quarantine is how long a released pair stays parked before it is handed
// out again while other pairs are free: late packets of the old call are
// drained, not relayed into a new one.
const Quarantine = 2 * time.Second

// MaxParked bounds the pairs kept bound while nobody uses them (each holds
// two descriptors and, parked, a receive buffer shrunk to the kernel's
// minimum); the oldest beyond it are closed.
const MaxParked = 4096

// Pair is an RTP socket and its RTCP socket (sockets_linux.go,
// sockets_other.go say how a user reaches them).
type Pair struct {
	Port int // the RTP port; RTCP is Port+1

	socks    pairSockets
	addr     netip.Addr
	closer   func()
	released time.Time // when parked
}

// Addr is the address the pair is bound on.
func (p *Pair) Addr() netip.Addr { return p.addr }

// SetCloser makes Release call f first: a user that took the sockets over
// (media/relay's workers) stops using them before they are parked or
// closed.
func (p *Pair) SetCloser(f func()) { p.closer = f }

// Allocator allocates pairs round robin over the range, so a port just
// released is not handed out again at once (late packets of the old call
// would reach the new one); a parked pair is handed out again, oldest
// first, after Quarantine.
type Allocator struct {
	addr     netip.Addr
	min, max int // even min, max inclusive
	mu       sync.Mutex
	next     int
	used     map[int]bool
	parked   map[int]*Pair
	queue    []*Pair // parked, oldest first; entries no longer parked are skipped
	maxPark  int
	now      func() time.Time
}

// New returns an allocator for [min, max] on addr.
func New(addr netip.Addr, min, max int) (*Allocator, error) {
	if min%2 == 1 {
		min++
	}
	if min < 1024 || max > 65535 || max < min+1 {
		return nil, fmt.Errorf("ports: bad range %d-%d", min, max)
	}
	return &Allocator{addr: addr.Unmap(), min: min, max: max, next: min, used: map[int]bool{}, parked: map[int]*Pair{}, maxPark: MaxParked, now: time.Now}, nil
}

// Size is the number of pairs in the range.
func (a *Allocator) Size() int { return (a.max - a.min + 1) / 2 }

// InUse is the number of pairs allocated.
func (a *Allocator) InUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.used)
}

// Parked is the number of released pairs kept bound for reuse.
func (a *Allocator) Parked() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.parked)
}

// Allocate hands out a parked pair quiet for Quarantine, else binds the
// next free pair. Ports another process holds are skipped. With nothing
// else free, the oldest parked pair is handed out even if recent.
func (a *Allocator) Allocate() (*Pair, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.unparkOldest(a.now().Add(-Quarantine)); p != nil {
		return p, nil
	}
	// Without a pair neither used nor parked there is nothing to bind: no
	// scan of the range (a full one per call when parked pairs fill it).
	for tries := a.Size(); tries > 0 && len(a.used)+len(a.parked) < a.Size(); tries-- {
		port := a.next
		a.next += 2
		if a.next+1 > a.max {
			a.next = a.min
		}
		if a.used[port] || a.parked[port] != nil {
			continue
		}
		p, err := bindPair(a.addr, port)
		if err != nil {
			continue
		}
		a.used[port] = true
		return p, nil
	}
	if p := a.unparkOldest(time.Time{}); p != nil {
		return p, nil
	}
	return nil, ErrExhausted
}

// unparkOldest takes out the oldest parked pair released before cutoff
// (zero: any), drained and ready; nil if none.
func (a *Allocator) unparkOldest(cutoff time.Time) *Pair {
	for len(a.queue) > 0 {
		p := a.queue[0]
		if a.parked[p.Port] != p {
			a.queue = a.queue[1:] // claimed since
			continue
		}
		if !cutoff.IsZero() && p.released.After(cutoff) {
			return nil
		}
		a.queue[0] = nil
		a.queue = a.queue[1:]
		if q := a.take(p); q != nil {
			return q
		}
	}
	return nil
}

// take moves a parked pair to used, drained; nil (and closed) if it
// cannot be made ready.
func (a *Allocator) take(p *Pair) *Pair {
	delete(a.parked, p.Port)
	if err := p.socks.unpark(); err != nil {
		p.socks.close()
		return nil
	}
	a.used[p.Port] = true
	return p
}

// Release takes the pair back: parked for reuse where the platform allows,
// closed otherwise.
func (a *Allocator) Release(p *Pair) {
	if p.closer != nil {
		p.closer()
		p.closer = nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.used[p.Port] {
		return // released already
	}
	delete(a.used, p.Port)
	if len(a.parked) >= a.maxPark || !p.socks.park() {
		p.socks.close()
		return
	}
	p.released = a.now()
	a.parked[p.Port] = p
	a.queue = append(a.queue, p)
	if len(a.queue) > 2*a.maxPark {
		a.compact()
	}
}

// compact drops the queue's entries no longer parked.
func (a *Allocator) compact() {
	q := a.queue[:0]
	for _, p := range a.queue {
		if a.parked[p.Port] == p {
			q = append(q, p)
		}
	}
	clear(a.queue[len(q):])
	a.queue = q
}

// Close closes every parked pair (the ones in use are their users').
func (a *Allocator) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for port, p := range a.parked {
		p.socks.close()
		delete(a.parked, port)
	}
	clear(a.queue)
	a.queue = nil
}

// ErrTaken: the pair asked for by Claim is allocated already or cannot be bound.
var ErrTaken = errors.New("ports: pair not available")

// Claim binds the pair whose RTP port is port, as Allocate would have: an
// anchor restoring its calls after a restart takes back the ports the
// phones still send to.
func (a *Allocator) Claim(port int) (*Pair, error) {
	if port%2 == 1 || port < a.min || port+1 > a.max {
		return nil, fmt.Errorf("%w: %d is not an RTP port of %d-%d", ErrTaken, port, a.min, a.max)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.used[port] {
		return nil, fmt.Errorf("%w: %d is in use", ErrTaken, port)
	}
	var p *Pair
	if pp := a.parked[port]; pp != nil {
		p = a.take(pp)
	}
	if p == nil {
		var err error
		if p, err = bindPair(a.addr, port); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrTaken, err)
		}
		a.used[port] = true
	}
	if port >= a.next {
		// New calls go on after the restored ones, as they would have.
		a.next = port + 2
		if a.next+1 > a.max {
			a.next = a.min
		}
	}
	return p, nil
}
