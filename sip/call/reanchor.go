package call

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/sori-voice/sori/sip/calls"
)

// Failover: when a media anchor dies for good (sip/anchoring tells the
// Table), each answered call on it is moved to a live anchor by its Call:
// the caller's last SDP is offered to the new anchor, the callee gets the
// anchor's SDP in a re-INVITE sori sends as the caller, its answer goes to
// the anchor, and the caller gets the anchor's SDP for it in a re-INVITE
// sori sends as the callee. A call still ringing is moved by the proxy
// when its next SDP answer finds the anchor gone (Reoffer); its callee
// gets the re-INVITE once the caller has ACKed the 2xx.

// Reanchorer anchors a call's media afresh on a live anchor (sip/anchoring).
type Reanchorer interface {
	// Reoffer gives sdp, the SDP of the side fromTag (toward the side
	// toTag; "" before an answer), to a live anchor other than avoid as a
	// new offer; it returns that anchor and the SDP for the other side.
	// from is where the side's signalling comes from; encryption what the
	// other side is offered.
	Reoffer(ctx context.Context, callID, fromTag, toTag string, sdp []byte, from netip.Addr, encryption string, avoid netip.AddrPort) (netip.AddrPort, []byte, error)
	// Reanswer gives sdp, the answer of the side toTag, to anchor on and
	// returns the SDP for the side fromTag.
	Reanswer(ctx context.Context, on netip.AddrPort, callID, fromTag, toTag string, sdp []byte, from netip.Addr) ([]byte, error)
}

// Reinviter sends a re-INVITE with the SDP offer sdp to one side of a
// dialog as its other side, with CSeq cseq, and ACKs its 2xx (sip/uac).
// code is the final response's; answer its SDP.
type Reinviter interface {
	Reinvite(ctx context.Context, callID string, to, from Side, cseq uint32, sdp []byte) (code int, answer []byte, err error)
}

// moveTimeout bounds one call's move: two re-INVITEs (each up to timer B,
// 32 s), glare retries aside.
const moveTimeout = 90 * time.Second

// glareRetries is how many 491s in a row a re-INVITE is sent again after.
const glareRetries = 4

// AnchorDead is sip/anchoring's word that the anchor at dead is gone: its
// answered calls move to a live anchor, each on its own. Told again while
// it stays dead, it moves the calls answered there since.
func (t *Table) AnchorDead(dead netip.AddrPort) {
	if t.cfg.Reanchor == nil || t.cfg.Reinvite == nil {
		return
	}
	on := dead.String()
	var moving []*Call
	t.mu.Lock()
	for _, c := range t.m {
		c.mu.Lock()
		if c.st.Phase == Answered && c.st.Anchor == on && !c.moving && !c.fenced() {
			c.moving = true
			moving = append(moving, c)
		}
		c.mu.Unlock()
	}
	t.mu.Unlock()
	if len(moving) > 0 {
		t.log.Warn("media anchor dead: moving its calls", "anchor", dead, "calls", len(moving))
	}
	for _, c := range moving {
		t.bg.Add(1)
		go func() {
			defer t.bg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), moveTimeout)
			defer cancel()
			c.reanchor(ctx, dead)
		}()
	}
}

// Moving reports whether the call is being moved to another anchor (a
// phone's own re-INVITE meanwhile is refused with 491, RFC 3261 §14.2).
func (c *Call) Moving() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.moving
}

// errEnded: the call ended while it was being moved.
var errEnded = errors.New("call ended")

// reanchor moves an answered call from the dead anchor to a live one.
func (c *Call) reanchor(ctx context.Context, dead netip.AddrPort) {
	t := c.t
	c.mu.Lock()
	caller, callee, encryption := c.st.Caller, c.st.Callee, c.st.Encryption
	dialog := c.st.Dialog
	c.mu.Unlock()
	if !dialog || caller.SDP == "" || callee.SDP == "" {
		c.moveFailed(dead, netip.AddrPort{}, errors.New("no SDP of both sides to offer a new anchor"))
		return
	}
	to, forCallee, err := t.cfg.Reanchor.Reoffer(ctx, c.ID(), caller.Tag, callee.Tag, []byte(caller.SDP), addrOf(caller.Dest), encryption, dead)
	if err != nil {
		// No live anchor took it: tried again when the dead one is next reported.
		t.log.Warn("call not moved: no anchor took its offer", "call_id", c.ID(), "anchor", dead, "error", err)
		c.mu.Lock()
		c.moving = false
		c.mu.Unlock()
		return
	}
	c.mu.Lock()
	if c.st.Phase == Ended {
		c.mu.Unlock()
		t.deleteMedia(to, c.ID()) // it ended while the offer was out
		return
	}
	c.st.Anchor = to.String() // a BYE from now on ends the media there
	c.mu.Unlock()

	calleeAnswer, err := c.reinvite(ctx, true, nextVersion([]byte(forCallee)))
	if err != nil {
		c.moveFailed(dead, to, fmt.Errorf("re-INVITE to the callee: %w", err))
		return
	}
	forCaller, err := t.cfg.Reanchor.Reanswer(ctx, to, c.ID(), caller.Tag, callee.Tag, calleeAnswer, addrOf(callee.Dest))
	if err != nil {
		c.moveFailed(dead, to, fmt.Errorf("answer on %s: %w", to, err))
		return
	}
	callerAnswer, err := c.reinvite(ctx, false, nextVersion(forCaller))
	if err != nil {
		c.moveFailed(dead, to, fmt.Errorf("re-INVITE to the caller: %w", err))
		return
	}
	c.mu.Lock()
	c.moving = false
	if c.st.Phase == Ended {
		c.mu.Unlock()
		return
	}
	c.st.Callee.SDP, c.st.Caller.SDP = string(calleeAnswer), string(callerAnswer)
	c.st.Record.Reanchored = append(c.st.Record.Reanchored, calls.Reanchor{From: dead.String(), To: to.String(), At: t.now(), Answered: true})
	c.save()
	saved := c.wanted
	c.mu.Unlock()
	t.reanchored.Inc()
	t.log.Info("call moved to another media anchor", "call_id", c.ID(), "from", dead, "to", to)
	c.awaitSaved(saved) // the move is done once the store has it
}

// moveFailed ends a call that could not be moved: BYE to both sides, its
// record saying why.
func (c *Call) moveFailed(dead, to netip.AddrPort, err error) {
	c.mu.Lock()
	c.moving = false
	if errors.Is(err, errFenced) {
		c.mu.Unlock()
		return // another node may hold it now (fence.go); moved when the dead anchor is reported again
	}
	if c.st.Phase == Ended {
		c.mu.Unlock()
		return // ended meanwhile (a BYE): nothing failed
	}
	r := calls.Reanchor{From: dead.String(), At: c.t.now(), Answered: true, Error: err.Error()}
	if to.IsValid() {
		r.To = to.String()
	}
	c.st.Record.Reanchored = append(c.st.Record.Reanchored, r)
	c.mu.Unlock()
	c.t.log.Warn("call not moved to another anchor: ending it", "call_id", c.ID(), "anchor", dead, "error", err)
	c.t.moveFailures.Inc()
	// The dead anchor has nothing to delete; a new one that took the offer does.
	c.end(ending{disposition: calls.ReanchorFailed, hangupBy: "reanchor", bye: true, deleteMedia: to.IsValid()})
}

// reinvite sends one side the SDP offer sdp in a re-INVITE as the other
// side (toCallee: to the callee, as the caller) and returns its answer.
// A 491 (the phone's own re-INVITE crossed it) is retried after RFC 3261
// §14.1's delay.
func (c *Call) reinvite(ctx context.Context, toCallee bool, sdp []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		if c.st.Phase == Ended {
			c.mu.Unlock()
			return nil, errEnded
		}
		if c.fenced() {
			c.mu.Unlock()
			return nil, errFenced
		}
		var to, from Side
		var cseq uint32
		if toCallee {
			cseq = c.st.Caller.inject()
			to, from = c.st.Callee, c.st.Caller
		} else {
			cseq = c.st.Callee.inject()
			to, from = c.st.Caller, c.st.Callee
		}
		c.save() // another node forwards the side's next request with the offset
		saved := c.wanted
		c.mu.Unlock()
		c.awaitSaved(saved) // the offset saved before the request that needs it
		code, answer, err := c.t.cfg.Reinvite.Reinvite(ctx, c.ID(), to, from, cseq, sdp)
		switch {
		case err != nil:
			return nil, err
		case code == 491 && attempt < glareRetries:
			// Sori sends the callee a request as the caller, who chose the
			// Call-ID: it owns it (§14.1).
			d := c.t.glare(toCallee)
			c.t.log.Info("re-INVITE crossed one of the phone's: sent again", "call_id", c.ID(), "after", d)
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			continue
		case code >= 300:
			return nil, fmt.Errorf("answered %d", code)
		case code < 200:
			return nil, fmt.Errorf("no final response (%d)", code)
		case len(answer) == 0:
			return nil, errors.New("2xx without an SDP answer")
		}
		return answer, nil
	}
}

// glareDelay is how long to wait before sending a re-INVITE again after
// a 491 (RFC 3261 §14.1): 2.1-4 s for the owner of the Call-ID, else
// 0-2 s, in units of 10 ms. intN is rand.IntN.
func glareDelay(owner bool, intN func(int) int) time.Duration {
	if owner {
		return time.Duration(210+intN(191)) * 10 * time.Millisecond
	}
	return time.Duration(intN(201)) * 10 * time.Millisecond
}

// Reoffer moves a call still ringing whose SDP answer from the side toTag
// could not go to its anchor failed (it died): the caller's offer goes to a live
// anchor with that answer. It returns the SDP for the caller; the callee
// gets the new anchor's in a re-INVITE once the caller has ACKed a 2xx.
func (c *Call) Reoffer(ctx context.Context, failed netip.AddrPort, toTag string, answer []byte, from netip.Addr) ([]byte, error) {
	t := c.t
	if t.cfg.Reanchor == nil {
		return nil, errors.New("no failover")
	}
	c.mu.Lock()
	caller, encryption := c.st.Caller, c.st.Encryption
	dead, _ := netip.ParseAddrPort(c.st.Anchor)
	c.mu.Unlock()
	if dead != failed && dead.IsValid() {
		// Moved already (another branch's answer): this one goes there too.
		return t.cfg.Reanchor.Reanswer(ctx, dead, c.ID(), caller.Tag, toTag, answer, from)
	}
	if caller.SDP == "" {
		return nil, errors.New("no caller SDP to offer a new anchor")
	}
	to, forCallee, err := t.cfg.Reanchor.Reoffer(ctx, c.ID(), caller.Tag, toTag, []byte(caller.SDP), addrOf(caller.Dest), encryption, dead)
	if err != nil {
		return nil, err
	}
	forCaller, err := t.cfg.Reanchor.Reanswer(ctx, to, c.ID(), caller.Tag, toTag, answer, from)
	if err != nil {
		t.deleteMedia(to, c.ID())
		return nil, err
	}
	c.mu.Lock()
	if c.st.Phase == Ended {
		c.mu.Unlock()
		t.deleteMedia(to, c.ID())
		return nil, errEnded
	}
	c.st.Anchor = to.String()
	c.pending, c.pendingFrom = nextVersion(forCallee), dead
	c.st.Record.Reanchored = append(c.st.Record.Reanchored, calls.Reanchor{From: dead.String(), To: to.String(), At: t.now()})
	c.mu.Unlock()
	t.reanchored.Inc()
	t.log.Info("ringing call moved to another media anchor", "call_id", c.ID(), "from", dead, "to", to)
	return forCaller, nil
}

// Acked: the caller's ACK of the 2xx went to the callee. A call moved
// while it rang now gives the callee the new anchor's SDP.
func (c *Call) Acked() {
	c.mu.Lock()
	sdp := c.pending
	if sdp == nil || c.st.Phase != Answered || !c.st.Dialog || c.t.cfg.Reinvite == nil {
		c.mu.Unlock()
		return
	}
	dead := c.pendingFrom
	c.pending = nil
	c.moving = true
	c.mu.Unlock()
	t := c.t
	t.bg.Add(1)
	go func() {
		defer t.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), moveTimeout)
		defer cancel()
		answer, err := c.reinvite(ctx, true, sdp)
		if err != nil {
			on, _ := c.Anchor()
			c.moveFailed(dead, on, fmt.Errorf("re-INVITE to the callee: %w", err))
			return
		}
		c.mu.Lock()
		c.moving = false
		c.st.Callee.SDP = string(answer)
		c.save()
		saved := c.wanted
		c.mu.Unlock()
		c.awaitSaved(saved)
	}()
}

// addrOf is the IP of an ip:port (zero when it is not one).
func addrOf(hostport string) netip.Addr {
	a, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return netip.Addr{}
	}
	return a.Addr().Unmap()
}

// nextVersion returns sdp with its o= version one higher: a changed
// session description needs a new version (RFC 3264 §8), or the phone may
// keep sending where it did.
func nextVersion(sdp []byte) []byte {
	i := bytes.Index(sdp, []byte("o="))
	if i < 0 || i > 0 && sdp[i-1] != '\n' {
		if i = bytes.Index(sdp, []byte("\no=")); i < 0 {
			return sdp
		}
		i++
	}
	end := bytes.IndexAny(sdp[i:], "\r\n")
	if end < 0 {
		end = len(sdp) - i
	}
	f := bytes.Fields(sdp[i+2 : i+end])
	if len(f) != 6 {
		return sdp
	}
	v, err := strconv.ParseUint(string(f[2]), 10, 64)
	if err != nil {
		return sdp
	}
	f[2] = strconv.AppendUint(nil, v+1, 10)
	out := make([]byte, 0, len(sdp)+2)
	out = append(out, sdp[:i+2]...)
	out = append(out, bytes.Join(f, []byte(" "))...)
	return append(out, sdp[i+end:]...)
}
