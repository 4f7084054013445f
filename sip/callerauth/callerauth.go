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
	"strconv"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/auth"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/digest"
	"github.com/sori-voice/sori/sip/local"
)

// Plugin authenticates callers.
type Plugin struct {
	Self       *local.Identity
	Auth       *auth.Authenticator
	RetryAfter int
	Log        *slog.Logger
	// Carrier names the trunk whose inbound ACL holds a source address;
	// requests from there are trusted without digest. Nil: no trunks.
	Carrier func(src netip.Addr) (string, bool)
}

// Methods implements chain.Plugin.
func (Plugin) Methods() []string { return nil }

type userKey struct{}

type carrierKey struct{}

// Carrier returns the trunk a request came from, if a carrier sent it.
func Carrier(ctx context.Context) string {
	c, _ := ctx.Value(carrierKey{}).(string)
	return c
}

// User returns the user a request was authenticated as, if any.
func User(ctx context.Context) string {
	u, _ := ctx.Value(userKey{}).(string)
	return u
}

// Wrap implements chain.Plugin.
func (p Plugin) Wrap(next chain.Handler) chain.Handler {
	return chain.HandlerFunc(func(ctx context.Context, w chain.ResponseWriter, req *sip.Request) {
		if !p.applies(req) {
			next.ServeSIP(ctx, w, req)
			return
		}
		if p.Carrier != nil {
			if src, err := netip.ParseAddrPort(req.Source()); err == nil {
				if trunk, ok := p.Carrier(src.Addr()); ok {
					next.ServeSIP(context.WithValue(ctx, carrierKey{}, trunk), w, req)
					return
				}
			}
		}
		from := req.From().Address
		if !p.Self.IsDomain(from.Host) {
			if !p.Self.IsLocalURI(req.Recipient) {
				// Not an open relay. RFC 3261 §21.4.5: 404 is also the answer
				// when the Request-URI's domain is not one the server handles.
				p.Log.Debug("relay refused", "method", req.Method, "from", from.String(), "ruri", req.Recipient.String(), "source", req.Source())
				_ = chain.Reply(w, req, 404, "Not Found: Domain Not Served")
				return
			}
			next.ServeSIP(ctx, w, req) // another domain calling one of our users
			return
		}
		out, err := p.Auth.Check(ctx, req, auth.Proxy)
		if err != nil {
			p.Log.Warn("caller lookup failed", "error", err)
			_ = chain.Reply(w, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", strconv.Itoa(p.RetryAfter)))
			return
		}
		switch {
		case !out.Present:
			_ = w.Respond(p.Auth.Challenge(req, auth.Proxy, false))
			return
		case out.Result == digest.BadURI:
			_ = chain.Reply(w, req, 400, "Digest URI Does Not Match Request-URI")
			return
		case out.Result == digest.Malformed:
			_ = chain.Reply(w, req, 400, "Malformed Credentials")
			return
		case out.Result == digest.Stale || out.Result == digest.Replay:
			_ = w.Respond(p.Auth.Challenge(req, auth.Proxy, true))
			return
		case out.Result != digest.OK:
			p.Log.Info("caller authentication failed", "from", from.User, "reason", out.Result.String(), "source", req.Source())
			_ = w.Respond(p.Auth.Challenge(req, auth.Proxy, false))
			return
		}
		if out.User != from.User {
			p.Log.Info("From does not match the authenticated user", "user", out.User, "from", from.User, "source", req.Source())
			_ = chain.Reply(w, req, 403, "Forbidden: From Is Not Your Identity")
			return
		}
		// Consumed here: the credentials are for us, not for the next hop.
		for _, h := range chain.Headers(req, "Proxy-Authorization") {
			req.RemoveHeader(h.Name())
		}
		next.ServeSIP(context.WithValue(ctx, userKey{}, out.User), w, req)
	})
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
