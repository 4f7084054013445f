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
