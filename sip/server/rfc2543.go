package server

import (
	"bytes"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// RFC 2543 clients send no magic-cookie branch, and sipgo then keys their
// transactions by the From tag, which RFC 2543 did not require either: such
// a request, valid per RFC 3261 §17.2.3, would get 400. Before sipgo parses
// it, a request whose top Via has no RFC 3261 branch gets one derived from
// what RFC 2543 matched on (Request-URI, From, To, Call-ID, CSeq and the top
// Via): a retransmission derives the same branch, a new request another.

// fix2543 returns the message with a derived branch when it needs one, or nil.
// data must be one whole message (a datagram, or a stream read that holds
// exactly one message).
func fix2543(data []byte) []byte {
	if topViaHasCookie(data) {
		return nil
	}
	msg, err := sip.ParseMessage(data)
	if err != nil {
		return nil
	}
	req, ok := msg.(*sip.Request)
	if !ok || req.Via() == nil || req.CSeq() == nil || req.CallID() == nil || req.From() == nil {
		return nil
	}
	if cl := req.ContentLength(); cl != nil && int(*cl) != len(req.Body()) {
		return nil // not exactly one message
	}
	via := req.Via()
	if b, _ := via.Params.Get("branch"); strings.HasPrefix(b, sip.RFC3261BranchMagicCookie) && len(b) > len(sip.RFC3261BranchMagicCookie) {
		return nil
	}
	h := fnv.New64a()
	for _, s := range []string{req.Recipient.String(), req.From().Value(), req.CallID().Value(), strconv.FormatUint(uint64(req.CSeq().SeqNo), 10), via.Value()} {
		_, _ = h.Write([]byte(s))
		_, _ = h.Write([]byte{0})
	}
	if req.To() != nil {
		_, _ = h.Write([]byte(req.To().Address.String()))
	}
	via.Params.Add("branch", sip.RFC3261BranchMagicCookie+"-2543-"+strconv.FormatUint(h.Sum64(), 36))
	return []byte(req.String())
}

// topViaHasCookie reports whether the first Via header line carries an RFC
// 3261 branch; it is the cheap test that keeps parsing off the common path.
func topViaHasCookie(data []byte) bool {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		line := data
		if i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			return true // end of headers without a Via: nothing to fix here
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if bytes.EqualFold(name, []byte("via")) || bytes.EqualFold(name, []byte("v")) {
			return bytes.Contains(line, []byte(sip.RFC3261BranchMagicCookie))
		}
	}
	return true
}
