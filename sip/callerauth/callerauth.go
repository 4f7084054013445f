// Package callerauth is the chain link that decides who may use the proxy
// (RFC 3261 §22.3): a request starting a dialog or sent outside one, from
// a user of our domain, must carry Proxy-Authorization for that user (407
// otherwise, 403 when the credentials are another user's); a request from
// elsewhere may only reach our own domain (no open relay: 404, RFC 3261 §21.4.5).
package callerauth

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/auth"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/digest"
	"github.com/sori-voice/sori/sip/local"
)

// Plugin authenticates callers.
type Plugin struct {
	Self *local.Identity
	Auth *auth.Authenticator
	Log  *slog.Logger
	// Carrier names the trunk whose inbound ACL holds a source address;
	// requests from there are trusted without digest. Nil: no trunks.
	Carrier func(src netip.Addr) (string, bool)
	// Forwarded reports a request another sori node sends down one of
	// this node's flows (sip/nodes): its caller was authenticated at
	// that node. Nil: a single node.
	Forwarded func(req *sip.Request) bool
}

// Methods implements chain.Plugin.
func (Plugin) Methods() []string { return nil }

// Handles implements chain.Plugin: see applies.
func (p Plugin) Handles(r *chain.Request) bool { return p.applies(r.Request) }

// Serve implements chain.Plugin: the caller is found out and written into
// r.Caller for the links after this one.
func (p Plugin) Serve(ctx context.Context, w chain.ResponseWriter, r *chain.Request, next chain.Handler) chain.Result {
	req := r.Request
	if p.Forwarded != nil && p.Forwarded(req) {
		return next.ServeSIP(ctx, w, r)
	}
	if p.Carrier != nil {
		if src, err := netip.ParseAddrPort(req.Source()); err == nil {
			if trunk, ok := p.Carrier(src.Addr()); ok {
				r.Caller.Trunk = trunk
				return next.ServeSIP(ctx, w, r)
			}
		}
	}
	from := req.From().Address
	if !p.Self.IsDomain(from.Host) {
		if !p.Self.IsLocalURI(req.Recipient) {
			// Not an open relay. RFC 3261 §21.4.5: 404 is also the answer
			// when the Request-URI's domain is not one the server handles.
			p.Log.Debug("relay refused", "method", req.Method, "from", from.String(), "ruri", req.Recipient.String(), "source", req.Source())
			return chain.Refuse(404, "Not Found: Domain Not Served")
		}
		return next.ServeSIP(ctx, w, r) // another domain calling one of our users
	}
	out, err := p.Auth.Check(ctx, req, auth.Proxy)
	if err != nil {
		p.Log.Warn("caller lookup failed", "error", err)
		return chain.Unavailable("")
	}
	switch {
	case !out.Present:
		_ = w.Respond(p.Auth.Challenge(req, auth.Proxy, false))
		return chain.Done
	case out.Result == digest.BadURI:
		return chain.Refuse(400, "Digest URI Does Not Match Request-URI")
	case out.Result == digest.Malformed:
		return chain.Refuse(400, "Malformed Credentials")
	case out.Result == digest.Stale || out.Result == digest.Replay:
		_ = w.Respond(p.Auth.Challenge(req, auth.Proxy, true))
		return chain.Done
	case out.Result != digest.OK:
		p.Log.Info("caller authentication failed", "from", from.User, "reason", out.Result.String(), "source", req.Source())
		_ = w.Respond(p.Auth.Challenge(req, auth.Proxy, false))
		return chain.Done
	}
	if out.User != from.User {
		p.Log.Info("From does not match the authenticated user", "user", out.User, "from", from.User, "source", req.Source())
		return chain.Refuse(403, "Forbidden: From Is Not Your Identity")
	}
	// Consumed here: the credentials are for us, not for the next hop.
	for _, h := range chain.Headers(req, "Proxy-Authorization") {
		req.RemoveHeader(h.Name())
	}
	r.Caller.User = out.User
	return next.ServeSIP(ctx, w, r)
}

// applies: requests outside a dialog that sori would forward. ACK and
// CANCEL are never challenged (RFC 3261 §22.1), nor in-dialog requests,
// which follow a route set set up by an authenticated request.
func (p Plugin) applies(req *sip.Request) bool {
	switch req.Method {
	case sip.ACK, sip.CANCEL, sip.REGISTER:
		return false
	}
	if req.To().Params.Has("tag") {
		return false
	}
	return !(p.Self.AddressedToServer(req.Recipient) && req.Route() == nil)
}
