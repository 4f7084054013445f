package proxy

import (
	"context"
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/anchoring"
	"github.com/sori-voice/sori/sip/call"
)

// What the proxy does for media failover (sip/call reanchor.go): it notes
// each side's SDP before the anchor rewrites it, and how each side's
// Contact looks to the other, so that sori can re-INVITE both phones on a
// new anchor; it forwards in-dialog requests with the CSeq the far end
// expects after those re-INVITEs; and a ringing call whose anchor died
// has its SDP answer taken by a live one.

// dialogCall is the call a forwarded request belongs to (nil: none).
func (f *fork) dialogCall() *call.Call {
	if f.call != nil {
		return f.call
	}
	return f.dialog
}

// noteOffer notes the SDP offer in req, from its From tag's side, and for
// a new call the encryption its callee is offered.
func (f *fork) noteOffer(req *sip.Request, encryption string) {
	c := f.dialogCall()
	if c == nil {
		return
	}
	if f.call != nil {
		c.Offered(encryption)
	}
	if body := sdpBody(req); body != nil {
		c.SDP(req.From().Params.GetOr("tag", ""), body)
	}
}

// noteAnswer notes the SDP answer in res, from its To tag's side, and
// returns it (nil: none).
func (f *fork) noteAnswer(res *sip.Response) []byte {
	body := sdpBody(res)
	if c := f.dialogCall(); c != nil && body != nil {
		c.SDP(res.To().Params.GetOr("tag", ""), body)
	}
	return body
}

// reoffer has a new call's SDP answer, which its anchor did not take
// (cause), taken by a live anchor with a new offer of the caller's SDP;
// false when that failed too (the answer then goes up as it is).
func (f *fork) reoffer(ctx context.Context, res *sip.Response, answer []byte, cause error) bool {
	if f.call == nil || answer == nil || !anchoring.Gone(cause) {
		return false
	}
	f.mu.Lock()
	failed := f.anchor
	f.mu.Unlock()
	src, _ := netip.ParseAddrPort(res.Source())
	forCaller, err := f.call.Reoffer(ctx, failed, res.To().Params.GetOr("tag", ""), answer, src.Addr().Unmap())
	if err != nil {
		f.p.log.Warn("SDP answer not anchored, nor on another anchor", "call_id", res.CallID().Value(), "error", cause, "reoffer_error", err)
		return false
	}
	res.SetBody(forCaller)
	if a, ok := f.call.Anchor(); ok {
		f.mu.Lock()
		f.anchor = a
		f.mu.Unlock()
	}
	return true
}

// currentAnchor is the anchor SDP answers go to.
func (f *fork) currentAnchor() netip.AddrPort {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.anchor
}

// sending adjusts a branch's request before it goes: the CSeq the far end
// expects, and for a target refresh the Contact the far end now knows.
func (f *fork) sending(req *sip.Request) {
	if f.cseq != 0 && f.cseq != f.in.CSeq().SeqNo {
		setCSeq(req, f.cseq)
	}
	if f.dialog != nil && targetRefresh(f.in) {
		if ct := req.Contact(); ct != nil {
			f.dialog.Shown(f.in.From().Params.GetOr("tag", ""), ct.Address.String())
		}
	}
}

// shownContact is res's Contact as relay sends it on (sori's alias
// added), or "" when it has none.
func (p *Proxy) shownContact(res *sip.Response) string {
	c := res.Contact()
	if c == nil {
		return ""
	}
	shown := c.Clone()
	p.markContact(shown, res, res.CallID().Value())
	return shown.Address.String()
}

// headed is a request or a response.
type headed interface {
	sip.Message
	CSeq() *sip.CSeqHeader
	GetHeader(name string) sip.Header
	ReplaceHeader(h sip.Header)
}

// setCSeq gives m CSeq number n, its method kept. The header is replaced,
// never written: the copies a proxy sends share it with what came in.
func setCSeq(m headed, n uint32) {
	h := m.CSeq()
	if h == nil {
		return
	}
	m.ReplaceHeader(&sip.CSeqHeader{SeqNo: n, MethodName: h.MethodName})
}

// sdpBody is m's SDP body (nil: none).
func sdpBody(m headed) []byte {
	body := m.Body()
	ct := m.GetHeader("Content-Type")
	if len(body) == 0 || ct == nil {
		return nil
	}
	v, _, _ := strings.Cut(ct.Value(), ";")
	if !strings.EqualFold(strings.TrimSpace(v), "application/sdp") {
		return nil
	}
	return body
}
