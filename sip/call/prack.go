package call

import "net/netip"

// An offer in a reliable provisional response (RFC 3262 100rel) to an
// INVITE without SDP: the callee offers in its 18x, the caller answers in
// the PRACK (RFC 3262 §5, RFC 6337 §3.1.1). The Call keeps it in the
// same lateOffer as a 2xx's: the 18x's retransmissions and later 18x of
// that early dialog get the anchor's SDP again, the 2xx too (it repeats
// the offer or has no SDP, RFC 6337), and the PRACK's answer is taken
// once; the ACK then has nothing to answer.

// OfferIn18x has the SDP offer of a reliable 18x from the side tag, to
// the INVITE whose sender numbered it cseq, taken by do (the ng offer)
// once, as OfferIn2xx. Another fork's 18x offer for the same INVITE is
// an early dialog of its own (prackfork.go); one after a 2xx was taken
// gets ErrOtherFork.
func (c *Call) OfferIn18x(tag, sender string, cseq uint32, webrtc bool, do func() (netip.AddrPort, []byte, error)) ([]byte, error) {
	return c.offerInReply(tag, sender, cseq, true, webrtc, do)
}

// Confirm2xx notes a 2xx without SDP from the side tag to the sender's
// INVITE cseq: if an early offer was taken, that 2xx makes it the call's
// (no other fork's 2xx takes it over then), and a 2xx of another fork
// than the offer's gets ErrOtherFork once a 2xx confirmed it.
func (c *Call) Confirm2xx(tag, sender string, cseq uint32) error {
	c.lateMu.Lock()
	defer c.lateMu.Unlock()
	c.promoteEarly(tag, sender, cseq) // its own early dialog's offer (prackfork.go)
	c.mu.Lock()
	lo := c.late
	c.mu.Unlock()
	switch {
	case !lo.is(sender, cseq):
		return nil
	case lo.tag == tag:
		c.confirm(lo)
		return nil
	case !lo.early:
		return ErrOtherFork
	}
	return nil // no offer/answer in that dialog: the phones' business
}

// EarlyFailed notes a final failure from the side tag to the sender's
// INVITE cseq: an early offer of tag's no 2xx confirmed is let go, so
// another fork's 18x or 2xx offer is taken as the first (its leg on the
// anchor stays until the call's delete).
func (c *Call) EarlyFailed(tag, sender string, cseq uint32) {
	c.lateMu.Lock()
	defer c.lateMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if lo := c.late; lo.is(sender, cseq) && lo.tag == tag && lo.early {
		c.late = c.nextEarly(sender, cseq) // another callee's early offer, if any (prackfork.go)
		c.st.Late = c.late.state()
	}
	c.dropFork(tag, sender, cseq) // another callee's, failed (prackfork.go)
}

// confirm: a 2xx of lo's offerer came; c.lateMu held.
func (c *Call) confirm(lo *lateOffer) {
	c.mu.Lock()
	lo.early = false
	c.mu.Unlock()
}

// PrackPending is what a PRACK from sender (its From tag) to the side tag
// (its To tag), for the sender's INVITE cseq (its RAck), needs: pending
// when that INVITE's offer came in tag's reliable 18x, the anchor took it
// and no PRACK answered it yet; the answer then goes to anchor on, webrtc
// telling whether the offerer is a browser.
func (c *Call) PrackPending(sender, tag string, cseq uint32) (on netip.AddrPort, webrtc, pending bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	lo := c.earlyOf(tag) // late, or another callee's early offer (prackfork.go)
	if !lo.is(sender, cseq) || lo.tag != tag || !lo.reliable || lo.sdp == nil || lo.prack {
		return netip.AddrPort{}, false, false
	}
	return lo.anchor, lo.webrtc, true
}

// AnswerInPrack has the SDP answer of a PRACK for the sender's INVITE
// cseq taken by do (the ng answer) once; a PRACK again gets the same
// SDP. answered false: no early offer waits for it. A failed answer
// leaves the offer waiting (a PRACK again tries once more).
func (c *Call) AnswerInPrack(sender string, cseq uint32, do func() ([]byte, error)) (sdp []byte, answered bool, err error) {
	c.lateMu.Lock()
	defer c.lateMu.Unlock()
	c.mu.Lock()
	lo := c.late
	c.mu.Unlock()
	if !lo.is(sender, cseq) || !lo.reliable || lo.sdp == nil {
		return nil, false, nil
	}
	return c.answerOnce(lo, do, func() {
		if c.late == lo {
			c.st.Late = lo.state()
			c.save()
		}
	})
}

// answerOnce answers early offer lo with do's SDP, once: a PRACK again
// gets the same SDP; kept runs under c.mu once a new answer is noted.
// c.lateMu held.
func (c *Call) answerOnce(lo *lateOffer, do func() ([]byte, error), kept func()) (sdp []byte, answered bool, err error) {
	c.mu.Lock()
	done, ack := lo.prack, lo.ack
	c.mu.Unlock()
	if done {
		return ack, true, nil
	}
	if sdp, err = do(); err != nil {
		return nil, true, err
	}
	c.mu.Lock()
	lo.ack, lo.acked, lo.prack = sdp, true, true
	kept()
	c.mu.Unlock()
	return sdp, true, nil
}
