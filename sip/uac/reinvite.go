package uac

import (
	"context"
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/call"
)

// BuildReinvite makes the re-INVITE sori sends to one side of a dialog as
// its other side (from) when the call's media moves to another anchor: the
// dialog's From, To and Call-ID, sori's own Via, to's route set and remote
// target, CSeq cseq, and from's Contact as to knows it (so to's remote
// target does not change), with the SDP offer.
func (u *UAC) BuildReinvite(callID string, to, from call.Side, cseq uint32, sdp []byte) (*sip.Request, error) {
	r, err := u.InDialog(sip.INVITE, callID, to, from, cseq)
	if err != nil {
		return nil, err
	}
	contact := from.Shown
	if contact == "" {
		contact = from.Target
	}
	var cu sip.Uri
	if err := sip.ParseUri(contact, &cu); err != nil {
		return nil, fmt.Errorf("contact %q: %w", contact, err)
	}
	r.AppendHeader(&sip.ContactHeader{Address: cu})
	r.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	r.SetBody(sdp)
	return r, nil
}

// Reinvite sends the re-INVITE (BuildReinvite) and waits for its final
// response: code, and the SDP answer of a 2xx, which it ACKs (again for
// each retransmission of the 2xx).
func (u *UAC) Reinvite(ctx context.Context, callID string, to, from call.Side, cseq uint32, sdp []byte) (int, []byte, error) {
	inv, err := u.BuildReinvite(callID, to, from, cseq, sdp)
	if err != nil {
		return 0, nil, err
	}
	tx, err := requester{u.sender}.Request(ctx, inv)
	if err != nil {
		return 0, nil, fmt.Errorf("re-INVITE not sent: %w", err)
	}
	// A final response leaves the transaction to end itself (timer D, or
	// M for a 2xx, whose retransmissions are ACKed again meanwhile).
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode < 200 {
				continue
			}
			if res.StatusCode >= 300 {
				return res.StatusCode, nil, nil // the transaction layer ACKs it
			}
			ack, err := u.ackFor(inv, res)
			if err != nil {
				return res.StatusCode, nil, err
			}
			tx.OnRetransmission(func(*sip.Response) { _ = u.sender.Write(ack) })
			if err := u.sender.Write(ack); err != nil {
				u.log.Debug("ACK of a re-INVITE not sent", "call_id", callID, "error", err)
			}
			return res.StatusCode, answerSDP(res), nil
		case <-tx.Done():
			return 0, nil, fmt.Errorf("re-INVITE: %w", tx.Err())
		case <-ctx.Done():
			tx.Terminate()
			return 0, nil, ctx.Err()
		}
	}
}

// ackFor is the ACK of a 2xx to inv: a new transaction, to the same place
// along the same route, with the 2xx's To and the INVITE's CSeq number.
func (u *UAC) ackFor(inv *sip.Request, res *sip.Response) (*sip.Request, error) {
	o := Request{Method: sip.ACK, URI: inv.Recipient, Transport: inv.Transport(), Dest: inv.Destination(),
		From: inv.From().Address, FromTag: inv.From().Params.GetOr("tag", ""), To: inv.To().Address,
		ToTag: res.To().Params.GetOr("tag", ""), CallID: inv.CallID().Value(), CSeq: inv.CSeq().SeqNo}
	for _, h := range inv.GetHeaders("Route") {
		if r, ok := h.(*sip.RouteHeader); ok {
			o.Route = append(o.Route, r.Address)
		}
	}
	return u.Build(o)
}

// answerSDP is a response's SDP body (nil when it has none).
func answerSDP(res *sip.Response) []byte {
	ct := res.GetHeader("Content-Type")
	if ct == nil || len(res.Body()) == 0 {
		return nil
	}
	v, _, _ := strings.Cut(ct.Value(), ";")
	if !strings.EqualFold(strings.TrimSpace(v), "application/sdp") {
		return nil
	}
	return append([]byte(nil), res.Body()...)
}
