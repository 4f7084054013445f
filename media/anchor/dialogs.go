package anchor

import (
	"slices"
	"time"
)

// Early dialogs, the other direction of a fork (RFC 3261 §16.7, RFC 6337
// §3.1.1): an INVITE without SDP forks, and each callee offers in its own
// reliable 18x. The offers come from-tag the callee's, to-tag the
// caller's: one tag on the caller's side, one dialog per callee. Each
// dialog gets a caller-side leg of its own, with its own ports, as
// rtpengine keeps a monologue per tag: the caller's answer in each PRACK
// pairs with its own dialog's offer, and each callee's early media
// reaches the caller from that dialog's port.
//
//   - offer with a to-tag whose leg is already in a dialog with another
//     tagged leg (another callee's offer): a new leg with that to-tag,
//     the peer of this offer's. Its retransmission, a re-offer or the
//     answer of that dialog find it by its peer's tag (legOf).
//   - delete with a from-tag only (rtpengine's delete of one monologue):
//     that tag's legs go, with every leg left in dialog with nothing but
//     them (the callee's and its caller-side leg: the caller's other
//     dialogs stay). sori sends it for the callees whose early dialog
//     lost once one answered. When nothing would be left in a dialog,
//     the whole call goes, as before.

// legOf finds the leg with tag, the one in dialog with a leg tagged
// peerTag when there are several (early dialogs); nil: none.
func (c *call) legOf(tag, peerTag string) *leg {
	var first *leg
	for _, l := range c.legs {
		if l.tag != tag {
			continue
		}
		if peerTag != "" && l.peer != nil && l.peer.tag == peerTag {
			return l
		}
		if first == nil {
			first = l
		}
	}
	return first
}

// dialogPeer is the leg an offer from a naming toTag goes to: the one of
// its own dialog, or one with that tag free of other dialogs, else (an
// early dialog of another callee's offer holds it) a new one.
func (c *call) dialogPeer(a *leg, toTag string, now time.Time) *leg {
	if a.peer != nil && a.peer.tag == toTag {
		return a.peer
	}
	found := false
	for _, b := range c.legs {
		if b.tag != toTag || b == a {
			continue
		}
		found = true
		if !inDialog(b) || b.peer == a {
			return b
		}
	}
	if !found && a.peer != nil && a.peer.tag == "" {
		b := a.peer // the first answer names the offer's peer
		b.tag = toTag
		return b
	}
	return c.newLeg(toTag, now)
}

// inDialog: l and a tagged leg are each other's peer.
func inDialog(l *leg) bool {
	return l.peer != nil && l.peer.tag != "" && l.peer.peer == l
}

// dropTag takes the legs with tag out of c, and the legs left in dialog
// with nothing else, and returns them, their ports still to release; nil:
// no leg has tag, or no dialog would be left (the whole call goes
// instead). m.mu held.
func (c *call) dropTag(tag string) []*leg {
	var gone []*leg
	for _, l := range c.legs {
		if l.tag == tag {
			gone = append(gone, l)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	for more := true; more; {
		more = false
		for _, o := range c.legs {
			if !slices.Contains(gone, o) && c.onlyWith(o, gone) {
				gone = append(gone, o)
				more = true
			}
		}
	}
	left := false
	for _, o := range c.legs {
		if !slices.Contains(gone, o) && inDialog(o) && !slices.Contains(gone, o.peer) {
			left = true
		}
	}
	if !left {
		return nil
	}
	c.legs = slices.DeleteFunc(c.legs, func(o *leg) bool { return slices.Contains(gone, o) })
	for _, o := range c.legs {
		if slices.Contains(gone, o.peer) {
			o.peer = nil
		}
		if slices.Contains(gone, o.offerer) {
			o.offerer = nil
		}
	}
	return gone
}

// onlyWith: every leg o is associated with (its peer, its offerer, the
// legs whose peer or offerer it is) is in gone, and there is one.
func (c *call) onlyWith(o *leg, gone []*leg) bool {
	has := false
	for _, x := range []*leg{o.peer, o.offerer} {
		if x == nil {
			continue
		}
		if !slices.Contains(gone, x) {
			return false
		}
		has = true
	}
	for _, x := range c.legs {
		if x == o || x.peer != o && x.offerer != o {
			continue
		}
		if !slices.Contains(gone, x) {
			return false
		}
		has = true
	}
	return has
}
