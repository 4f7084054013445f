package abuse

import (
	"context"

	"github.com/sori-voice/sori/sip/chain"
)

type nopHandler struct{}

func (nopHandler) ServeSIP(context.Context, chain.ResponseWriter, *chain.Request) chain.Result {
	return chain.Done
}
