package proxy

import (
	"slices"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain/chaintest"
)

func answered(t *testing.T, rr ...string) (*sip.Request, *sip.Request, *sip.Response) {
	t.Helper()
	in := chaintest.Request(t, chaintest.Raw("INVITE", "sip:bob@sori.test", "Contact: <sip:alice@192.168.1.20:5060>", "CSeq: 7 INVITE"))
	in.SetSource("203.0.113.5:40000")
	out := in.Clone()
	out.SetTransport("UDP")
	res := sip.NewResponseFromRequest(in, 200, "OK", nil)
	res.To().Params.Add("tag", "bob-tag")
	for _, r := range rr {
		var u sip.Uri
		if err := sip.ParseUri(r, &u); err != nil {
			t.Fatal(err)
		}
		res.AppendHeader(&sip.RecordRouteHeader{Address: u})
	}
	res.AppendHeader(&sip.ContactHeader{Address: uri(t, "sip:bob@198.51.100.7:5062")})
	res.SetSource("198.51.100.7:5062")
	return in, out, res
}

// mustRequest is p.request that must succeed.
func mustRequest(t *testing.T, p *Proxy, method sip.RequestMethod, dl *dialog, to, from *end, cseq uint32) *sip.Request {
	t.Helper()
	r, err := p.request(method, dl, to, from, cseq)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDialogRoutesEachSideThroughItsOwnProxies(t *testing.T) {
	p := newTestProxy(t, "")
	in, out, res := answered(t, "sip:callee-edge.example;lr", "sip:127.0.0.1:5060;lr", "sip:caller-edge.example;lr")
	dl := p.newDialog(in, out, res)
	if dl == nil {
		t.Fatal("no dialog")
	}
	toCallee := mustRequest(t, p, sip.BYE, dl, &dl.callee, &dl.caller, dl.caller.cseq+1)
	if toCallee.Recipient.String() != "sip:bob@198.51.100.7:5062" || !slices.Equal(values(toCallee.GetHeaders("Route")), []string{"<sip:callee-edge.example;lr>"}) ||
		toCallee.Destination() != "callee-edge.example:5060" || toCallee.CSeq().SeqNo != 8 ||
		toCallee.From().Params.GetOr("tag", "") != "1" || toCallee.To().Params.GetOr("tag", "") != "bob-tag" || toCallee.CallID().Value() != "test-call" {
		t.Fatalf("BYE to the callee:\n%s", toCallee.String())
	}
	dl.callee.cseq = 3 // the callee sent re-INVITEs
	toCaller := mustRequest(t, p, sip.BYE, dl, &dl.caller, &dl.callee, dl.callee.cseq+1)
	if toCaller.Recipient.String() != "sip:alice@192.168.1.20:5060" || !slices.Equal(values(toCaller.GetHeaders("Route")), []string{"<sip:caller-edge.example;lr>"}) ||
		toCaller.CSeq().SeqNo != 4 || toCaller.From().Params.GetOr("tag", "") != "bob-tag" || toCaller.To().Params.GetOr("tag", "") != "1" {
		t.Fatalf("BYE to the caller:\n%s", toCaller.String())
	}
	if v := toCaller.Via(); v.Host != "127.0.0.1" || v.Port != 5060 {
		t.Fatalf("Via %s", v.Value())
	}
}

func TestDialogWithoutOtherProxiesGoesWhereMessagesCameFrom(t *testing.T) {
	p := newTestProxy(t, "")
	in, out, res := answered(t, "sip:127.0.0.1:5060;lr")
	dl := p.newDialog(in, out, res)
	toCaller := mustRequest(t, p, sip.BYE, dl, &dl.caller, &dl.callee, 1)
	// The caller's private Contact is reached where its INVITE came from.
	if toCaller.Destination() != "203.0.113.5:40000" || toCaller.GetHeader("Route") != nil {
		t.Fatalf("to %s:\n%s", toCaller.Destination(), toCaller.String())
	}
	toCallee := mustRequest(t, p, sip.ACK, dl, &dl.callee, &dl.caller, 7)
	if toCallee.Destination() != "198.51.100.7:5062" || toCallee.CSeq().MethodName != sip.ACK {
		t.Fatalf("to %s:\n%s", toCallee.Destination(), toCallee.String())
	}
}

func TestDialogsTrackCSeqAndExpire(t *testing.T) {
	p := newTestProxy(t, "")
	in, out, res := answered(t, "sip:127.0.0.1:5060;lr")
	var d dialogs
	expired := make(chan string, 1)
	d.add(p.newDialog(in, out, res), 100*time.Millisecond, func(id string) { expired <- id })
	reinvite := chaintest.Request(t, chaintest.Raw("INVITE", "sip:alice@192.168.1.20", "From: <sip:bob@sori.test>;tag=bob-tag", "CSeq: 12 INVITE"))
	if f := reinvite.GetHeaders("From"); len(f) > 1 {
		reinvite.RemoveHeader("From")
	}
	d.seen(reinvite)
	d.mu.Lock()
	got := d.m["test-call"].callee.cseq
	d.mu.Unlock()
	if got != 12 {
		t.Fatalf("callee CSeq %d", got)
	}
	select {
	case id := <-expired:
		if id != "test-call" {
			t.Fatal(id)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("not expired")
	}
	// Taken before its time (BYE): no expiry callback.
	d.add(p.newDialog(in, out, res), 100*time.Millisecond, func(id string) { expired <- id })
	if d.take("test-call") == nil {
		t.Fatal("not kept")
	}
	select {
	case <-expired:
		t.Fatal("expired after BYE took it")
	case <-time.After(300 * time.Millisecond):
	}
}
