package call

import (
	"errors"
	"net/netip"
)

// A delayed offer (RFC 3261 §13.2.1): an INVITE, initial or re-INVITE,
// without SDP gets the offer in its 2xx and the answer in the ACK. The
// Call keeps that offer between the two: the side that made it, the
// INVITE it answers (its sender's CSeq), the anchor's SDP the INVITE's
// sender got (a retransmitted 2xx gets it again, no new ng offer), and
// once the ACK has come, the anchor's SDP the offerer got for it. An
// offer the anchor took is saved with the call (State.Late), so that the
// node that takes the ACK, this one after a restart or another, gives
// its answer to that anchor.
//
// The offer may come earlier, in a reliable 18x (RFC 3262, prack.go):
// then the PRACK brings the answer, the 2xx repeats the offer or has no
// SDP (RFC 6337 §3.1.1) and gets the same anchor SDP, and the ACK has
// nothing to answer.
type lateOffer struct {
	tag    string // the offerer's (the 2xx's To tag)
	sender string // the INVITE's sender's (its From tag)
	cseq   uint32 // the INVITE's, as its sender numbered it
	anchor netip.AddrPort
	sdp    []byte // the anchor's rewrite of the offer (nil: it failed)
	err    error  // why the anchor did not take it
	webrtc bool   // the offerer is a browser: the answer it gets has ICE
	ack    []byte // the anchor's rewrite of the answer, once the ACK (or PRACK) came
	acked  bool
	// reliable: the offer came in a reliable 18x (its PRACK may answer);
	// early: and no 2xx of that INVITE was taken yet, so another fork's
	// 2xx may still take the caller's leg; prack: the PRACK answered it.
	reliable, early, prack bool
}

// ErrOtherFork: a 2xx or reliable 18x with an SDP offer (or a 2xx with
// none) from another branch than the one whose offer the call took (a
// fork): the anchor holds one offerer.
var ErrOtherFork = errors.New("call: an offer from another fork")

// OfferIn2xx has the SDP offer of the 2xx from the side tag, to the
// INVITE whose sender (its From tag) numbered it cseq, taken by do (the ng offer) once:
// a retransmission of that 2xx gets the same SDP (or error) without
// calling do again. The anchor do returns is the call's from then on.
// An offer from another tag for the same INVITE gets ErrOtherFork.
//
// A 2xx from another fork than an early offer's (OfferIn18x) that no 2xx
// confirmed yet takes the offer over: the caller's leg on the anchor is
// paired with the newest offerer (as rtpengine pairs a to-tag with the
// latest offer), since that 2xx, not the 18x, makes the call.
func (c *Call) OfferIn2xx(tag, sender string, cseq uint32, webrtc bool, do func() (netip.AddrPort, []byte, error)) ([]byte, error) {
	return c.offerInReply(tag, sender, cseq, false, webrtc, do)
}

// offerInReply is OfferIn2xx, or OfferIn18x for early.
func (c *Call) offerInReply(tag, sender string, cseq uint32, early, webrtc bool, do func() (netip.AddrPort, []byte, error)) ([]byte, error) {
	c.lateMu.Lock()
	defer c.lateMu.Unlock()
	if !early {
		c.promoteEarly(tag, sender, cseq) // its own early dialog's offer (prackfork.go)
	}
	c.mu.Lock()
	lo := c.late
	c.mu.Unlock()
	if lo.is(sender, cseq) {
		switch {
		case lo.tag == tag:
			if !early {
				c.confirm(lo)
			}
			return lo.sdp, lo.err
		case early && lo.early:
			// Another callee's early dialog: an offer of its own.
			return c.earlyFork(tag, sender, cseq, webrtc, do)
		case early || !lo.early:
			return nil, ErrOtherFork
		}
		// Another fork's 2xx after an early offer: it takes the leg over.
	}
	a, sdp, err := do()
	lo = &lateOffer{tag: tag, sender: sender, cseq: cseq, anchor: a, sdp: sdp, err: err, webrtc: webrtc, reliable: early, early: early}
	if err == nil && a.IsValid() {
		c.Anchored(a)
	}
	c.mu.Lock()
	if early && err == nil {
		c.noteEarly(tag, sender, cseq)
	}
	c.late = lo
	c.st.Late = lo.state()
	c.save() // a re-INVITE's (an INVITE's is saved as it is answered)
	c.mu.Unlock()
	return sdp, err
}

// state is lo as it is saved: nil for none, or for an offer the anchor
// did not take (no ACK waits on it).
func (lo *lateOffer) state() *LateOffer {
	if lo == nil || lo.sdp == nil || !lo.anchor.IsValid() {
		return nil
	}
	return &LateOffer{Tag: lo.tag, Sender: lo.sender, CSeq: lo.cseq, Anchor: lo.anchor.String(), SDP: string(lo.sdp),
		WebRTC: lo.webrtc, Acked: lo.acked, Ack: string(lo.ack), Reliable: lo.reliable, Prack: lo.prack}
}

// lateFrom is the delayed offer saved as s (nil: none, or unreadable).
func lateFrom(s *LateOffer) *lateOffer {
	if s == nil {
		return nil
	}
	a, err := netip.ParseAddrPort(s.Anchor)
	if err != nil {
		return nil
	}
	lo := &lateOffer{tag: s.Tag, sender: s.Sender, cseq: s.CSeq, anchor: a, sdp: []byte(s.SDP), webrtc: s.WebRTC, acked: s.Acked,
		reliable: s.Reliable, prack: s.Prack}
	if s.Acked {
		lo.ack = []byte(s.Ack)
	}
	return lo
}

// is: lo is the offer in the 2xx to the INVITE cseq of sender.
func (lo *lateOffer) is(sender string, cseq uint32) bool {
	return lo != nil && lo.sender == sender && lo.cseq == cseq
}

// LateAck is what an ACK (From tag sender) of the sender's INVITE cseq needs: pending is
// false when that INVITE's 2xx carried no offer the anchor took (the ACK
// goes on as it is), or when its PRACK answered it. Otherwise the ACK's
// SDP answer goes to anchor on, webrtc telling whether the offerer is a browser.
func (c *Call) LateAck(sender string, cseq uint32) (on netip.AddrPort, webrtc, pending bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	lo := c.late
	if !lo.is(sender, cseq) || lo.sdp == nil || lo.prack {
		return netip.AddrPort{}, false, false
	}
	return lo.anchor, lo.webrtc, true
}

// AnswerInAck has the SDP answer of the ACK of the sender's INVITE cseq
// taken by do (the ng answer) once; a retransmitted ACK gets the same
// SDP. acked false: no delayed offer waits for this ACK.
func (c *Call) AnswerInAck(sender string, cseq uint32, do func() ([]byte, error)) (sdp []byte, acked bool, err error) {
	c.lateMu.Lock()
	defer c.lateMu.Unlock()
	c.mu.Lock()
	lo := c.late
	prack := lo != nil && lo.prack
	c.mu.Unlock()
	if !lo.is(sender, cseq) || lo.sdp == nil || prack {
		return nil, false, nil
	}
	if lo.acked {
		return lo.ack, true, nil
	}
	sdp, err = do()
	if err != nil {
		return nil, true, err
	}
	c.mu.Lock()
	lo.ack, lo.acked = sdp, true
	if c.late == lo {
		c.st.Late = lo.state()
		c.save() // a retransmitted ACK on another node gets the same
	}
	saved := c.wanted
	c.mu.Unlock()
	// The answer lands in the store before the ACK goes on: a node that
	// dies once the offerer has it leaves another node the call as it is
	// now (its anchor answered, the answer a retransmission gets).
	c.awaitSaved(saved)
	return sdp, true, nil
}

// LastSDP is the last SDP the side with tag sent (nil: none noted).
func (c *Call) LastSDP(tag string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.st.Callee.SDP
	if tag == c.st.Caller.Tag {
		s = c.st.Caller.SDP
	}
	if s == "" {
		return nil
	}
	return []byte(s)
}
