// Package sanity rejects requests no later handler should see (RFC 3261
// §8.2.1-8.2.2, §16.3): an unsupported URI scheme (416), a CSeq method that
// is not the request's (400), or a Require/Proxy-Require naming extensions
// sori lacks (420).
package sanity

import (
	"context"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/local"
)

// Plugin is the sanity check link. Supported lists the option tags sori
// implements. Proxy-Require naming any other tag is refused on every
// request (RFC 3261 §16.3 step 5); Require only on requests sori answers
// itself: a forwarded request's Require is for the UAS (§16.1).
type Plugin struct {
	Supported []string
	Self      *local.Identity // nil: every request is for sori itself
}

// Methods implements chain.Plugin: sanity answers no method itself.
func (Plugin) Methods() []string { return nil }

// Handles implements chain.Plugin: every request but ACK (never answered).
func (Plugin) Handles(r *chain.Request) bool { return !r.IsAck() }

// Serve implements chain.Plugin.
func (p Plugin) Serve(ctx context.Context, w chain.ResponseWriter, r *chain.Request, next chain.Handler) chain.Result {
	if code, reason, extra := p.check(r.Request); code != 0 {
		return chain.Refuse(code, reason, extra...)
	}
	return next.ServeSIP(ctx, w, r)
}

func (p Plugin) check(req *sip.Request) (int, string, []sip.Header) {
	if req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil {
		return 400, "Missing Mandatory Header", nil
	}
	// sipgo normalises the case of one of the two; methods are compared as
	// it gives them (a real mismatch differs in more than case).
	if !strings.EqualFold(string(req.CSeq().MethodName), string(req.Method)) {
		return 400, "CSeq Method Does Not Match", nil
	}
	switch strings.ToLower(req.Recipient.Scheme) {
	case "sip", "sips", "tel":
	default:
		return 416, "Unsupported URI Scheme", nil
	}
	if req.IsCancel() {
		return 0, "", nil // RFC 3261 §8.2.2.3: Require is not checked for CANCEL (nor ACK)
	}
	var unsupported []string
	names := []string{"Proxy-Require"}
	if p.forUs(req) {
		names = append(names, "Require")
	}
	var hs []sip.Header
	for _, n := range names {
		hs = append(hs, chain.Headers(req, n)...)
	}
	for _, h := range hs {
		for _, tag := range strings.Split(h.Value(), ",") {
			tag = strings.TrimSpace(tag)
			if tag != "" && !p.supports(tag) {
				unsupported = append(unsupported, tag)
			}
		}
	}
	if len(unsupported) > 0 {
		return 420, "Bad Extension", []sip.Header{sip.NewHeader("Unsupported", strings.Join(unsupported, ", "))}
	}
	return 0, "", nil
}

func (p Plugin) forUs(req *sip.Request) bool {
	return p.Self == nil || req.Method == sip.REGISTER || p.Self.AddressedToServer(req.Recipient) && req.Route() == nil
}

func (p Plugin) supports(tag string) bool {
	for _, s := range p.Supported {
		if strings.EqualFold(s, tag) {
			return true
		}
	}
	return false
}
