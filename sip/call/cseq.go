package call

// A proxy never writes requests into a dialog, so the CSeq each phone
// sends is the one the other phone expects. On a failover sori does: it
// sends each phone a re-INVITE as the other phone, with a CSeq above any
// that other phone used. The far end's count of that side is then ahead of
// the side's own, and the side's next request would look old (RFC 3261
// §12.2.2: a lower CSeq gets 500). So each side keeps how far ahead the
// far end is (Side.CSeqOffset), and its later requests are sent on with
// the offset added, their responses sent back with their own CSeq, as
// Kamailio's dialog module does with track_cseq_updates.

// forward notes a request in the dialog from s with CSeq n and returns
// the CSeq it is sent on with.
func (s *Side) forward(n uint32) uint32 {
	s.CSeq = max(s.CSeq, n)
	return n + s.CSeqOffset
}

// inject returns the CSeq of a request sori sends as s: one above the
// highest the far end has seen from s, which is then ahead by one more.
func (s *Side) inject() uint32 {
	n := s.CSeq + s.CSeqOffset + 1
	s.CSeqOffset++
	return n
}

// Seen notes the CSeq of a request in the dialog from the side with
// fromTag and returns the CSeq it must be forwarded with (cseq.go).
func (c *Call) Seen(fromTag string, cseq uint32) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	side := &c.st.Callee
	if fromTag == c.st.Caller.Tag {
		side = &c.st.Caller
	}
	return side.forward(cseq)
}

// CSeqFor is the CSeq a request from the side with fromTag is forwarded
// with, without noting it (the ACK of a 2xx carries its INVITE's).
func (c *Call) CSeqFor(fromTag string, cseq uint32) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fromTag == c.st.Caller.Tag {
		return cseq + c.st.Caller.CSeqOffset
	}
	return cseq + c.st.Callee.CSeqOffset
}
