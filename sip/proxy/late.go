package proxy

import (
	"context"
	"errors"
	"net/netip"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/anchoring"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/chain"
)

// Delayed offer (RFC 3261 §13.2.1): an INVITE, initial or re-INVITE,
// without SDP goes on as it is; the SDP offer of its 2xx gets an ng offer
// (the 2xx's sender the offerer, sip/anchoring late.go) and the INVITE's
// sender the anchor's SDP; the ACK's SDP answer gets an ng answer and the
// offerer the anchor's SDP in the ACK. The offer may come first in a
// reliable 18x (RFC 3262 100rel): it is anchored the same way, the
// PRACK's answer gets the ng answer (prack.go), and the 2xx, which
// repeats that offer or has no SDP (RFC 6337 §3.1.1), gets the anchor's
// SDP the 18x got, with no second ng offer. An unreliable 18x's SDP goes
// up as it is (no answer can come before the 2xx's ACK).

// lateRetryAfter is the Retry-After of the 503 a caller gets when no
// anchor took its callee's offer.
const lateRetryAfter = "5"

// senderEncryption is what a new call's caller is offered when its callee
// makes the offer: WebRTC for a caller over WebSocket, else the
// media.encryption of its own user or trunk, or the global one ("": the
// callee's offer's profile).
func (p *Proxy) senderEncryption(r *chain.Request) string {
	if anchoring.WebSocket(r.Request.Transport()) {
		return anchoring.WebRTC
	}
	if p.cfg.Encryption == nil {
		return anchoring.PassEncryption
	}
	return p.cfg.Encryption(r.Caller.User, r.Caller.Trunk)
}

// reSenderEncryption is what the sender of a re-INVITE without SDP is
// offered: the profile it last spoke (a browser WebRTC).
func reSenderEncryption(c *call.Call, req *sip.Request) string {
	if anchoring.WebSocket(req.Transport()) {
		return anchoring.WebRTC
	}
	if c == nil {
		return anchoring.PassEncryption
	}
	if last := c.LastSDP(req.From().Params.GetOr("tag", "")); last != nil {
		return anchoring.EncryptionOf(last)
	}
	return anchoring.PassEncryption
}

// lateOffer anchors the SDP offer of a 2xx, or of a reliable 18x, to an
// INVITE that had none. A non-nil error means the response must not go
// up: it is another fork's (call.ErrOtherFork), or no anchor took the
// offer of a new call.
func (f *fork) lateOffer(b *branch, res *sip.Response) error {
	c := f.dialogCall()
	if c == nil {
		return nil
	}
	sender, cseq := f.in.From().Params.GetOr("tag", ""), f.in.CSeq().SeqNo
	tag := res.To().Params.GetOr("tag", "")
	if res.StatusCode >= 300 {
		// A callee whose reliable 18x offer the call took failed: another
		// fork's offer may take the caller's leg now.
		c.EarlyFailed(tag, sender, cseq)
		return nil
	}
	early := res.StatusCode > 100 && res.StatusCode < 200 && reliable(res)
	if !early && res.StatusCode < 200 {
		return nil
	}
	f.mu.Lock()
	// The caller has a failure (the 2xx is ended, onResponse), or, for
	// a 18x, a final response (the 18x goes nowhere).
	over := f.sent >= 300 || early && f.sent != 0
	on := f.anchor
	f.mu.Unlock()
	if over {
		return nil
	}
	if sdpBody(res) == nil {
		if early {
			return nil
		}
		// A 2xx without SDP after its own 18x's offer makes that offer
		// the call's; another fork's, once one is, must not go up.
		return c.Confirm2xx(tag, sender, cseq)
	}
	// A browser's 2xx comes over WebSocket, or over the node link from
	// the node holding its flow: its binding says (branch browser).
	webrtc := anchoring.WebSocket(res.Transport()) || b != nil && b.browser
	body := sdpBody(res) // the offer as it came: SetBody does not write these bytes
	take := c.OfferIn2xx
	if early {
		take = c.OfferIn18x
	}
	sdp, err := take(tag, sender, cseq, webrtc, func() (netip.AddrPort, []byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		defer cancel()
		a, _, err := f.p.cfg.Media.OfferInReply(ctx, on, f.in, res, f.lateEnc)
		if err != nil {
			return a, nil, err
		}
		return a, res.Body(), nil
	})
	switch {
	case errors.Is(err, call.ErrOtherFork):
		f.p.log.Info("offer of another fork ended: the call's media is the first offer's", "call_id", res.CallID().Value(),
			"to_tag", tag, "status", res.StatusCode)
		return err
	case err != nil && f.call == nil && !early:
		// A re-INVITE's 2xx cannot be refused: it goes up as it is.
		f.p.log.Warn("SDP offer in a re-INVITE's 2xx not anchored", "call_id", res.CallID().Value(), "error", err)
		return nil
	case err != nil:
		f.p.log.Warn("SDP offer in a reply not anchored: call ended", "call_id", res.CallID().Value(), "status", res.StatusCode, "error", err)
		return err
	}
	res.SetBody(sdp)
	// Noted for a failover once it is the call's offer (not another
	// fork's): the offerer's SDP, and what a new anchor offers it again.
	calls := c.OfferSDP(tag, body) // another callee's early offer: kept until its 2xx
	if f.call != nil && calls {
		enc := anchoring.EncryptionOf(body)
		if webrtc {
			enc = anchoring.WebRTC
		}
		f.call.Offered(enc)
	}
	if a, ok := c.Anchor(); ok {
		f.mu.Lock()
		f.anchor, f.anchored = a, true
		f.mu.Unlock()
	}
	return nil
}

// endLateOffer ends branch b's 2xx res, whose offer was not anchored
// (cause): the callee gets ACK and BYE; a caller still waiting gets 503
// Media Relay Unavailable (as for an INVITE with SDP no anchor took) and
// the other branches CANCEL.
func (f *fork) endLateOffer(b *branch, res *sip.Response, cause error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if res.StatusCode < 200 {
		f.endEarlyOffer(b, cause)
		return
	}
	f.settleDone(b)
	if caller, callee, ok := call.Sides(f.in, b.req, res, f.p.ours); ok {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), cancelWait)
			defer cancel()
			f.p.cfg.UAC.EndLate(ctx, f.in.CallID().Value(), caller, callee, b.req.CSeq().SeqNo)
		}()
	}
	if f.sent != 0 || errors.Is(cause, call.ErrOtherFork) {
		f.maybeFinish()
		return
	}
	f.unavailable("Media Relay Unavailable", lateRetryAfter)
}

// lateAck anchors the SDP answer of an ACK (out, as it goes on; cseq as
// its sender numbered it) to a 2xx
// whose offer was anchored; false when the ACK brought no answer: the
// call cannot go on (RFC 3264 §4), and once the ACK has gone on, sori
// ends it.
func (p *Proxy) lateAck(c *call.Call, out *sip.Request, cseq uint32) bool {
	sender := out.From().Params.GetOr("tag", "")
	on, webrtc, pending := c.LateAck(sender, cseq)
	if !pending {
		return true
	}
	body := sdpBody(out)
	if body == nil {
		return false
	}
	c.SDP(sender, body) // before the anchor rewrites it
	sdp, _, err := c.AnswerInAck(sender, cseq, func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		defer cancel()
		if _, err := p.cfg.Media.AnswerInAck(ctx, on, out, webrtc); err != nil {
			return nil, err
		}
		return out.Body(), nil
	})
	switch {
	case err != nil && (anchoring.Gone(err) || errors.Is(err, context.DeadlineExceeded)):
		// The anchor is not answering: the ACK goes on as it is, and the
		// failover moves the call to a live anchor with this answer.
		p.log.Warn("SDP answer in an ACK not anchored", "call_id", out.CallID().Value(), "error", err)
		return true
	case err != nil:
		// The anchor refused the answer: the offerer's leg can never get
		// one (a browser cannot use the caller's raw SDP; a phone would
		// send past the anchor the caller sends to), so the session
		// cannot be set up: ended as an ACK without an answer is.
		p.log.Info("SDP answer in an ACK refused by the anchor", "call_id", out.CallID().Value(), "error", err)
		return false
	}
	out.SetBody(sdp)
	return true
}
