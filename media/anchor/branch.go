package anchor

import (
	"slices"
	"time"
)

// Forked offers, as rtpengine keeps them by "via-branch": a proxy that
// forks an INVITE sends one offer per branch, each made for what that
// branch's contact speaks (WebRTC to a browser, RTP/AVP to a phone). The
// offerer's leg is the same for all of them; each branch gets a peer leg
// of its own, with its own ports, protocol and keys, so that one
// branch's offer never overwrites another's.
//
//   - offer with a via-branch not seen before, while the offerer already
//     has a peer made for another branch: a new peer leg for it. The
//     offerer's streams send to the latest branch's until an answer.
//   - answer with a via-branch: that branch's leg takes the to-tag and
//     becomes the offerer's peer. One without a via-branch, or with one
//     no offer named (Kamailio's via-branch=1 in a reply route names
//     another Via), finds the leg as before: by to-tag, else the peer.
//   - delete with a via-branch and no to-tag: only that branch's leg goes,
//     its ports released (rtpengine's branch delete; sori sends it for
//     the branches that lost once one answered). The last leg the
//     offerer has ends the whole call instead; a via-branch no offer
//     named is refused.
//
// Legs of the branches that lost and were never deleted go with the call.

// branchLeg is the peer leg made for offerer's offer on via-branch v.
func (c *call) branchLeg(offerer *leg, v string) *leg {
	if v == "" {
		return nil
	}
	for _, l := range c.legs {
		if l.branch == v && l.offerer == offerer {
			return l
		}
	}
	return nil
}

// offerPeer is the leg an offer from a without a to-tag goes to, on
// via-branch v ("": none named).
func (c *call) offerPeer(a *leg, v string, now time.Time) *leg {
	if b := c.branchLeg(a, v); b != nil {
		return b // a retransmission, or the branch's offer again
	}
	if a.peer != nil && (v == "" || a.peer.branch == "") {
		b := a.peer // as before branches: one peer, whatever the Via
		if v != "" {
			b.branch, b.offerer = v, a
		}
		return b
	}
	b := c.newLeg("", now)
	b.branch, b.offerer = v, a
	return b
}

// siblings are the other legs offerer's offers made on other branches.
func (c *call) siblings(l *leg) []*leg {
	var out []*leg
	for _, o := range c.legs {
		if o != l && o.offerer != nil && o.offerer == l.offerer {
			out = append(out, o)
		}
	}
	return out
}

// dropBranch takes the leg of via-branch v out of c (the leg whose
// offerer has from-tag fromTag, when given) and returns it, its ports
// still to release; nil: there is none, or (last) it is its offerer's
// only one, and the whole call goes instead. m.mu held.
func (c *call) dropBranch(v, fromTag string) (l *leg, last bool) {
	for _, o := range c.legs {
		if o.branch == v && o.offerer != nil && (fromTag == "" || o.offerer.tag == fromTag) {
			l = o
		}
	}
	if l == nil {
		return nil, false
	}
	rest := c.siblings(l)
	if len(rest) == 0 {
		return nil, true
	}
	if a := l.offerer; a.peer == l {
		// The offerer's streams sent to the leg going: they send to the
		// latest branch left, until an answer says which one it is.
		np := rest[len(rest)-1]
		a.peer, np.peer = np, a
		for i, md := range a.medias {
			if i < len(np.medias) {
				md.stream.SetPeer(np.medias[i].stream)
			}
		}
	}
	c.legs = slices.DeleteFunc(c.legs, func(o *leg) bool { return o == l })
	return l, false
}
