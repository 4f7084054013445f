package nodes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Every node writes a heartbeat, its id → its address, that expires after
// BeatTTL and is written again every BeatEvery. A node that stops (killed,
// its host gone, cut off from Redis) is taken for down once its heartbeat
// expires: bindings it holds are skipped without trying it, not after
// timer C. Before that, a node that is gone but not yet expired refuses
// the connection, which also skips its bindings at once (sip/proxy). One
// whose heartbeat has been gone for GoneAfter is gone for good (Gone): a
// live node adopts the calls it saved (cmd/sori, sip/call). A node cut
// off from Redis steps back from its calls before that (fence.go): its
// Lease, renewed by each heartbeat written, lapses GoneAfter less a
// BeatTTL after the last one.

const (
	BeatEvery = time.Second
	BeatTTL   = 3 * time.Second
	// GoneAfter is how long a node's heartbeat must have been gone before
	// the other nodes take it for gone for good and one of them adopts the
	// calls it saved (cmd/sori). A node restarted (by hand, by systemd, or
	// after a crash) beats again within a few seconds and adopts its own
	// calls, which keeps them where its phones' dialogs route; a few
	// BeatTTLs leave it that time, and ride out the seconds a Redis
	// failover stops every heartbeat. Nothing urgent waits on it: an
	// in-dialog request for a call of the gone node is served by whichever
	// node gets it (the call is loaded from Redis); only the calls nobody
	// sends anything for wait, for their media or dialog timeout.
	GoneAfter = 5 * BeatTTL
	// cacheFor is how long a node's heartbeat, read once, is believed.
	cacheFor = time.Second
	// readTimeout bounds reading a heartbeat on a request's path.
	readTimeout = 500 * time.Millisecond
)

// Beats keeps the heartbeats (sip/nodes/redisnodes).
type Beats interface {
	// Claim writes id's heartbeat unless another address holds it; it
	// returns the address holding it afterwards.
	Claim(ctx context.Context, id, address string, ttl time.Duration) (string, error)
	// Beat writes id's heartbeat and returns the address it held before
	// ("" when it had expired).
	Beat(ctx context.Context, id, address string, ttl time.Duration) (string, error)
	// Address is the address in id's heartbeat; "" when there is none.
	Address(ctx context.Context, id string) (string, error)
	// Leave removes id's heartbeat if address holds it.
	Leave(ctx context.Context, id, address string) error
	// Gone lists the nodes that have written a heartbeat and whose last one
	// was written more than after ago (on one clock, Redis's), none since.
	Gone(ctx context.Context, after time.Duration) ([]string, error)
}

// ErrIDInUse: another live node has this node's id.
var ErrIDInUse = errors.New("node id in use by another node")

type peerState struct {
	addr Address
	up   bool
	at   time.Time
}

// Join claims this node's id; ErrIDInUse when a live node at another
// address holds it (two nodes with one id would take each other's calls).
func (s *Set) Join(ctx context.Context) error {
	if s.cfg.Beats == nil {
		return nil
	}
	sent := s.now()
	holder, err := s.cfg.Beats.Claim(ctx, s.cfg.ID, s.cfg.Self.String(), BeatTTL)
	if err != nil {
		return fmt.Errorf("node %s: heartbeat: %w", s.cfg.ID, err)
	}
	if holder != s.cfg.Self.String() {
		return fmt.Errorf("node %s: %w at %s", s.cfg.ID, ErrIDInUse, holder)
	}
	s.lease.Renewed(sent)
	return nil
}

// Run writes this node's heartbeat every BeatEvery until ctx ends, then
// removes it, so the other nodes skip this one at once. Each heartbeat
// written renews the Lease, from when it was sent.
func (s *Set) Run(ctx context.Context) {
	if s.cfg.Beats == nil {
		return
	}
	self := s.cfg.Self.String()
	t := time.NewTicker(BeatEvery)
	defer t.Stop()
	failing, fenced, clash := false, false, ""
	for {
		sent := s.now()
		bctx, cancel := context.WithTimeout(ctx, BeatEvery)
		prev, err := s.cfg.Beats.Beat(bctx, s.cfg.ID, self, BeatTTL)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				s.cfg.Log.Warn("node heartbeat not written: other nodes will take this one for down", "node", s.cfg.ID, "error", err)
			}
			failing = true
			if !fenced && s.lease.Standing() == Fenced {
				fenced = true
				s.cfg.Log.Error("node heartbeat not written for too long: its calls may be adopted by another node, this one stops acting on them",
					"node", s.cfg.ID, "since", s.lease.Since().Round(time.Millisecond))
			}
		case err == nil:
			s.lease.Renewed(sent)
			fenced = false
			if failing {
				s.cfg.Log.Info("node heartbeat written again", "node", s.cfg.ID)
			}
			failing = false
			if prev != "" && prev != self && prev != clash {
				s.cfg.Log.Error("another node uses this sip.node_id: give every node its own", "node", s.cfg.ID, "other", prev)
			}
			clash = prev
		}
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.Background(), readTimeout)
			if err := s.cfg.Beats.Leave(lctx, s.cfg.ID, self); err != nil {
				s.cfg.Log.Warn("node heartbeat not removed at shutdown: other nodes skip this one once it expires", "node", s.cfg.ID, "error", err)
			}
			cancel()
			return
		case <-t.C:
		}
	}
}

// Gone lists the other nodes whose heartbeat has been gone for
// Config.GoneAfter at least: stopped, or crashed, and not started again.
// Without heartbeats (no Redis) there are none.
func (s *Set) Gone(ctx context.Context) ([]string, error) {
	if s.cfg.Beats == nil {
		return nil, nil
	}
	ids, err := s.cfg.Beats.Gone(ctx, s.cfg.GoneAfter)
	if err != nil {
		return nil, fmt.Errorf("nodes gone: %w", err)
	}
	return slices.DeleteFunc(ids, func(id string) bool { return id == s.cfg.ID }), nil
}

// address is where node id is, and whether it is up: its heartbeat is
// there and names one of the configured node addresses.
func (s *Set) address(ctx context.Context, id string) (Address, bool) {
	return s.read(ctx, id, false)
}

// read is address; fresh: the heartbeat is read again whatever the cache.
func (s *Set) read(ctx context.Context, id string, fresh bool) (Address, bool) {
	now := s.now()
	s.mu.Lock()
	p, known := s.cache[id]
	s.mu.Unlock()
	if known && !fresh && now.Sub(p.at) < cacheFor {
		return p.addr, p.up
	}
	if s.cfg.Beats == nil {
		return Address{}, false // no heartbeats: nowhere to learn the address from
	}
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	v, err := s.cfg.Beats.Address(rctx, id)
	cancel()
	if err != nil {
		// Redis unreachable: what was last known stands (the node, if
		// gone, refuses the connection).
		s.cfg.Log.Warn("node heartbeat not read", "node", id, "error", err)
		return p.addr, known && p.up
	}
	next := peerState{at: now, addr: p.addr} // a node gone is shown where it was
	if v != "" {
		a, err := ParseAddress(v)
		switch {
		case err != nil:
			s.cfg.Log.Warn("node heartbeat holds no address: its bindings are skipped", "node", id, "address", v)
		case s.peers[a.Addr] != a.Transport || a.Addr == s.cfg.Self.Addr:
			// The transport too: a heartbeat cannot turn tls into tcp.
			s.cfg.Log.Warn("node heartbeat names an address not in sip.nodes: its bindings are skipped", "node", id, "address", v)
		default:
			next.addr, next.up = a, true
		}
	}
	s.mu.Lock()
	s.cache[id] = next
	s.mu.Unlock()
	return next.addr, next.up
}

// Peer is one node as this node sees it (GET /nodes).
type Peer struct {
	ID      string `json:"id"`
	Address string `json:"address,omitempty"` // where it is, or was last seen
	Up      bool   `json:"up"`
	Self    bool   `json:"self,omitempty"`
}

// Peers is this node, then every node it has met in a binding, each one's
// heartbeat read again.
func (s *Set) Peers(ctx context.Context) []Peer {
	s.mu.Lock()
	ids := make([]string, 0, len(s.cache))
	for id := range s.cache {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	slices.Sort(ids)
	out := []Peer{{ID: s.cfg.ID, Address: s.cfg.Self.String(), Up: true, Self: true}}
	for _, id := range ids {
		a, up := s.read(ctx, id, true)
		p := Peer{ID: id, Up: up}
		if a.Addr.IsValid() {
			p.Address = a.String()
		}
		out = append(out, p)
	}
	return out
}
