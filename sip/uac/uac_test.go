package uac

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/chain/chaintest"
	"github.com/sori-voice/sori/sip/local"
	"github.com/sori-voice/sori/sip/siptest"
)

// sender only knows sori's listening addresses; the functions under test
// here never put anything on the wire.
type sender struct{}

func (sender) Request(context.Context, *sip.Request) (sip.ClientTransaction, error) {
	panic("not in unit tests")
}
func (sender) Write(*sip.Request) error { panic("not in unit tests") }
func (sender) SentBy(transport string) (string, int, error) {
	switch transport {
	case "UDP":
		return "127.0.0.1", 5060, nil
	case "TCP":
		return "127.0.0.1", 5061, nil
	}
	return "", 0, fmt.Errorf("no %s listener", transport)
}

func newUAC(t *testing.T) *UAC {
	t.Helper()
	u, err := New(sender{}, "sori.test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var self = local.New("sori.test", "127.0.0.1:5060", "127.0.0.1:5061")

// answered is an INVITE as it reached sori, the copy sent on, and its 2xx
// with the given Record-Routes; it returns the dialog's two sides.
func answered(t *testing.T, rr ...string) (caller, callee call.Side) {
	t.Helper()
	in := chaintest.Request(t, chaintest.Raw("INVITE", "sip:bob@sori.test", "Contact: <sip:alice@192.168.1.20:5060>", "CSeq: 7 INVITE"))
	in.SetSource("203.0.113.5:40000")
	out := in.Clone()
	out.SetTransport("UDP")
	res := sip.NewResponseFromRequest(in, 200, "OK", nil)
	res.To().Params.Add("tag", "bob-tag")
	for _, r := range rr {
		res.AppendHeader(&sip.RecordRouteHeader{Address: siptest.URI(t, r)})
	}
	res.AppendHeader(&sip.ContactHeader{Address: siptest.URI(t, "sip:bob@198.51.100.7:5062")})
	res.SetSource("198.51.100.7:5062")
	caller, callee, ok := call.Sides(in, out, res, self.IsLocalURI)
	if !ok {
		t.Fatal("no dialog")
	}
	return caller, callee
}

func mustInDialog(t *testing.T, u *UAC, method sip.RequestMethod, to, from call.Side, cseq uint32) *sip.Request {
	t.Helper()
	r, err := u.InDialog(method, "test-call", to, from, cseq)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDialogRoutesEachSideThroughItsOwnProxies(t *testing.T) {
	u := newUAC(t)
	caller, callee := answered(t, "sip:callee-edge.example;lr", "sip:127.0.0.1:5060;lr", "sip:caller-edge.example;lr")
	toCallee := mustInDialog(t, u, sip.BYE, callee, caller, caller.CSeq+1)
	if toCallee.Recipient.String() != "sip:bob@198.51.100.7:5062" || !slices.Equal(siptest.Values(toCallee.GetHeaders("Route")), []string{"<sip:callee-edge.example;lr>"}) ||
		toCallee.Destination() != "callee-edge.example:5060" || toCallee.CSeq().SeqNo != 8 ||
		toCallee.From().Params.GetOr("tag", "") != "1" || toCallee.To().Params.GetOr("tag", "") != "bob-tag" || toCallee.CallID().Value() != "test-call" {
		t.Fatalf("BYE to the callee:\n%s", toCallee.String())
	}
	callee.CSeq = 3 // the callee sent re-INVITEs
	toCaller := mustInDialog(t, u, sip.BYE, caller, callee, callee.CSeq+1)
	if toCaller.Recipient.String() != "sip:alice@192.168.1.20:5060" || !slices.Equal(siptest.Values(toCaller.GetHeaders("Route")), []string{"<sip:caller-edge.example;lr>"}) ||
		toCaller.CSeq().SeqNo != 4 || toCaller.From().Params.GetOr("tag", "") != "bob-tag" || toCaller.To().Params.GetOr("tag", "") != "1" {
		t.Fatalf("BYE to the caller:\n%s", toCaller.String())
	}
	if v := toCaller.Via(); v.Host != "127.0.0.1" || v.Port != 5060 {
		t.Fatalf("Via %s", v.Value())
	}
}

func TestDialogWithoutOtherProxiesGoesWhereMessagesCameFrom(t *testing.T) {
	u := newUAC(t)
	caller, callee := answered(t, "sip:127.0.0.1:5060;lr")
	toCaller := mustInDialog(t, u, sip.BYE, caller, callee, 1)
	// The caller's private Contact is reached where its INVITE came from.
	if toCaller.Destination() != "203.0.113.5:40000" || toCaller.GetHeader("Route") != nil {
		t.Fatalf("to %s:\n%s", toCaller.Destination(), toCaller.String())
	}
	toCallee := mustInDialog(t, u, sip.ACK, callee, caller, 7)
	if toCallee.Destination() != "198.51.100.7:5062" || toCallee.CSeq().MethodName != sip.ACK {
		t.Fatalf("to %s:\n%s", toCallee.Destination(), toCallee.String())
	}
}

func TestSidesAreAPlainValue(t *testing.T) {
	caller, callee := answered(t, "sip:callee-edge.example;lr", "sip:127.0.0.1:5060;lr")
	if caller.Tag != "1" || caller.CSeq != 7 || caller.Dest != "203.0.113.5:40000" || len(caller.Route) != 0 ||
		callee.Tag != "bob-tag" || callee.Target != "sip:bob@198.51.100.7:5062" || !slices.Equal(callee.Route, []string{"sip:callee-edge.example;lr"}) {
		t.Fatalf("caller %+v\ncallee %+v", caller, callee)
	}
}

// final never lets (nil, nil) through: a transaction sipgo ended as it
// waited (Terminate closes Done before it sets Err) is an error, not a
// nil response to dereference.
func TestFinalIsNeverNilNil(t *testing.T) {
	ok := sip.NewResponse(200, "OK")
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		res     *sip.Response
		err     error
		wantRes *sip.Response
		wantErr error
	}{
		{"a response", ok, nil, ok, nil},
		{"an error", nil, boom, nil, boom},
		{"neither", nil, nil, nil, errNoFinal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := final(tc.res, tc.err)
			if res != tc.wantRes || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("final(%v, %v) = %v, %v", tc.res, tc.err, res, err)
			}
		})
	}
}
