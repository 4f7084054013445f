package proxy

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/anchoring"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/chain"
)

// Offer/answer in reliable provisional responses (RFC 3262): to an
// INVITE without SDP, a callee may offer in a reliable 18x, which the
// caller answers in its PRACK (RFC 6337 §3.1.1). The 18x's offer is
// anchored as a 2xx's (late.go lateOffer, the callee the offerer); the
// PRACK's answer gets the ng answer here, and the callee gets the
// anchor's SDP in the PRACK.
//
// Forks: each callee's reliable 18x offer is an early dialog of its own,
// with its own legs on the anchor, and each PRACK answers its own
// (prack_fork.go); the 2xx of one makes it the call's and the others'
// legs are deleted. A 2xx offer from another fork still takes the call
// over (sip/call OfferIn2xx). The offer's via-branch is the caller's, as
// for a 2xx's.

// reliable reports whether res is a reliable provisional response: it
// requires 100rel and carries an RSeq (RFC 3262 §3).
func reliable(res *sip.Response) bool {
	if res.GetHeader("RSeq") == nil {
		return false
	}
	for _, h := range res.GetHeaders("Require") {
		for _, opt := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(opt), "100rel") {
				return true
			}
		}
	}
	return false
}

// rackCSeq is the CSeq of the INVITE a PRACK acknowledges a response to:
// its RAck is "response-num CSeq-num Method" (RFC 3262 §7.2).
func rackCSeq(req *sip.Request) (uint32, bool) {
	h := req.GetHeader("RAck")
	if h == nil {
		return 0, false
	}
	f := strings.Fields(h.Value())
	if len(f) != 3 || !strings.EqualFold(f[2], "INVITE") {
		return 0, false
	}
	n, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

// endEarlyOffer ends branch b, whose reliable 18x offer was not anchored
// (cause), with f.mu held: the 18x does not go up and the branch is
// cancelled; if the anchor failed, the caller has no final response yet
// and no other early dialog, it gets 503 Media Relay Unavailable, as for
// a 2xx's offer.
func (f *fork) endEarlyOffer(b *branch, cause error) {
	b.provisional = true // a CANCEL may go now (RFC 3261 §9.1)
	if !b.done {
		f.cancelBranch(b)
	}
	if f.sent != 0 || errors.Is(cause, call.ErrOtherFork) || f.anchored {
		return // f.anchored: another callee's early dialog is (prack_fork.go)
	}
	f.unavailable("Media Relay Unavailable", lateRetryAfter)
}

// prackAnswer anchors the SDP answer of a PRACK, req, to a reliable 18x
// whose offer the anchor took: the callee gets the anchor's SDP. A PRACK
// without SDP, or with no early offer waiting, goes on as it is.
//
// An answer the anchor does not take refuses the PRACK: the early
// dialog cannot be ended as an answered call without an answer is (BYE
// both ways, lateAck), and relaying the caller's own SDP would send the
// callee's media past the anchor. A proxy may answer a request it does
// not forward (RFC 3261 §16.7); the caller learns its answer was not
// taken, and the callee, with no PRACK, ends its INVITE with a 5xx
// (RFC 3262 §3) unless the caller cancels first.
func (p *Proxy) prackAnswer(c *call.Call, req *sip.Request) chain.Result {
	cseq, ok := rackCSeq(req)
	body := sdpBody(req)
	if !ok || body == nil {
		return chain.Done
	}
	sender, tag := req.From().Params.GetOr("tag", ""), req.To().Params.GetOr("tag", "")
	on, webrtc, pending := c.PrackPending(sender, tag, cseq)
	if !pending {
		return chain.Done
	}
	c.SDP(sender, body) // before the anchor rewrites it
	// Its own early dialog's offer answered (prack_fork.go).
	sdp, _, err := c.AnswerInPrackTo(sender, tag, cseq, func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		defer cancel()
		// The PRACK names the tags as an ACK would: from-tag its To's
		// (the offerer), to-tag its From's.
		if _, err := p.cfg.Media.AnswerInAck(ctx, on, req, webrtc); err != nil {
			return nil, err
		}
		return req.Body(), nil
	})
	switch {
	case err != nil && (anchoring.Gone(err) || errors.Is(err, context.DeadlineExceeded)):
		p.log.Warn("SDP answer in a PRACK not anchored: PRACK refused", "call_id", req.CallID().Value(), "error", err)
		return chain.Unavailable("Media Relay Unavailable")
	case err != nil:
		p.log.Info("SDP answer in a PRACK refused by the anchor", "call_id", req.CallID().Value(), "error", err)
		return chain.Refuse(488, "Not Acceptable Here")
	}
	req.SetBody(sdp)
	return chain.Done
}
