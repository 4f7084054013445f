package proxy

import (
	"context"

	"github.com/emiago/sipgo/sip"
)

// Early dialogs of a fork (RFC 3261 §16.7, RFC 3262, RFC 6337 §3.1.1 and
// §5): to an INVITE without SDP, several callees may each offer in a
// reliable 18x. Each early dialog (its To tag) has its own offer/answer:
// each 18x's offer gets an ng offer (from-tag that callee's, to-tag the
// caller's), which gives the dialog its own legs on the anchor, the
// caller's included (media/anchor dialogs.go), and goes up with the
// anchor's SDP for that dialog; each PRACK's answer is ng-answered to its
// own dialog (by its To tag, sip/call prackfork.go). The 2xx of one
// callee makes its dialog the call's; the other early dialogs lost, and
// once that 2xx goes up their legs are deleted by the losing callee's tag
// (an ng delete with that from-tag alone, rtpengine's delete of one
// monologue), while their branches get CANCEL as any losing branch.

// dropLostEarly deletes the anchor's legs of the early dialogs that lost
// to res, the 2xx of the call going up; f.mu held. The Call's lock is
// taken on the way, not under f.mu: an 18x's ng offer may hold it.
func (f *fork) dropLostEarly(res *sip.Response) {
	c := f.dialogCall()
	if !f.late || c == nil {
		return
	}
	winner := res.To().Params.GetOr("tag", "")
	sender, cseq := f.in.From().Params.GetOr("tag", ""), f.in.CSeq().SeqNo
	on, callID := f.anchor, f.in.CallID().Value()
	go func() {
		lost := c.LostEarly(winner, sender, cseq)
		if len(lost) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		defer cancel()
		for _, tag := range lost {
			if err := f.p.cfg.Media.DeleteBranch(ctx, on, callID, tag, ""); err != nil {
				// Its legs stay until the call's delete.
				f.p.log.Info("lost early dialog's media not deleted", "call_id", callID, "to_tag", tag, "error", err)
			}
		}
	}()
}
