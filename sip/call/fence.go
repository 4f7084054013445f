package call

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// Fencing: a node cut off from the store for long enough has its saved
// calls adopted by another node (Adopt, cmd/sori) while it is still up
// and still holds them. Before that can happen it steps back (the Fence,
// sip/nodes.Lease): while it is not the Owner, nothing it does touches a
// saved call, so that at any time one node at most acts on each. No
// timer ends one (an expiry is tried again a fenceRetry later), no BYE,
// no media delete, no record, no re-INVITE to move it to another anchor,
// no save (which could take back a call adopted meanwhile: saved once
// the node is back), no adopting, no loading from the store; a media
// timeout its anchor reports is dropped (the call is asked of its anchor
// again as the node rejoins); the proxy answers the call's in-dialog
// requests 503 (Fenced). A phone's BYE is the exception: it goes on to
// the other phone, so that both hang up whoever holds the call, and its
// end is claimed in the store as ever, which decides the one node that
// finishes it (media delete, record); with the store out of reach the
// end is kept until this node is back (pend). A call not saved
// (ringing, or answered while cut off) is this node's alone: nobody can
// adopt it, and it goes on.
//
// Once its heartbeat is written again the node rejoins (RunFence): it
// asks the store which of the calls it holds are still its own
// (Store.Mine, under the lease of its own index, so that no taker is
// moving them meanwhile). Those another node took, or ended, are dropped
// from memory without a word: no BYE, no delete, no record, the node
// that holds them now does all of that. The others are its own again:
// saved if they changed, and asked of their anchors, as adopted calls
// are. An end this node could not claim in the store before it stepped
// back is kept (pend) and finished then only if the call is still its
// own. Left open: a taker that read this node gone (nodes.Set.Gone) just
// before its heartbeat came back, and starts its Take only after this
// node's check released the lease, still moves the calls; the end claim
// keeps their records single then.

// Fence tells whether this node may act on the calls it saved
// (sip/nodes.Lease).
type Fence interface {
	// Owner: no other node can have adopted this node's calls.
	Owner() bool
	// Left is how long this node stays the Owner at most (0: it is not):
	// a save it sends must reach the store within it.
	Left() time.Duration
	// Rejoining reports whether this node is back after it stepped back,
	// its calls to be checked, and the epoch to Confirm once they are.
	Rejoining() (epoch uint64, ok bool)
	// Confirm makes this node the Owner again once its calls were
	// checked in epoch; false if it stepped back again since.
	Confirm(epoch uint64) bool
}

// errFenced: this node stepped back from its saved calls (Fence).
var errFenced = errors.New("this node is cut off from the dialog store: another node may hold its calls")

// fenceRetry is how long an expiry that came while this node stepped
// back waits before it is tried again; fenceCheck how often RunFence
// looks whether this node is back.
const (
	fenceRetry = time.Second
	fenceCheck = 500 * time.Millisecond
)

// owner reports whether this node may act on its saved calls now.
func (t *Table) owner() bool { return t.cfg.Fence == nil || t.cfg.Fence.Owner() }

// ownerFor is d, cut to how long this node stays the owner of its calls.
func (t *Table) ownerFor(d time.Duration) time.Duration {
	if t.cfg.Fence == nil {
		return d
	}
	return min(d, t.cfg.Fence.Left())
}

// Fenced reports whether this node must leave the call with callID alone
// now: it stepped back from its saved calls (Fence), and this is one of
// them, or one it does not hold (which the store, not to be trusted now,
// may have). The proxy answers its requests 503 with Retry-After: the
// node cannot tell whether the call is still its own, and acting on it
// (claiming its end, a new offer on its anchor) could undo what the node
// that adopted it does; the phone sends the request again in a few
// seconds, by when this node is back, or it was dropped from this one.
// hangup: the request is a phone's BYE, taken for a call this node holds
// (see above).
func (t *Table) Fenced(callID string, hangup bool) bool {
	if !t.persist || t.owner() {
		return false
	}
	c := t.Find(callID)
	if c == nil {
		return true
	}
	if hangup {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.saved
}

// fenced reports whether c must be left alone now; c.mu held.
func (c *Call) fenced() bool { return c.saved && !c.t.owner() }

// RunFence has this node rejoin (Rejoin) each time it is back after it
// stepped back, until ctx ends. Without a Fence it returns at once.
func (t *Table) RunFence(ctx context.Context, timeout time.Duration) {
	if t.cfg.Fence == nil || !t.persist {
		return
	}
	tk := time.NewTicker(fenceCheck)
	defer tk.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if _, ok := t.cfg.Fence.Rejoining(); !ok {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		kept, dropped, err := t.Rejoin(rctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				t.log.Warn("calls not checked after the node was cut off: still leaving them alone", "error", err)
			}
			failing = true
		case err == nil:
			failing = false
			t.log.Info("node back: its calls checked", "kept", kept, "dropped", dropped)
		}
	}
}

// Rejoin checks the calls this node holds against the store once it is
// back (Fence.Rejoining): those that are another node's now are dropped
// silently, the others resumed, and this node is the Owner again. It
// returns how many calls it kept and dropped; nothing to do when the
// node is not rejoining.
func (t *Table) Rejoin(ctx context.Context) (kept, dropped int, err error) {
	if t.cfg.Fence == nil {
		return 0, 0, nil
	}
	epoch, ok := t.cfg.Fence.Rejoining()
	if !ok || !t.persist {
		return 0, 0, nil
	}
	t.mu.Lock()
	held := make([]*Call, 0, len(t.m))
	for _, c := range t.m {
		held = append(held, c)
	}
	t.mu.Unlock()
	var ids []string
	var check []*Call
	for _, c := range held {
		c.mu.Lock()
		if c.st.Phase == Answered && c.st.Dialog {
			ids = append(ids, c.st.Record.CallID)
			check = append(check, c)
		}
		c.mu.Unlock()
	}
	ends := t.pended()
	for id := range ends {
		ids = append(ids, id)
	}
	mine := map[string]bool{}
	if len(ids) > 0 {
		if mine, err = t.cfg.Store.Mine(ctx, ids); err != nil {
			for _, p := range ends {
				t.pend(p.st, p.finish) // checked next time
			}
			return 0, 0, err
		}
	}
	var ours []*Call
	for _, c := range check {
		if mine[c.ID()] {
			ours = append(ours, c)
			continue
		}
		if c.drop() {
			dropped++
		}
	}
	if !t.cfg.Fence.Confirm(epoch) {
		for _, p := range ends {
			t.pend(p.st, p.finish)
		}
		return 0, dropped, errFenced // cut off again meanwhile: checked again once back
	}
	for id, p := range ends {
		if !mine[id] {
			dropped++
			t.dropped.Inc()
			t.log.Info("call end left to the node that holds the call now", "call_id", id)
			continue
		}
		// Still this node's: its end is claimed now, and finished.
		t.background(func(ctx context.Context) {
			if t.claim(ctx, p.st, p.finish) {
				p.finish(ctx)
			}
		})
	}
	var anchored []*Call
	for _, c := range ours {
		c.mu.Lock()
		if c.st.Phase == Answered {
			kept++
			if c.dirty || !c.saved {
				c.save() // what changed meanwhile, or a call answered meanwhile
			}
			if _, err := netip.ParseAddrPort(c.st.Anchor); err == nil {
				anchored = append(anchored, c)
			}
		}
		c.mu.Unlock()
	}
	t.reclaim(anchored) // a media timeout reported while it stepped back was dropped
	return kept, dropped, nil
}

// pendingEnd is the end of a saved call this node could not claim in
// the store before it was cut off: its state, and what is left to do
// once claimed (media delete, BYEs, record).
type pendingEnd struct {
	st     State
	finish func(context.Context)
}

// pend keeps an end until this node rejoins.
func (t *Table) pend(st State, finish func(context.Context)) {
	t.pendMu.Lock()
	t.pending[st.Record.CallID] = pendingEnd{st, finish}
	t.pendMu.Unlock()
}

// pended takes the ends kept until this node rejoined.
func (t *Table) pended() map[string]pendingEnd {
	t.pendMu.Lock()
	defer t.pendMu.Unlock()
	p := t.pending
	t.pending = map[string]pendingEnd{}
	return p
}

// drop lets go of a call another node holds now (it took or ended it
// while this node was cut off): no BYE, no media delete, no record, the
// other node does those. What this node counted for it (its trunk slot,
// its toll count) it gives back. False when it had ended already.
func (c *Call) drop() bool {
	c.mu.Lock()
	if c.st.Phase == Ended {
		c.mu.Unlock()
		return false
	}
	phase := c.st.Phase
	c.st.Phase = Ended
	c.timer.Stop()
	c.timer = nil
	c.stopRetry()
	st := c.st
	c.mu.Unlock()
	t := c.t
	t.remove(c)
	t.letGo(phase, st)
	t.dropped.Inc()
	t.log.Info("call dropped: another node holds it now", "call_id", st.Record.CallID)
	return true
}
