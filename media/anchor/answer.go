package anchor

import (
	"time"

	"github.com/sori-voice/sori/media/ng"
)

// answer: the SDP of the to-tag's side, answering the from-tag's offer.
func (m *Manager) answer(req ng.Dict) ng.Dict {
	if res := required(req, "call-id", "from-tag", "to-tag", "sdp"); res != nil {
		return res
	}
	sess, res := parseSDP(req)
	if res != nil {
		return res
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.calls[req.Str("call-id")]
	if c == nil {
		return ng.Error("Unknown call-id")
	}
	toTag := req.Str("to-tag")
	a := c.legOf(req.Str("from-tag"), toTag)
	if a == nil || a.peer == nil {
		return ng.Error("Unknown from-tag")
	}
	b := c.branchLeg(a, req.Str("via-branch")) // the leg made for its branch's offer (branch.go)
	if b == nil && a.peer.tag == toTag {
		b = a.peer // its early dialog's, when several share the tag (dialogs.go)
	}
	if b == nil {
		b = c.legByTag(toTag)
	}
	if b == nil {
		// The first answer names the offer's peer; a later one from
		// another fork offered the same takes its place, keeping the ports.
		b = a.peer
	}
	b.tag = toTag
	a.peer, b.peer = b, a
	if l := req.Str("label"); l != "" {
		b.label = l
	}
	out, err := m.apply(b, a, sess, req, true)
	if err != nil {
		return failure(err)
	}
	now := time.Now()
	c.lastSignal = now
	if c.answered.IsZero() {
		c.answered = now
	}
	m.keep(c, now)
	return ng.Dict{"result": "ok", "sdp": sdpString(out)} // ng.OK, without its copy
}
