package call

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Store keeps answered calls beyond this process, so that a node that
// restarts, or another node sharing the store, can take an in-dialog
// request for a call it does not hold (sip/call/redisdialogs). NoStore
// keeps nothing: one node, calls live and end in its memory alone.
type Store interface {
	// Save writes the call's state, kept for ttl. A call whose end was
	// claimed already (Delete) is not written again.
	Save(ctx context.Context, st State, ttl time.Duration) error
	// Load reads the call saved with callID; ok is false when there is
	// none (never saved, ended, or expired).
	Load(ctx context.Context, callID string) (st State, ok bool, err error)
	// Delete claims the call's end and removes its state: first is true
	// for the one caller, on any node sharing the store, that ends it
	// first; only that one writes its record. The claim is kept for ttl.
	Delete(ctx context.Context, callID string, ttl time.Duration) (first bool, err error)
	// Take makes the calls saved last by node, and not ended, the calls
	// of the store's own node (the one whose Saves it keeps an index of)
	// and returns them: what node adopts when it starts again, or what a
	// live node adopts from one gone for good (Table.Adopt). One taker at
	// a time gets a node's calls, the others ErrTaking; a call taken is
	// the taker's, never returned again by a Take of node (node come back
	// included).
	Take(ctx context.Context, node string) ([]State, error)
	// Mine reports, of callIDs (calls this node holds), which are still
	// the store's own node's: saved last by it, or not saved and not
	// ended. The others were ended, or taken, by another node. It holds
	// the lease on the node's own index meanwhile: ErrTaking while another
	// node is taking its calls (ask again once it is done).
	Mine(ctx context.Context, callIDs []string) (map[string]bool, error)
}

// ErrTaking is Take's error while another node takes the same node's
// calls: that one adopts them.
var ErrTaking = errors.New("another node is taking these calls")

// NoStore is the Store of one node: nothing is saved, and every end is
// the first.
type NoStore struct{}

// Save implements Store.
func (NoStore) Save(context.Context, State, time.Duration) error { return nil }

// Load implements Store.
func (NoStore) Load(context.Context, string) (State, bool, error) { return State{}, false, nil }

// Delete implements Store.
func (NoStore) Delete(context.Context, string, time.Duration) (bool, error) { return true, nil }

// Take implements Store.
func (NoStore) Take(context.Context, string) ([]State, error) { return nil, nil }

// Mine implements Store: every call is this node's.
func (NoStore) Mine(_ context.Context, ids []string) (map[string]bool, error) {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m, nil
}

// saveTimeout bounds one save in the background.
const saveTimeout = 5 * time.Second

// saveBackoff is how long a save that failed n times in a row waits to be
// tried again: 1 s, doubling, at most 30 s (a store down for long sees
// one save per call every 30 s, not a storm).
func saveBackoff(n int) time.Duration {
	return min(time.Second<<min(n-1, 5), 30*time.Second)
}

// endGrace is how long past its expiry a saved call, and the claim of its
// end, are kept: the node whose timer ends it at the expiry still finds
// them.
const endGrace = 5 * time.Minute

// keepFor is how long the store keeps st (or the claim of its end).
func (t *Table) keepFor(st State) time.Duration {
	return max(st.Expiry.Sub(t.now()), 0) + endGrace
}

// save has the call's state written to the store in the background, the
// latest state last: a change while a save is on its way is saved after
// it. Each save asked for counts in c.wanted, which awaitSaved waits for.
// c.mu held.
func (c *Call) save() {
	t := c.t
	if !t.persist || !c.tracked || c.st.Phase != Answered || !c.st.Dialog {
		return
	}
	if !t.owner() {
		// Stepped back (fence.go): a save now could take back a call
		// another node adopted. Saved once this node is the owner again;
		// nothing waits for it.
		c.dirty = true
		return
	}
	c.saved = true
	c.wanted++
	if c.landed == nil {
		c.landed = make(chan struct{})
	}
	if c.saving {
		c.dirty = true
		return
	}
	c.saving = true
	t.saves.Add(1)
	go c.saveLoop()
}

// saveWait bounds how long a response waits for the save of the change
// it confirms (Answered's 2xx, a re-INVITE's or UPDATE's, an ACK's
// answer going on): a Redis round trip is a fraction of a millisecond; a
// store slower than this does not hold up the response longer.
const saveWait = 250 * time.Millisecond

// AwaitSaved returns once the changes of the call so far are saved (the
// save of their state tried): at most saveWait, at once when none is on
// its way or while saves are failing. The proxy calls it before the 2xx
// of an in-dialog re-INVITE or UPDATE goes on, so that a node that dies
// once a phone has it leaves the store the dialog as that 2xx set it
// (a target refresh's Contact, the SDP, a delayed offer).
func (c *Call) AwaitSaved() {
	c.mu.Lock()
	want := c.wanted
	c.mu.Unlock()
	c.awaitSaved(want)
}

// awaitSaved waits for the saves up to want (c.wanted as the change was
// made) for at most saveWait; not at all while saves are failing.
func (c *Call) awaitSaved(want uint64) {
	t := c.t
	if want == 0 || t.saveFailing.Load() {
		return
	}
	var timer *time.Timer
	for {
		c.mu.Lock()
		if c.tried >= want || c.landed == nil {
			c.mu.Unlock()
			return
		}
		landed := c.landed
		c.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(saveWait)
			defer timer.Stop()
		}
		select {
		case <-landed:
		case <-timer.C:
			return
		}
		if t.saveFailing.Load() {
			return
		}
	}
}

// triedUpTo notes that the saves up to n were tried (failed: err !=
// nil); c.mu held.
func (c *Call) triedUpTo(n uint64, err error) {
	c.t.saveFailing.Store(err != nil)
	c.release(n)
}

// release lets the waits for the saves up to n go; c.mu held.
func (c *Call) release(n uint64) {
	if n <= c.tried {
		return
	}
	c.tried = n
	if c.landed != nil {
		close(c.landed)
		c.landed = make(chan struct{})
	}
}

// saveLoop writes the call's state until the store has its latest, then
// ends (t.saves counts it; c.saving is set). A save the store refuses
// (slow, or out of reach for a moment) is tried again after saveBackoff,
// from a timer, still counted in t.saves: Wait waits for it too, and the
// count never drops to 0 in between (a WaitGroup's Add must not race its
// Wait). The call's end stops the timer (stopRetry).
func (c *Call) saveLoop() {
	t := c.t
	for {
		c.mu.Lock()
		if c.st.Phase == Ended {
			c.saving = false // its end removes it (and a late save is refused)
			c.release(c.wanted)
			c.mu.Unlock()
			t.saves.Done()
			return
		}
		if !t.owner() {
			c.saving, c.dirty = false, true // saved when this node rejoins (fence.go)
			c.release(c.wanted)
			c.mu.Unlock()
			t.saves.Done()
			return
		}
		st := c.copyState()
		upTo := c.wanted
		c.dirty = false
		c.mu.Unlock()
		// Not past the lease: a save landing once another node may
		// have adopted the call would take it back (fence.go).
		ctx, cancel := context.WithTimeout(context.Background(), t.ownerFor(saveTimeout))
		err := t.cfg.Store.Save(ctx, st, t.keepFor(st))
		cancel()
		c.mu.Lock()
		c.triedUpTo(upTo, err)
		if err != nil {
			t.storeErrors.WithLabelValues("save").Inc()
			c.failures++
			wait := saveBackoff(c.failures)
			t.log.Warn("call not saved: tried again later; a restart meanwhile loses it", "call_id", st.Record.CallID,
				"error", err, "failures", c.failures, "again_in", wait)
			c.dirty = true
			c.retry = t.timers.AfterFunc(wait, c.saveLoop) // still saving, still counted
			c.mu.Unlock()
			return
		}
		c.failures = 0
		if !c.dirty {
			c.saving = false
			c.mu.Unlock()
			t.saves.Done()
			return
		}
		c.mu.Unlock()
	}
}

// stopRetry stops a save's retry still to come (the call ended); c.mu
// held.
func (c *Call) stopRetry() {
	if c.retry.Stop() {
		c.saving = false
		c.t.saves.Done() // the count its timer held
	}
	c.retry = nil
}

// Lookup returns the call with callID: the one this node holds, else one
// saved in the store (by a node that restarted since, or another node),
// which this node then holds. nil when neither has it.
func (t *Table) Lookup(ctx context.Context, callID string) *Call {
	return t.lookup(ctx, callID, true)
}

// lookup is Lookup; own: a call loaded is saved again at once, so that it
// is this node's now (in its index: adopted when this node restarts).
func (t *Table) lookup(ctx context.Context, callID string, own bool) *Call {
	if c := t.Find(callID); c != nil || !t.persist {
		return c
	}
	if !t.owner() {
		return nil // stepped back: takes no call from the store (fence.go)
	}
	st, ok, err := t.cfg.Store.Load(ctx, callID)
	if err != nil {
		t.storeErrors.WithLabelValues("load").Inc()
		t.log.Warn("saved call not loaded", "call_id", callID, "error", err)
		return nil
	}
	if !ok || st.Record.CallID != callID {
		return nil
	}
	if c := t.Load(ctx, st); c != nil {
		t.loaded.Inc()
		t.log.Info("saved call loaded", "call_id", callID, "phase", st.Phase)
		if own {
			c.mu.Lock()
			c.save()
			c.mu.Unlock()
		}
		return c
	}
	return t.Find(callID) // loaded meanwhile by another request
}

// Adopt takes the calls node saved and no node has ended (Store.Take)
// and loads them: what a node does as it starts, for its own, so that
// the calls it held before a restart end even if nobody sends anything
// for them again, and for those of a node gone for good (cmd/sori). Each is
// armed for what is left of its dialog timeout (one past it ends at
// once), and takes its trunk slot and toll count again (Load). It
// returns how many it adopted; a call held already is left as it is.
func (t *Table) Adopt(ctx context.Context, node string) (int, error) {
	if !t.persist {
		return 0, nil
	}
	if !t.owner() {
		return 0, fmt.Errorf("calls of node %q: %w", node, errFenced)
	}
	sts, err := t.cfg.Store.Take(ctx, node)
	if err != nil {
		if !errors.Is(err, ErrTaking) {
			t.storeErrors.WithLabelValues("take").Inc()
		}
		return 0, fmt.Errorf("calls of node %q: %w", node, err)
	}
	n := 0
	var anchored []*Call
	for _, st := range sts {
		if c := t.Load(ctx, st); c != nil {
			n++
			if _, ok := c.Anchor(); ok {
				anchored = append(anchored, c)
			}
		}
	}
	t.reclaim(anchored)
	t.adopted.Add(float64(n))
	t.log.Info("saved calls adopted", "node", node, "calls", n, "saved", len(sts))
	return n, nil
}

// reclaimWorkers bounds the queries in flight when a node adopts its calls.
const reclaimWorkers = 8

// reclaim asks each adopted call's anchor for it, in the background: the
// anchor reports its media timeout here from then on, and a call it no
// longer holds (its media timed out while no process held it, the report
// lost) ends now as a media timeout. An anchor that does not answer
// leaves the call to its expiry, or to the failover's re-anchoring.
func (t *Table) reclaim(cs []*Call) {
	if t.cfg.Reclaim == nil || len(cs) == 0 {
		return
	}
	work := make(chan *Call)
	for range min(reclaimWorkers, len(cs)) {
		t.bg.Add(1)
		go func() {
			defer t.bg.Done()
			for c := range work {
				a, ok := c.Anchor()
				if !ok {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
				held, err := t.cfg.Reclaim.Reclaim(ctx, a, c.ID())
				cancel()
				switch {
				case err != nil:
					t.log.Warn("adopted call not reclaimed on its anchor", "call_id", c.ID(), "anchor", a, "error", err)
				case !held:
					t.log.Info("adopted call gone from its anchor: ending it", "call_id", c.ID(), "anchor", a)
					c.MediaTimeout(nil)
				}
			}
		}()
	}
	go func() {
		for _, c := range cs {
			work <- c
		}
		close(work)
	}()
}

// claimRetry is how long a node that could not claim a call's end waits
// before it tries again (with a Fence).
const claimRetry = 250 * time.Millisecond

// claim claims the end of a saved call in the store: false when another
// node ended it first (this one then does nothing more for it). A store
// that cannot be reached does not lose the record. Without a Fence (no
// other node adopts this one's calls) the end is taken here. With one,
// the claim is tried again while this node is the owner of its calls;
// once it is not (cut off long enough for another node to adopt the
// call, which would end it again), finish, what is left of the end,
// waits for this node to rejoin, and is done then if the call is still
// this node's (fence.go).
func (t *Table) claim(ctx context.Context, st State, finish func(context.Context)) bool {
	first, err := t.cfg.Store.Delete(ctx, st.Record.CallID, t.keepFor(st))
	for err != nil && t.cfg.Fence != nil && t.owner() && ctx.Err() == nil {
		select {
		case <-ctx.Done():
			continue
		case <-time.After(claimRetry):
		}
		first, err = t.cfg.Store.Delete(ctx, st.Record.CallID, t.keepFor(st))
	}
	switch {
	case err != nil && t.cfg.Fence != nil:
		t.storeErrors.WithLabelValues("delete").Inc()
		t.pend(st, finish)
		t.log.Warn("call end not claimed in the store before this node was cut off: finished once it is back, if the call is still its own",
			"call_id", st.Record.CallID, "error", err)
		return false
	case err != nil:
		t.storeErrors.WithLabelValues("delete").Inc()
		t.log.Warn("call end not claimed in the store: ended here", "call_id", st.Record.CallID, "error", err)
		return true
	case !first:
		t.endedElsewhere.Inc()
		t.log.Info("call ended on another node already", "call_id", st.Record.CallID)
		return false
	}
	return true
}
