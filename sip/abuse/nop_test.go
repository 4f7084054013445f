package abuse

import (
	"context"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
)

type nopHandler struct{}

func (nopHandler) ServeSIP(context.Context, chain.ResponseWriter, *sip.Request) {}
