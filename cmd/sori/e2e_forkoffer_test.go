package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/sdp"
)

// Bob is registered from a browser (a raw SIP client over WSS) and from
// a UDP phone; alice calls him. Each fork gets an offer made for what its
// contact speaks: the browser WebRTC (UDP/TLS/RTP/SAVPF, ICE, the anchor's
// fingerprint), the phone RTP/AVP. The phone answers: media flows through
// the anchor on the phone's branch's ports, the browser gets CANCEL, and
// the anchor drops the browser's branch at once: one call, two legs. After
// the hang-up it holds nothing. Either contact may be the first target
// (the one registered last), whose offer is the call's, the other's made
// for its branch: both orders are tried.
func TestForkOffersEachContactItsOwnSDP(t *testing.T) {
	for _, phoneFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "phone registered first", false: "browser registered first"}[phoneFirst], func(t *testing.T) {
			forkToBrowserAndPhone(t, phoneFirst)
		})
	}
}

func forkToBrowserAndPhone(t *testing.T, phoneFirst bool) {
	an := startAnchor(t)
	n := startDefaultNode(t, an)
	inAnchorRange := func(ap netip.AddrPort) bool {
		return ap.Addr() == netip.MustParseAddr("127.0.0.1") && int(ap.Port()) >= an.minPort && int(ap.Port()) <= an.maxPort
	}

	phone := newUA(t, n.node, "udp", "bob")
	registerPhone := func() {
		if res := phone.registerAuth("bob", "bob-secret", "fork-udp-reg@test", 1, "Contact: <sip:bob@"+phone.local+">"); res.StatusCode != 200 {
			t.Fatalf("the phone's REGISTER: %d", res.StatusCode)
		}
	}
	if phoneFirst {
		registerPhone()
	}
	c, _, err := dialWS(t, fmt.Sprintf("wss://127.0.0.1:%d/", n.wssPort), n.ca, "sip")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	browser := &wsPhone{t: t, c: c, host: "k3v9fork.invalid"}
	register := func(cseq int, auth string) string {
		return fmt.Sprintf("REGISTER sip:sori.test SIP/2.0\nVia: SIP/2.0/WSS %s;branch=z9hG4bK-fork-ws-%d\nMax-Forwards: 70\nFrom: <sip:bob@sori.test>;tag=fws%d\nTo: <sip:bob@sori.test>\nCall-ID: fork-ws-reg@test\nCSeq: %d REGISTER\nContact: <sip:bob@%s;transport=ws>\nExpires: 600\n%sContent-Length: 0\n\n",
			browser.host, cseq, cseq, cseq, browser.host, auth)
	}
	browser.send(register(1, ""))
	res := browser.final()
	if res.StatusCode != 401 {
		t.Fatalf("the browser's REGISTER: %d", res.StatusCode)
	}
	browser.send(register(2, "Authorization: "+digestFor(t, res, "WWW-Authenticate", "REGISTER", "sip:sori.test", "bob", "bob-secret")+"\n"))
	if res := browser.final(); res.StatusCode != 200 {
		t.Fatalf("the browser's REGISTER with credentials: %d %s", res.StatusCode, res.Reason)
	}
	if !phoneFirst {
		registerPhone()
	}

	ma, mb := newMediaSocket(t), newMediaSocket(t)
	alice := newUA(t, n.node, "udp", "alice")
	alice.sdp = ma.sdp(1001)
	alice.authenticated("INVITE", "sip:bob@sori.test")

	toPhone := phone.readRequest()
	var toBrowser *sip.Request
	for toBrowser == nil {
		if r, ok := browser.read().(*sip.Request); ok && r.Method == sip.INVITE {
			toBrowser = r
		}
	}
	if toPhone.Method != sip.INVITE {
		t.Fatalf("the phone got %s, want the INVITE", toPhone.Method)
	}
	// The browser's fork: WebRTC, the anchor its ICE-lite, DTLS peer.
	bs, err := sdp.Parse(toBrowser.Body())
	if err != nil || len(bs.Media) != 1 {
		t.Fatalf("the browser's SDP: %v\n%s", err, toBrowser.Body())
	}
	w, err := bs.WebRTC(0)
	if err != nil || bs.Media[0].Proto != "UDP/TLS/RTP/SAVPF" || w.Ufrag == "" || w.Pwd == "" || w.Fingerprint.Value == "" || !w.Lite ||
		!strings.Contains(string(toBrowser.Body()), "a=candidate:") || !inAnchorRange(netip.AddrPortFrom(bs.Media[0].Addr, uint16(bs.Media[0].Port))) {
		t.Fatalf("the browser's fork is not a WebRTC offer from the anchor (%v):\n%s", err, toBrowser.Body())
	}
	// The phone's fork: plain RTP/AVP, nothing of WebRTC.
	ps, err := sdp.Parse(toPhone.Body())
	if err != nil || len(ps.Media) != 1 || ps.Media[0].Proto != "RTP/AVP" {
		t.Fatalf("the phone's SDP: %v\n%s", err, toPhone.Body())
	}
	for _, gone := range []string{"a=fingerprint:", "a=ice-", "a=candidate:", "a=setup:", "a=crypto:"} {
		if strings.Contains(string(toPhone.Body()), gone) {
			t.Fatalf("the phone's fork has %q:\n%s", gone, toPhone.Body())
		}
	}
	toAnchorFromB := mediaTarget(t, toPhone.Body())
	if !inAnchorRange(toAnchorFromB) || toAnchorFromB.Port() == uint16(bs.Media[0].Port) {
		t.Fatalf("the phone's fork sends media to %s (the browser's: port %d)", toAnchorFromB, bs.Media[0].Port)
	}

	// The browser rings; the phone answers.
	ringing := sip.NewResponseFromRequest(toBrowser, 180, "Ringing", nil)
	ringing.To().Params.Add("tag", "bob-browser")
	ringing.AppendHeader(sip.NewHeader("Contact", "<sip:bob@"+browser.host+";transport=ws>"))
	ringing.SetBody(nil)
	browser.send(ringing.String())
	phone.respondSDP(toPhone, 200, "OK", mb.sdp(2002), "Contact: <sip:bob@"+phone.local+">")
	ok200 := alice.final()
	if ok200.StatusCode != 200 {
		t.Fatalf("INVITE: %d %s", ok200.StatusCode, ok200.Reason)
	}
	toAnchorFromA := mediaTarget(t, ok200.Body())
	if !inAnchorRange(toAnchorFromA) || toAnchorFromA == toAnchorFromB {
		t.Fatalf("alice's 200 sends media to %s (bob's side: %s)", toAnchorFromA, toAnchorFromB)
	}
	alice.sdp = ""
	alice.send(alice.inDialog("ACK", 2, ok200))
	if ack := phone.readRequest(); ack.Method != sip.ACK {
		t.Fatalf("the phone got %s, want the ACK", ack.Method)
	}

	// The browser's fork is cancelled.
	var cancel *sip.Request
	for cancel == nil {
		if r, ok := browser.read().(*sip.Request); ok && r.Method == sip.CANCEL {
			cancel = r
		}
	}
	cancelOK := sip.NewResponseFromRequest(cancel, 200, "OK", nil)
	cancelOK.SetBody(nil)
	browser.send(cancelOK.String())
	terminated := sip.NewResponseFromRequest(toBrowser, 487, "Request Terminated", nil)
	terminated.To().Params.Add("tag", "bob-browser")
	terminated.SetBody(nil)
	browser.send(terminated.String())
	if ack, ok := browser.read().(*sip.Request); !ok || ack.Method != sip.ACK {
		t.Fatal("the browser got no ACK for its 487")
	}

	stream(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce, 50)
	stream(t, mb, toAnchorFromB, ma, toAnchorFromA, 0xb0b, 50)

	// The browser's branch leaves the anchor once the phone's won: the
	// call keeps alice's and the phone's legs, one port pair each.
	deleted := `sori_media_commands_total{command="delete",outcome="ok"}`
	for deadline := time.Now().Add(5 * time.Second); an.metric(t, "sori_anchor_ports_in_use") != "2" || nodeMetric(t, n.node, deleted) != "1"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("during the call the anchor holds %s port pairs (want 2); sori's branch deletes: %q",
				an.metric(t, "sori_anchor_ports_in_use"), nodeMetric(t, n.node, deleted))
		}
	}
	q := anchorCall(t, an) // exactly one call
	tags := q.Dict("tags")
	bobTag := ok200.To().Params.GetOr("tag", "")
	if len(tags) != 2 || tags.Dict(bobTag) == nil || tags.Dict(bobTag).Str("in dialogue with") == "" {
		t.Fatalf("the anchor's call has legs %v, want alice's and the phone's (%s)", keys(tags), bobTag)
	}
	medias, _ := tags.Dict(bobTag)["medias"].([]any)
	if len(medias) != 1 || ng.Dict(medias[0].(map[string]any)).Str("protocol") != "RTP/AVP" {
		t.Fatalf("the phone's leg: %v", tags.Dict(bobTag))
	}

	alice.send(alice.inDialog("BYE", 3, ok200))
	bye := phone.readRequest()
	phone.respond(bye, 200, "OK")
	if r := alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
	waitNoCalls(t, an, n.node)
}

func keys(d ng.Dict) []string {
	var out []string
	for k := range d {
		out = append(out, k)
	}
	return out
}
