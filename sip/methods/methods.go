// Package methods ends the chain: a request no handler took gets 405 Method
// Not Allowed with the Allow header (RFC 3261 §8.2.1). ACK is never answered.
package methods

import (
	"context"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
)

// NotAllowed is the final handler.
type NotAllowed struct {
	Allow string
}

// ServeSIP implements chain.Handler.
func (n NotAllowed) ServeSIP(_ context.Context, _ chain.ResponseWriter, r *chain.Request) chain.Result {
	if r.IsAck() {
		return chain.Done
	}
	return chain.Refuse(405, "Method Not Allowed", sip.NewHeader("Allow", n.Allow))
}

// Label is m as a metric label: its name when RFC 3261 or an extension
// names it, else "other". A method is any token the sender likes (it gets
// 405 or 501), and as a label each new one would make a series that is
// never freed: memory growing with every name a scanner invents.
func Label(m sip.RequestMethod) string {
	switch m {
	case sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.REGISTER, sip.OPTIONS, sip.SUBSCRIBE, sip.NOTIFY,
		sip.REFER, sip.INFO, sip.MESSAGE, sip.PRACK, sip.UPDATE, sip.PUBLISH:
		return string(m)
	}
	return "other"
}
