package nodes

import (
	"sync"
	"time"
)

// Self-fencing. A node whose heartbeat the others cannot see for
// GoneAfter has its saved calls adopted by one of them (cmd/sori,
// sip/call). A node cut off from Redis is still up, and still holds
// those calls: it must step back before anyone can adopt them, not
// after. Its heartbeat is its lease: renewed at each heartbeat written,
// timed from when the write was sent (Redis scored it later, on its own
// clock, so the others' GoneAfter starts later than this node's). Once
// the lease is older than GoneAfter less a BeatTTL (the margin for the
// clocks' rates and for a taker's poll), the node is Fenced: it acts on
// none of the calls it saved (sip/call: no timer ends one, no BYE, no
// media delete, no record, no re-INVITE, no save; in-dialog requests get
// 503). A heartbeat written again makes it Rejoining: its calls are
// checked against Redis (those another node took are dropped, the rest
// resumed), and only then does Confirm make it the Owner again.

// Standing is what a node may do with the calls it saved.
type Standing int

const (
	// Owner: its lease is fresh; no other node can have adopted its calls.
	Owner Standing = iota
	// Fenced: its lease is too old; another node may adopt its calls at
	// any moment, so it acts on none of them.
	Fenced
	// Rejoining: its lease was renewed after it was Fenced; it acts on
	// none of its calls until they are checked (Confirm).
	Rejoining
)

func (s Standing) String() string {
	return [...]string{"owner", "fenced", "rejoining"}[s]
}

// Lease is a node's hold on its saved calls, by when its heartbeat was
// last written. Safe for concurrent use.
type Lease struct {
	now  func() time.Time
	safe time.Duration // how old the lease may grow before the node is Fenced

	mu      sync.Mutex
	renewed time.Time // when the last heartbeat written was sent
	// lapsedAt is the renewal whose lapse was last seen (each lapse
	// counts once: a new epoch); stepped: fenced since the last Confirm.
	lapsedAt time.Time
	stepped  bool
	epoch    uint64
}

// NewLease is the lease of a node whose calls the others adopt once its
// heartbeat has been gone for goneAfter; now is the clock (time.Now). It
// starts renewed now: the node claims its heartbeat (Join) before it
// holds any call.
func NewLease(goneAfter time.Duration, now func() time.Time) *Lease {
	if now == nil {
		now = time.Now
	}
	return &Lease{now: now, safe: fenceAfter(goneAfter), renewed: now()}
}

// fenceAfter is how old a lease may grow: goneAfter less a BeatTTL,
// never below a BeatEvery (a goneAfter that short leaves no margin).
func fenceAfter(goneAfter time.Duration) time.Duration {
	return max(goneAfter-BeatTTL, BeatEvery)
}

// Renewed records a heartbeat written, sent at at. An older one than the
// last (a reply come late) changes nothing; one after a gap longer than
// the lease lasts is a lapse even if nobody looked meanwhile.
func (l *Lease) Renewed(at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !at.After(l.renewed) {
		return
	}
	if at.Sub(l.renewed) > l.safe {
		l.lapse()
	}
	l.renewed = at
}

// lapse marks the current renewal lapsed, once; l.mu held.
func (l *Lease) lapse() {
	if l.lapsedAt.Equal(l.renewed) && l.stepped {
		return
	}
	l.lapsedAt, l.stepped = l.renewed, true
	l.epoch++
}

// standing is Standing with l.mu held.
func (l *Lease) standing() Standing {
	if l.now().Sub(l.renewed) > l.safe {
		l.lapse()
		return Fenced
	}
	if l.stepped {
		return Rejoining
	}
	return Owner
}

// Standing is what the node may do with its calls now.
func (l *Lease) Standing() Standing {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.standing()
}

// Owner reports whether the node may act on its saved calls now.
func (l *Lease) Owner() bool { return l.Standing() == Owner }

// Rejoining reports whether the node's calls are to be checked now (its
// lease renewed after a lapse), and the epoch to Confirm once they are.
func (l *Lease) Rejoining() (epoch uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch, l.standing() == Rejoining
}

// Confirm makes the node the Owner of its calls again once they were
// checked in epoch: false (still not the owner) if the lease lapsed
// again since, or lapses now.
func (l *Lease) Confirm(epoch uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.standing() != Rejoining || l.epoch != epoch {
		return false
	}
	l.stepped = false
	return true
}

// Left is how long the node stays the Owner at most if its lease is not
// renewed: what bounds a write it makes as the owner (a save that
// reached Redis after another node adopted the call would take it
// back); 0 when it is not the Owner.
func (l *Lease) Left() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.standing() != Owner {
		return 0
	}
	return l.safe - l.now().Sub(l.renewed)
}

// Since is how long ago the lease was last renewed.
func (l *Lease) Since() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.now().Sub(l.renewed)
}
