package uac

import (
	"slices"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/siptest"
)

// The re-INVITE sori sends the callee as the caller on a failover: in the
// dialog (its From/To/Call-ID, the callee's route set and Contact), sori's
// own Via, the CSeq given, the caller's Contact as the callee knows it,
// and the SDP offer; its ACK goes the same way with the 2xx's To tag.
func TestReinviteIsBuiltInTheDialog(t *testing.T) {
	u := newUAC(t)
	caller, callee := answered(t, "sip:callee-edge.example;lr", "sip:127.0.0.1:5060;lr")
	caller.Shown = "sip:alice@192.168.1.20:5060;alias=203.0.113.5~40000~1;sori-seal=abc"
	sdp := []byte("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n")
	inv, err := u.BuildReinvite("test-call", callee, caller, 9, sdp)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Method != sip.INVITE || inv.Recipient.String() != "sip:bob@198.51.100.7:5062" ||
		!slices.Equal(siptest.Values(inv.GetHeaders("Route")), []string{"<sip:callee-edge.example;lr>"}) || inv.Destination() != "callee-edge.example:5060" {
		t.Fatalf("not along the callee's route:\n%s", inv)
	}
	if inv.From().Address.String() != caller.ID || inv.From().Params.GetOr("tag", "") != "1" || inv.To().Params.GetOr("tag", "") != "bob-tag" ||
		inv.CallID().Value() != "test-call" || inv.CSeq().SeqNo != 9 || inv.CSeq().MethodName != sip.INVITE {
		t.Fatalf("not in the dialog:\n%s", inv)
	}
	if c := inv.Contact(); c == nil || c.Address.String() != caller.Shown {
		t.Fatalf("Contact %v, want the caller's as the callee knows it", inv.Contact())
	}
	if v := inv.Via(); v.Host != "127.0.0.1" || v.Port != 5060 || len(inv.GetHeaders("Via")) != 1 {
		t.Fatalf("Via %s", v.Value())
	}
	if ct := inv.GetHeader("Content-Type"); ct == nil || ct.Value() != "application/sdp" || string(inv.Body()) != string(sdp) ||
		inv.ContentLength() == nil || int(*inv.ContentLength()) != len(sdp) {
		t.Fatalf("body:\n%s", inv)
	}

	res := sip.NewResponseFromRequest(inv, 200, "OK", nil)
	ack, err := u.ackFor(inv, res)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Method != sip.ACK || ack.CSeq().SeqNo != 9 || ack.CSeq().MethodName != sip.ACK || ack.Recipient.String() != inv.Recipient.String() ||
		ack.Via().Params.GetOr("branch", "") == inv.Via().Params.GetOr("branch", "") || ack.To().Params.GetOr("tag", "") != "bob-tag" ||
		!slices.Equal(siptest.Values(ack.GetHeaders("Route")), siptest.Values(inv.GetHeaders("Route"))) || ack.Destination() != inv.Destination() {
		t.Fatalf("ACK:\n%s", ack)
	}

	// Without a Contact as shown (a call saved before sori noted it), the side's own.
	caller.Shown = ""
	inv, err = u.BuildReinvite("test-call", callee, caller, 10, sdp)
	if err != nil || inv.Contact().Address.String() != "sip:alice@192.168.1.20:5060" {
		t.Fatalf("%v\n%s", err, inv)
	}
}
