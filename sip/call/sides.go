package call

import (
	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/wire"
)

// Sides reads both ends of an answered INVITE: in is the caller's request
// as it reached sori, out the copy sent to the callee, res its 2xx; ours
// tells sori's own Record-Route entries. ok is false without the Contacts.
func Sides(in, out *sip.Request, res *sip.Response, ours func(sip.Uri) bool) (caller, callee Side, ok bool) {
	contact := res.Contact()
	callerContact := in.Contact()
	if contact == nil || callerContact == nil {
		return Side{}, Side{}, false
	}
	// Record-Route in the 2xx: the callee's side first, then ours, then
	// the caller's side.
	var rrs []sip.Uri
	for _, h := range res.Headers() {
		if rr, ok := h.(*sip.RecordRouteHeader); ok {
			rrs = append(rrs, rr.Address)
		}
	}
	first, last := -1, -1
	for i, u := range rrs {
		if ours(u) {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	callee = Side{Target: wire.URIString(&contact.Address), Dest: res.Source(), Transport: out.Transport(),
		ID: wire.URIString(&res.To().Address), Tag: res.To().Params.GetOr("tag", ""), PANI: pani(res)}
	caller = Side{Target: wire.URIString(&callerContact.Address), Dest: in.Source(), Transport: in.Transport(),
		ID: wire.URIString(&in.From().Address), Tag: in.From().Params.GetOr("tag", ""), CSeq: in.CSeq().SeqNo, PANI: pani(in)}
	if c := out.Contact(); c != nil {
		caller.Shown = wire.URIString(&c.Address) // with the alias the proxy added
	}
	if first >= 0 {
		for i := first - 1; i >= 0; i-- {
			callee.Route = append(callee.Route, wire.URIString(&rrs[i]))
		}
		for i := last + 1; i < len(rrs); i++ {
			caller.Route = append(caller.Route, wire.URIString(&rrs[i]))
		}
	}
	return caller, callee, true
}

func pani(m sip.Message) string {
	if hs := m.GetHeaders("P-Access-Network-Info"); len(hs) > 0 {
		return hs[0].Value()
	}
	return ""
}
