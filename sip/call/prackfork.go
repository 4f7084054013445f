package call

import (
	"net/netip"
	"slices"
)

// Early dialogs of a fork (RFC 3261 §16.7, RFC 3262, RFC 6337 §3.1.1 and
// §5): an INVITE without SDP forks and several callees offer in their
// reliable 18x. Each early dialog (its To tag) has its own offer/answer:
// the Call keeps the first in late, the others' here, each with the
// anchor's SDP the caller got for it (its own caller-side leg on the
// anchor, media/anchor dialogs.go), so that each 18x's retransmission
// gets the same, and each PRACK's answer goes to its own dialog. The 2xx
// of a callee makes its offer the call's (late, saved); the other
// callees' early dialogs lost, and the proxy has the anchor drop their
// legs (LostEarly). These offers are not saved: a ringing call is not.
type earlyForks struct {
	sender string // the INVITE's, as lateOffer's
	cseq   uint32
	// offers: the other callees' early offers, in the order taken (late's
	// not among them); bodies their SDP as it came, by tag.
	offers []*lateOffer
	bodies map[string][]byte
	// tags: every callee whose early offer the anchor took for that
	// INVITE, late's (and those it took over) included.
	tags []string
}

// forkOf is the early offer of another callee than late's with tag, to
// the sender's INVITE cseq; nil: none. c.mu held.
func (c *Call) forkOf(tag, sender string, cseq uint32) *lateOffer {
	if c.forks == nil || c.forks.sender != sender || c.forks.cseq != cseq {
		return nil
	}
	for _, lo := range c.forks.offers {
		if lo.tag == tag {
			return lo
		}
	}
	return nil
}

// earlyOf is the offer a PRACK to tag answers: late, or another callee's
// early offer with that tag (late when none: its own checks refuse).
// c.mu held.
func (c *Call) earlyOf(tag string) *lateOffer {
	if lo := c.late; lo == nil || lo.tag != tag {
		if c.forks != nil {
			if fo := c.forkOf(tag, c.forks.sender, c.forks.cseq); fo != nil {
				return fo
			}
		}
	}
	return c.late
}

// noteEarly notes that the anchor took tag's early offer to the sender's
// INVITE cseq; c.mu held.
func (c *Call) noteEarly(tag, sender string, cseq uint32) {
	if c.forks == nil || c.forks.sender != sender || c.forks.cseq != cseq {
		c.forks = &earlyForks{sender: sender, cseq: cseq, bodies: map[string][]byte{}}
	}
	if !slices.Contains(c.forks.tags, tag) {
		c.forks.tags = append(c.forks.tags, tag)
	}
}

// earlyFork takes the reliable 18x offer of callee tag, another than
// late's (an early offer no 2xx confirmed), to the same INVITE: once, by
// do (an ng offer that gives the dialog its own legs), its
// retransmissions getting the same SDP or error. c.lateMu held.
func (c *Call) earlyFork(tag, sender string, cseq uint32, webrtc bool, do func() (netip.AddrPort, []byte, error)) ([]byte, error) {
	c.mu.Lock()
	fo := c.forkOf(tag, sender, cseq)
	c.mu.Unlock()
	if fo != nil {
		return fo.sdp, fo.err
	}
	a, sdp, err := do()
	fo = &lateOffer{tag: tag, sender: sender, cseq: cseq, anchor: a, sdp: sdp, err: err, webrtc: webrtc, reliable: true, early: true}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.noteEarly(tag, sender, cseq)
	} else if c.forks == nil || c.forks.sender != sender || c.forks.cseq != cseq {
		c.forks = &earlyForks{sender: sender, cseq: cseq, bodies: map[string][]byte{}}
	}
	c.forks.offers = append(c.forks.offers, fo)
	return sdp, err
}

// promoteEarly makes tag's early offer to the sender's INVITE cseq, when
// it is another callee's than late's, the call's offer: its 2xx came,
// and no 2xx confirmed late's. c.lateMu held.
func (c *Call) promoteEarly(tag, sender string, cseq uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fo := c.forkOf(tag, sender, cseq)
	if fo == nil || c.late.is(sender, cseq) && !c.late.early {
		return
	}
	c.forks.offers = slices.DeleteFunc(c.forks.offers, func(o *lateOffer) bool { return o == fo })
	c.late = fo
	c.st.Late = fo.state()
	if b := c.forks.bodies[tag]; b != nil {
		c.st.Callee.SDP = string(b) // for a failover, as SDP notes it
	}
	c.save()
}

// nextEarly is the early offer that takes late's place once late's callee
// failed: the first other callee's the anchor took (nil: none). c.mu held.
func (c *Call) nextEarly(sender string, cseq uint32) *lateOffer {
	if c.forks == nil || c.forks.sender != sender || c.forks.cseq != cseq {
		return nil
	}
	for i, fo := range c.forks.offers {
		if fo.sdp != nil {
			c.forks.offers = slices.Delete(c.forks.offers, i, i+1)
			if b := c.forks.bodies[fo.tag]; b != nil {
				c.st.Callee.SDP = string(b)
			}
			return fo
		}
	}
	return nil
}

// dropFork lets go of callee tag's early offer, another than late's: its
// callee failed. Its legs stay on the anchor until the call's 2xx drops
// them (LostEarly) or the call ends. c.mu held.
func (c *Call) dropFork(tag, sender string, cseq uint32) {
	if fo := c.forkOf(tag, sender, cseq); fo != nil {
		c.forks.offers = slices.DeleteFunc(c.forks.offers, func(o *lateOffer) bool { return o == fo })
	}
}

// OfferSDP notes body, the SDP offer of callee tag as it came, once the
// anchor took it: SDP notes it for the call's offer (true), an early
// offer of another callee's keeps it until its 2xx makes it the call's.
func (c *Call) OfferSDP(tag string, body []byte) (calls bool) {
	c.mu.Lock()
	if f := c.forks; f != nil && c.forkOf(tag, f.sender, f.cseq) != nil {
		f.bodies[tag] = body
		c.mu.Unlock()
		return false
	}
	c.mu.Unlock()
	c.SDP(tag, body)
	return true
}

// AnswerInPrackTo is AnswerInPrack for a PRACK to callee tag: the answer
// to its own early dialog's offer, late's or another callee's.
func (c *Call) AnswerInPrackTo(sender, tag string, cseq uint32, do func() ([]byte, error)) (sdp []byte, answered bool, err error) {
	c.mu.Lock()
	fork := c.forkOf(tag, sender, cseq) != nil
	c.mu.Unlock()
	if !fork {
		return c.AnswerInPrack(sender, cseq, do)
	}
	c.lateMu.Lock()
	defer c.lateMu.Unlock()
	c.mu.Lock()
	fo := c.forkOf(tag, sender, cseq)
	c.mu.Unlock()
	if fo == nil {
		return nil, false, nil // made the call's meanwhile: a PRACK again answers it
	}
	if fo.sdp == nil {
		return nil, false, nil
	}
	return c.answerOnce(fo, do, func() {})
}

// LostEarly is, once callee winner's 2xx to the sender's INVITE cseq goes
// to the caller, the other callees whose early offers the anchor took:
// their early dialogs lost, their legs are to go. Asked once.
func (c *Call) LostEarly(winner, sender string, cseq uint32) []string {
	c.lateMu.Lock()
	defer c.lateMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.forks
	if f == nil || f.sender != sender || f.cseq != cseq {
		return nil
	}
	c.forks = nil
	return slices.DeleteFunc(f.tags, func(t string) bool { return t == winner })
}
