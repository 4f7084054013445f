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

// Handles implements chain.Plugin: OPTIONS addressed to sori itself.
func (p Plugin) Handles(r *chain.Request) bool {
	return r.Method == sip.OPTIONS && p.Self.AddressedToServer(r.Recipient)
}

// Serve implements chain.Plugin.
func (p Plugin) Serve(_ context.Context, w chain.ResponseWriter, r *chain.Request, _ chain.Handler) chain.Result {
	_ = chain.Reply(w, r.Request, 200, "OK",
		sip.NewHeader("Allow", p.Allow),
		sip.NewHeader("Accept", "application/sdp"),
		sip.NewHeader("Accept-Encoding", "identity"),
		sip.NewHeader("Accept-Language", "en"),
		sip.NewHeader("Supported", p.Supported),
	)
	return chain.Done
}
