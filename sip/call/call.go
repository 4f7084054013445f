package call

import (
	"cmp"
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/timers"
)

// Call is one call in progress. Its methods are the transitions the proxy
// reports; each is safe to call more than once and from any goroutine, and
// only the first end counts.
type Call struct {
	t       *Table
	tracked bool // in the table (false: a spiral's later pass, recorded on its own)

	mu    sync.Mutex
	st    State
	timer *timers.Timer
	// saved: its state went to the store (or came from it), so its end
	// is claimed there first; saving, dirty: a save is on its way, and
	// the state changed since it was taken (store.go).
	saved, saving, dirty bool
	// retry: the next try of a save that failed (the store slow or out
	// of reach for a moment), after failures in a row (store.go).
	retry    *timers.Timer
	failures int
	// wanted counts the saves asked for (each change saved), tried the
	// latest of them whose state a save has tried since; landed is
	// closed, and made again, as tried moves on (the waits of Answered
	// and of the responses that confirm a change, store.go awaitSaved).
	wanted, tried uint64
	landed        chan struct{}
	// moving: being moved to another media anchor (reanchor.go); pending:
	// the new anchor's SDP for the callee of a call moved while it rang,
	// sent once the caller has ACKed, pendingFrom the anchor it left.
	moving      bool
	pending     []byte
	pendingFrom netip.AddrPort
	// late: the SDP offer of a 2xx whose INVITE had none, until the ACK
	// brings its answer; lateMu orders its anchor commands (late.go).
	lateMu sync.Mutex
	late   *lateOffer
	forks  *earlyForks // the other callees' early offers (prackfork.go)
}

// ID is the call's Call-ID.
func (c *Call) ID() string { return c.st.Record.CallID }

// State returns a copy of the call's state.
func (c *Call) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.copyState()
}

// copyState is State with c.mu held.
func (c *Call) copyState() State {
	st := c.st
	st.Caller.Route = append([]string(nil), st.Caller.Route...)
	st.Callee.Route = append([]string(nil), st.Callee.Route...)
	if st.Record.Answer != nil {
		a := *st.Record.Answer
		st.Record.Answer = &a
	}
	if st.Record.Push != nil {
		p := *st.Record.Push
		st.Record.Push = &p
	}
	if st.Late != nil {
		l := *st.Late
		st.Late = &l
	}
	return st
}

// SetRoute records the dialled and the calling numbers (E.164) and the
// carrier trunk and gateway, each when not empty.
func (c *Call) SetRoute(number, callerNumber, trunk, gateway string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range []struct {
		v   string
		dst *string
	}{{number, &c.st.Record.Number}, {callerNumber, &c.st.Record.CallerNumber}, {trunk, &c.st.Record.Trunk}, {gateway, &c.st.Record.Gateway}} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
}

// SetBranches records how many contacts the call was forked to.
func (c *Call) SetBranches(n int) {
	c.mu.Lock()
	c.st.Record.Branches = n
	c.mu.Unlock()
}

// CountToll counts the call against user's toll caps until it ends; an
// error refuses the call (a *tollfraud.LimitError: 403; another: 503).
func (c *Call) CountToll(ctx context.Context, user string) error {
	if c.t.cfg.Tolls == nil {
		return nil
	}
	if err := c.t.cfg.Tolls.Begin(ctx, user, c.ID()); err != nil {
		return err
	}
	c.mu.Lock()
	ended := c.st.Phase == Ended
	c.st.Toll = true
	c.mu.Unlock()
	if ended {
		c.t.cfg.Tolls.End(c.ID())
	}
	return nil
}

// Anchored records the anchor that took the call's media offer.
func (c *Call) Anchored(anchor netip.AddrPort) {
	c.mu.Lock()
	ended := c.st.Phase == Ended
	if !ended {
		c.st.Anchor = anchor.String()
	}
	c.mu.Unlock()
	if ended {
		c.t.deleteMedia(anchor, c.ID()) // it ended while the offer was out
	}
}

// Offered notes the encryption the callee's side was offered (sip/anchoring's values).
func (c *Call) Offered(encryption string) {
	c.mu.Lock()
	c.st.Encryption = encryption
	c.mu.Unlock()
}

// SDP notes sdp, the SDP the side with tag sent (an offer or an answer,
// before the anchor rewrote it): a new anchor gets it if the call's dies.
// Before the answer, any tag but the caller's is the callee's.
func (c *Call) SDP(tag string, sdp []byte) {
	if len(sdp) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if tag == c.st.Caller.Tag {
		c.st.Caller.SDP = string(sdp)
	} else {
		c.st.Callee.SDP = string(sdp)
	}
	c.save()
}

// Shown notes the Contact of the side with tag as the other side got it
// (sori's NAT alias added): sori's own requests as that side carry it.
func (c *Call) Shown(tag, contact string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.st.Dialog {
		return
	}
	side := &c.st.Callee
	if tag == c.st.Caller.Tag {
		side = &c.st.Caller
	}
	side.Shown = contact
}

// Anchor is the anchor holding the call's media (false: none).
func (c *Call) Anchor() (netip.AddrPort, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, err := netip.ParseAddrPort(c.st.Anchor)
	return a, err == nil
}

// Answer is what the proxy knows when a 2xx goes to the caller.
type Answer struct {
	Code    int
	Reason  string
	Contact string // the contact that answered (its Request-URI)
	// Trunk is the carrier trunk the call uses (it came from it, or went
	// out through it): the call takes one of its call slots until it ends.
	Trunk string
	// Caller and Callee are the dialog's ends; Dialog is false when they
	// could not be read (no Contact), so sori cannot end the call itself.
	Caller, Callee Side
	Dialog         bool
}

// Answered marks the call answered; a second 2xx changes nothing. With a
// store it returns once the call's first save landed (at most saveWait;
// at once while saves fail): the 2xx goes up after, so a node that dies
// once the caller has it leaves a call another node can end.
func (c *Call) Answered(a Answer) {
	c.mu.Lock()
	if c.st.Phase != Ringing {
		c.mu.Unlock()
		return
	}
	now := c.t.now()
	c.st.Phase = Answered
	c.st.Record.Answer = &now
	c.st.Record.Code, c.st.Record.Reason, c.st.Record.Callee = a.Code, a.Reason, a.Contact
	if a.Dialog {
		// What the proxy noted while it rang (SDPs) stays.
		a.Caller.SDP = cmp.Or(a.Caller.SDP, c.st.Caller.SDP)
		a.Callee.SDP = cmp.Or(a.Callee.SDP, c.st.Callee.SDP)
		c.st.Caller, c.st.Callee, c.st.Dialog = a.Caller, a.Callee, true
	}
	if a.Trunk != "" && c.tracked && c.t.cfg.Slots != nil {
		c.st.Trunk = a.Trunk
		c.t.cfg.Slots.Acquire(a.Trunk)
	}
	c.arm(c.t.cfg.DialogTimeout)
	c.save() // a restart, or another node, can end it now
	saved := c.wanted
	c.mu.Unlock()
	c.t.ringing.Dec()
	c.t.answered.Inc()
	c.awaitSaved(saved)
}

// Moved is a target refresh from the side with fromTag (a re-INVITE or
// UPDATE with a Contact, RFC 3261 §12.2.2): sori's own requests to that
// side (a BYE on a media timeout) go to its new Contact, from where the
// request came. It is saved in the background; the proxy has the 2xx
// that confirms it wait for that save (AwaitSaved).
func (c *Call) Moved(fromTag, contact, source, transport string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.st.Dialog {
		return
	}
	side := &c.st.Callee
	if fromTag == c.st.Caller.Tag {
		side = &c.st.Caller
	}
	if side.Dest != source || side.Target != contact {
		c.t.handovers.Inc() // the phone is somewhere else now
	}
	side.Target, side.Dest, side.Transport = contact, source, transport
	c.save() // where in-dialog requests go, on whichever node takes them
}

// Peer is the other side of the dialog from the side with fromTag: where
// the requests that side sends must go. ok is false before the call is
// answered, or for a tag that is neither side's.
func (c *Call) Peer(fromTag string) (Side, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.st.Dialog || fromTag == "":
		return Side{}, false
	case fromTag == c.st.Caller.Tag:
		return c.st.Callee, true
	case fromTag == c.st.Callee.Tag:
		return c.st.Caller, true
	}
	return Side{}, false
}

// Pushed notes a push sent to wake one of the callee's devices.
func (c *Call) Pushed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Record.Push == nil {
		c.st.Record.Push = &calls.PushRecord{}
	}
	c.st.Record.Push.Sent++
}

// Woken notes that a pushed app registered after d (the first counts).
func (c *Call) Woken(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.st.Record.Push; p != nil && p.WakeMS == 0 {
		p.WakeMS = max(d.Milliseconds(), 1)
	}
}

// Failed ends an unanswered call with its final response; timedOut: timer C.
func (c *Call) Failed(code int, reason string, timedOut bool, branches int) {
	c.end(ending{ringing: true, code: code, reason: reason, branches: branches,
		disposition: calls.Disposition(code, false, timedOut)})
}

// Cancelled ends an unanswered call its caller cancelled.
func (c *Call) Cancelled(branches int) {
	c.end(ending{ringing: true, code: 487, reason: "Request Terminated", branches: branches,
		disposition: calls.Cancelled, hangupBy: "caller"})
}

// Bye ends an answered call: fromTag is the BYE's From tag, which tells
// whether the caller or the callee hung up. Its media is deleted and the
// record written with the quality the anchor reports.
func (c *Call) Bye(fromTag string) {
	c.mu.Lock()
	by := "callee"
	if fromTag == c.st.Caller.Tag {
		by = "caller"
	}
	c.mu.Unlock()
	c.end(ending{disposition: calls.Answered, hangupBy: by, deleteMedia: true, phone: true})
}

// MediaTimeout ends an answered call whose media stopped (the anchor has
// let go of it already and reports each side's quality): BYE to both sides.
func (c *Call) MediaTimeout(media map[string]calls.MediaQuality) {
	c.end(ending{disposition: calls.MediaTimeout, hangupBy: "media-timeout", media: media, bye: true})
}

// NoSDPAnswer ends an answered call whose caller's ACK brought no answer
// to the SDP offer in the 2xx (RFC 3264 §4, RFC 3261 §13.2.2.4: the
// session cannot be set up): its media is deleted, BYE to both sides.
func (c *Call) NoSDPAnswer() {
	c.end(ending{disposition: calls.NoSDPAnswer, hangupBy: "no-sdp-answer", deleteMedia: true, bye: true})
}

// expired: no end came before the expiry (a lost BYE, no media timeout).
func (c *Call) expired() {
	c.end(ending{disposition: calls.Expired, hangupBy: "timeout", deleteMedia: true, bye: true, code: 408, reason: "Request Timeout", ringing: true})
}

type ending struct {
	disposition, hangupBy string
	// ringing: the ending applies to an unanswered call (with code,
	// reason, branches); otherwise only to an answered one.
	ringing     bool
	code        int
	reason      string
	branches    int
	deleteMedia bool                          // end the media on the anchor (it gives the quality)
	media       map[string]calls.MediaQuality // quality known already (media timeout)
	bye         bool                          // sori hangs up: BYE to both sides
	// phone: a phone hung up (its BYE is on its way to the other). It is
	// taken even while this node is fenced: the end claim in the store
	// decides which node finishes it, and with the store out of reach
	// the end waits until this node is back (claim, fence.go).
	phone bool
}

// arm (re)starts the call's one timer; c.mu held.
func (c *Call) arm(d time.Duration) {
	c.timer.Stop()
	c.st.Expiry = c.t.now().Add(d)
	c.timer = c.t.timers.AfterFunc(d, c.expired)
}

// end does the bookkeeping once.
func (c *Call) end(e ending) {
	c.mu.Lock()
	phase := c.st.Phase
	switch {
	case phase == Ended,
		phase == Ringing && !e.ringing,                                   // a BYE before any 2xx
		phase == Answered && e.ringing && e.disposition != calls.Expired: // a failure after the 2xx
		c.mu.Unlock()
		return
	}
	if c.fenced() && !e.phone {
		// Another node may hold it now (fence.go): nothing is done for it
		// here. An expiry is tried again; anything else comes again (the
		// anchor is asked again, the phone sends its BYE again).
		if e.disposition == calls.Expired {
			c.timer.Stop()
			c.timer = c.t.timers.AfterFunc(fenceRetry, c.expired)
		}
		c.mu.Unlock()
		if c.t.fencedLog.Allow(c.t.now()) {
			c.t.log.Warn("call end left alone: this node is cut off from the dialog store", "call_id", c.ID(), "disposition", e.disposition)
		}
		return
	}
	c.st.Phase = Ended
	c.timer.Stop()
	c.timer = nil
	c.stopRetry()
	rec := &c.st.Record
	if phase == Ringing {
		rec.Code, rec.Reason, rec.Branches = e.code, e.reason, max(e.branches, rec.Branches)
	}
	rec.Disposition, rec.HangupBy = e.disposition, e.hangupBy
	rec.End = c.t.now()
	if rec.Answer != nil {
		rec.Duration = rec.End.Sub(*rec.Answer).Seconds()
	}
	st, saved := c.st, c.saved
	c.mu.Unlock()

	t := c.t
	if c.tracked {
		t.remove(c)
	}
	t.letGo(phase, st)
	anchor, anchored := netip.AddrPort{}, false
	if a, err := netip.ParseAddrPort(st.Anchor); err == nil {
		anchor, anchored = a, true
	}
	quick := phase == Ringing || !e.deleteMedia && !e.bye && e.media == nil
	if quick && !saved {
		// Unanswered: written now; its media (if any) is let go in the background.
		if anchored {
			t.deleteMedia(anchor, st.Record.CallID)
		}
		t.cfg.Records.Write(st.Record)
		return
	}
	finish := func(ctx context.Context) {
		if quick {
			if anchored && t.cfg.Media != nil {
				t.cfg.Media.Delete(ctx, anchor, st.Record.CallID)
			}
			t.cfg.Records.Write(st.Record)
			return
		}
		media := e.media
		if e.deleteMedia && anchored && t.cfg.Media != nil {
			media = t.cfg.Media.Delete(ctx, anchor, st.Record.CallID)
		}
		if e.bye && st.Dialog && t.cfg.Hangup != nil {
			// Both at once: one side that does not answer does not hold up the other.
			var wg sync.WaitGroup
			for _, s := range [][2]Side{{st.Callee, st.Caller}, {st.Caller, st.Callee}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := t.cfg.Hangup.Bye(ctx, st.Record.CallID, s[0], s[1]); err != nil {
						t.log.Info("BYE not answered", "call_id", st.Record.CallID, "to", s[0].Target, "error", err)
					}
				}()
			}
			wg.Wait()
		}
		t.cfg.Records.Write(st.Record.WithMedia(st.Caller.Tag, t.classify(ctx, st, media)))
	}
	t.background(func(ctx context.Context) {
		if saved && !t.claim(ctx, st, finish) {
			// Ended on another node, which deleted its media and wrote its
			// record; or left until this node, cut off, is back (fence.go).
			return
		}
		finish(ctx)
	})
}
