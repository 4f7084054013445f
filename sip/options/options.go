// Package options answers OPTIONS addressed to sori itself (RFC 3261 §11):
// keep-alive and capability probes from phones, trunks and monitoring.
package options

import (
	"context"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/local"
)

// Plugin answers server-addressed OPTIONS with 200 and sori's capabilities.
type Plugin struct {
	Self      *local.Identity
	Allow     string // methods sori accepts
	Supported string // option tags sori supports
}

// Methods implements chain.Plugin.
func (Plugin) Methods() []string { return []string{"OPTIONS"} }

// Wrap implements chain.Plugin.
func (p Plugin) Wrap(next chain.Handler) chain.Handler {
	return chain.HandlerFunc(func(ctx context.Context, w chain.ResponseWriter, req *sip.Request) {
		if req.Method != sip.OPTIONS || !p.Self.AddressedToServer(req.Recipient) {
			next.ServeSIP(ctx, w, req)
			return
		}
		_ = chain.Reply(w, req, 200, "OK",
			sip.NewHeader("Allow", p.Allow),
			sip.NewHeader("Accept", "application/sdp"),
			sip.NewHeader("Accept-Encoding", "identity"),
			sip.NewHeader("Accept-Language", "en"),
			sip.NewHeader("Supported", p.Supported),
		)
	})
}
