package anchoring

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/sdp"
)

// Delayed offer (RFC 3261 §13.2.1, RFC 3264): an INVITE without SDP gets
// the callee's offer in its 2xx and the caller's answer in the ACK. As
// Kamailio's rtpengine module does for an offer in a reply, the tags are
// swapped: the side that sent the 2xx (its To tag) is the offerer, the
// INVITE's sender (its From tag) the side the offer goes to; the ACK's
// answer names the same offerer. An offer in a reliable 18x (RFC 3262)
// is the same ng offer, and the PRACK that answers it the same ng answer
// as an ACK's (the PRACK's tags are named as the ACK's are).

// OfferInReply rewrites the SDP offer in res, a 2xx (or reliable 18x) to the INVITE req
// that carried none, so the INVITE's sender sends its media to the
// anchor: on, the call's anchor when it has one, else one picked for it.
// encryption is what that sender is offered (SRTP, PlainRTP, WebRTC,
// PassEncryption). A response with no SDP is left alone (false).
func (p *Pool) OfferInReply(ctx context.Context, on netip.AddrPort, req *sip.Request, res *sip.Response, encryption string) (netip.AddrPort, bool, error) {
	body, ok := sdpBody(res)
	if !ok {
		return on, false, nil
	}
	d := replyOffer(req, res, body, encryption)
	a, out, err := p.do(ctx, res.CallID().Value(), on, d)
	if err != nil {
		return on, false, err
	}
	res.SetBody(sdpOf(out))
	return a, true, nil
}

// replyOffer is the ng offer for the SDP offer body in res, a 2xx to req.
func replyOffer(req *sip.Request, res *sip.Response, body []byte, encryption string) ng.Dict {
	d := ng.Dict{"command": "offer", "call-id": res.CallID().Value(),
		"from-tag": res.To().Params.GetOr("tag", ""), "to-tag": req.From().Params.GetOr("tag", ""),
		"sdp": body, "replace": replace, "ICE": iceFlag(encryption == WebRTC)}
	if tp := transportFor(body, encryption); tp != "" {
		d["transport-protocol"] = tp
	}
	if v := req.Via(); v != nil {
		if b, ok := v.Params.Get("branch"); ok {
			d["via-branch"] = b
		}
	}
	if fam, addr, ok := family(res.Source()); ok {
		d["received-from"] = []any{fam, addr}
	}
	return d
}

// AnswerInAck rewrites the SDP answer in ack, the ACK of a 2xx (or the
// PRACK of a reliable 18x) whose offer OfferInReply took on anchor on, so the offerer sends its media to
// the anchor. webrtc: the offerer (the ACK's recipient) is a browser.
// An ACK with no SDP is left alone (false).
func (p *Pool) AnswerInAck(ctx context.Context, on netip.AddrPort, ack *sip.Request, webrtc bool) (bool, error) {
	body, ok := sdpBody(ack)
	if !ok {
		return false, nil
	}
	if !on.IsValid() {
		return false, fmt.Errorf("anchoring: answer for a call with no offer")
	}
	a := p.anchorAt(on)
	if a.isDead() {
		return false, fmt.Errorf("anchoring: answer on %s: %w", on, ErrDead)
	}
	out, err := p.send(ctx, a, ackAnswer(ack, body, webrtc))
	if err != nil {
		return false, err
	}
	ack.SetBody(sdpOf(out))
	return true, nil
}

// ackAnswer is the ng answer for the SDP answer body in ack: from-tag the
// offerer's (the ACK's To tag), to-tag the answerer's (its From tag).
func ackAnswer(ack *sip.Request, body []byte, webrtc bool) ng.Dict {
	d := ng.Dict{"command": "answer", "call-id": ack.CallID().Value(),
		"from-tag": ack.To().Params.GetOr("tag", ""), "to-tag": ack.From().Params.GetOr("tag", ""),
		"sdp": body, "replace": replace, "ICE": iceFlag(webrtc)}
	if fam, addr, ok := family(ack.Source()); ok {
		d["received-from"] = []any{fam, addr}
	}
	return d
}

// family is an ip:port's ng address family and address.
func family(hostport string) (string, string, bool) {
	src, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return "", "", false
	}
	if src.Addr().Is6() && !src.Addr().Is4In6() {
		return "IP6", src.Addr().String(), true
	}
	return "IP4", src.Addr().Unmap().String(), true
}

// EncryptionOf is the encryption value that makes a new offer give a side
// the profile its SDP speaks (for a call whose callee offered, in a 2xx,
// what it speaks: a failover offers it the same again).
func EncryptionOf(body []byte) string {
	s, err := sdp.Parse(body)
	if err != nil || len(s.Media) == 0 {
		return PassEncryption
	}
	switch proto := s.Media[0].Proto; {
	case sdp.DTLSProto(proto):
		return WebRTC
	case len(proto) >= 8 && (proto[:8] == "RTP/SAVP"):
		return SRTP
	}
	return PlainRTP
}
