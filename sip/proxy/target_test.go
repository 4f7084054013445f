package proxy

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/chain/chaintest"
	"github.com/sori-voice/sori/sip/siptest"
)

// fromPhone is a message from a phone at 203.0.113.5:40000 over UDP.
func fromPhone() *sip.Response {
	r := sip.NewResponse(200, "OK")
	r.SetSource("203.0.113.5:40000")
	r.SetTransport("UDP")
	return r
}

// A Contact sori aliases carries a seal for its dialog; a Request-URI's
// alias is followed only with a valid one.
func TestAliasSeal(t *testing.T) {
	p := newTestProxy(t, "")
	c := &sip.ContactHeader{Address: siptest.URI(t, "sip:alice@192.168.1.20:5060;alias=10.0.0.9~6379~2;as=forged")}
	p.markContact(c, fromPhone(), "call-1")
	sealed := c.Address
	if v, seal, ok := aliasOf(sealed); !ok || v != "203.0.113.5~40000~1" || seal == "" || seal == "forged" {
		t.Fatalf("marked Contact %s", sealed.String())
	}
	for _, tc := range []struct {
		name   string
		u      sip.Uri
		callID string
		want   bool
	}{
		{"sealed for its dialog", sealed, "call-1", true},
		{"another dialog", sealed, "call-2", false},
		{"no alias", siptest.URI(t, "sip:alice@203.0.113.5:40000"), "call-1", true},
		{"no seal", siptest.URI(t, "sip:alice@192.168.1.20;alias=10.0.0.9~6379~2"), "call-1", false},
		{"a seal for another alias", siptest.URI(t, "sip:alice@192.168.1.20;alias=10.0.0.9~6379~2;as="+p.aliasSeal("call-1", "203.0.113.5~40000~1")), "call-1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.aliasSealed(tc.u, tc.callID); got != tc.want {
				t.Fatalf("sealed = %v, want %v", got, tc.want)
			}
		})
	}
	// Another node with the same secret accepts it; one with another does not.
	other := newTestProxy(t, "")
	if other.aliasSealed(sealed, "call-1") {
		t.Fatal("a seal made with another secret was accepted")
	}
	// A process started again on sip.auth_secret (a restart, another node
	// of the deployment) verifies the seals and dialog tokens the first wrote.
	secret := []byte("e2e-shared-secret-0123456789")
	first := New(Config{Self: p.cfg.Self, Sender: sender{}, DialogSecret: secret, Log: p.log})
	first.markContact(c, fromPhone(), "call-1")
	restarted := New(Config{Self: p.cfg.Self, Sender: sender{}, DialogSecret: secret, Log: p.log})
	if !restarted.aliasSealed(c.Address, "call-1") || restarted.aliasSealed(c.Address, "call-2") {
		t.Fatal("the restarted process does not verify the seal for its dialog alone")
	}
	if restarted.dialogToken("call-1") != first.dialogToken("call-1") {
		t.Fatal("the restarted process has other dialog tokens")
	}
}

func aliasOf(u sip.Uri) (string, string, bool) {
	v, ok := u.UriParams.Get("alias")
	seal, _ := u.UriParams.Get("as")
	return v, seal, ok
}

func TestSameTarget(t *testing.T) {
	for _, tc := range []struct {
		u, target string
		want      bool
	}{
		{"sip:bob@10.0.0.9:5062", "sip:bob@10.0.0.9:5062", true},
		{"sip:bob@10.0.0.9:5062;alias=203.0.113.5~40000~1;as=x", "sip:bob@10.0.0.9:5062", true},
		{"sip:bob@10.0.0.9", "sip:bob@10.0.0.9:5060", true},
		{"sip:bob@10.0.0.9;transport=tls", "sip:bob@10.0.0.9:5061;transport=TLS", true},
		{"sip:bob@10.0.0.9:5062;ob", "sip:bob@10.0.0.9:5062", true},
		{"sip:bob@127.0.0.9:6379", "sip:bob@10.0.0.9:5062", false},
		{"sip:bob@10.0.0.9:5062;transport=tcp", "sip:bob@10.0.0.9:5062", false},
		{"sip:eve@10.0.0.9:5062", "sip:bob@10.0.0.9:5062", false},
		{"sips:bob@10.0.0.9:5062", "sip:bob@10.0.0.9:5062", false},
	} {
		if got := sameTarget(siptest.URI(t, tc.u), tc.target); got != tc.want {
			t.Errorf("sameTarget(%s, %s) = %v, want %v", tc.u, tc.target, got, tc.want)
		}
	}
}

// With the call held, a request inside it goes to the other side's
// Contact (as last refreshed) and through its recorded route, or nowhere.
func TestDialogTarget(t *testing.T) {
	tb := call.New(call.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c := tb.Load(t.Context(), call.State{Record: calls.Record{CallID: "dlg-1"}, Phase: call.Answered, Dialog: true, Expiry: time.Now().Add(time.Hour),
		Caller: call.Side{Target: "sip:alice@192.168.1.20:5060", Dest: "203.0.113.5:40000", Transport: "UDP", Tag: "a-tag"},
		Callee: call.Side{Target: "sip:bob@10.0.0.9:5062", Dest: "198.51.100.7:5060", Transport: "UDP", Tag: "b-tag",
			Route: []string{"sip:edge.example;lr"}}})
	bye := func(ruri string, extra ...string) *sip.Request {
		return chaintest.Request(t, chaintest.Raw("BYE", ruri, extra...))
	}
	for _, tc := range []struct {
		name    string
		c       *call.Call
		fromTag string
		req     *sip.Request
		want    bool
	}{
		{"caller to callee through its edge", c, "a-tag", bye("sip:bob@10.0.0.9:5062", "Route: <sip:edge.example;lr>"), true},
		{"caller to callee without its route: still its Contact", c, "a-tag", bye("sip:bob@10.0.0.9:5062"), true},
		{"caller to callee through another route", c, "a-tag", bye("sip:bob@10.0.0.9:5062", "Route: <sip:127.0.0.9:6379;lr>"), false},
		{"caller to elsewhere", c, "a-tag", bye("sip:bob@127.0.0.9:6379", "Route: <sip:edge.example;lr>"), false},
		{"callee to caller, with sori's alias", c, "b-tag", bye("sip:alice@192.168.1.20:5060;alias=203.0.113.5~40000~1;as=x"), true},
		{"callee to elsewhere", c, "b-tag", bye("sip:alice@10.1.1.1:5060"), false},
		{"a tag of neither side: nothing to check", c, "x-tag", bye("sip:alice@10.1.1.1:5060"), true},
		{"no call held: nothing to check", nil, "a-tag", bye("sip:anyone@10.1.1.1"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := dialogTarget(tc.c, tc.fromTag, tc.req); got != tc.want {
				t.Fatalf("dialogTarget = %v, want %v", got, tc.want)
			}
		})
	}
	c.Moved("b-tag", "sip:bob@10.0.0.10:5062", "198.51.100.8:5060", "UDP") // bob moved
	if !dialogTarget(c, "a-tag", bye("sip:bob@10.0.0.10:5062", "Route: <sip:edge.example;lr>")) || dialogTarget(c, "a-tag", bye("sip:bob@10.0.0.9:5062", "Route: <sip:edge.example;lr>")) {
		t.Fatal("the target refresh was not followed")
	}
}
