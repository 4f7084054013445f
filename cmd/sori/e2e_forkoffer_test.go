package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

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
			forkToBrowserAndPhone(t, startAnchor(t), phoneFirst)
		})
	}
}

func forkToBrowserAndPhone(t *testing.T, an *anchorProc, phoneFirst bool) {
	n := startDefaultNode(t, an)

	phone := newUA(t, n.node, "udp", "bob")
	registerPhone := func() {
		if res := phone.registerAuth("bob", "bob-secret", "fork-udp-reg@test", 1, "Contact: <sip:bob@"+phone.local+">"); res.StatusCode != 200 {
			t.Fatalf("the phone's REGISTER: %d", res.StatusCode)
		}
	}
	if phoneFirst {
		registerPhone()
	}
	browser := registeredWSPhone(t, fmt.Sprintf("wss://127.0.0.1:%d/", n.wssPort), n.ca, "k3v9fork.invalid", "fork-ws")
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
	for name, r := range map[string]*sip.Request{"browser": toBrowser, "phone": toPhone} {
		if cl := r.ContentLength(); cl == nil || int(*cl) != len(r.Body()) {
			t.Fatalf("the %s's INVITE has Content-Length %v for %d bytes of SDP", name, cl, len(r.Body()))
		}
	}
	// The browser's fork: WebRTC, the anchor its ICE-lite, DTLS peer.
	bs, err := sdp.Parse(toBrowser.Body())
	if err != nil || len(bs.Media) != 1 {
		t.Fatalf("the browser's SDP: %v\n%s", err, toBrowser.Body())
	}
	w, err := bs.WebRTC(0)
	// sori-anchor is ICE-lite; rtpengine (an.http == "") does full ICE.
	if err != nil || bs.Media[0].Proto != "UDP/TLS/RTP/SAVPF" || w.Ufrag == "" || w.Pwd == "" || w.Fingerprint.Value == "" || w.Lite != (an.http != "") ||
		!strings.Contains(string(toBrowser.Body()), "a=candidate:") || !an.hasPort(netip.AddrPortFrom(bs.Media[0].Addr, uint16(bs.Media[0].Port))) {
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
	if !an.hasPort(toAnchorFromB) || toAnchorFromB.Port() == uint16(bs.Media[0].Port) {
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
	if !an.hasPort(toAnchorFromA) || toAnchorFromA == toAnchorFromB {
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

	streamBothWays(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce, 0xb0b, 50)

	// The browser's branch leaves the anchor once the phone's won: the
	// call keeps alice's and the phone's legs, one port pair each.
	waitLoserDeleted(t, an, n.node)
	q := anchorCall(t, an) // exactly one call
	tags := liveLegs(q.Dict("tags"))
	bobTag := ok200.To().Params.GetOr("tag", "")
	aliceTag := ok200.From().Params.GetOr("tag", "")
	if len(tags) != 2 || tags.Dict(bobTag) == nil || peerOf(tags.Dict(bobTag)) != aliceTag {
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

// Bob is registered from a browser (headless Chromium, JsSIP over WSS)
// and from a UDP phone; alice calls and the browser answers. The phone's
// fork had RTP/AVP of its own and gets CANCEL; the browser's WebRTC offer
// is the one the anchor keys: DTLS-SRTP to the browser, plain RTP to alice
// both ways, and the phone's branch leaves the anchor once the browser won.
func TestForkAnsweredByTheBrowser(t *testing.T) {
	// Chromium checks from every interface's candidate; the anchor
	// answers only loopback's, so the call stays on 127.0.0.0/8.
	an := startAnchor(t, "-ice-sources", "127.0.0.0/8")
	n := startDefaultNode(t, an)
	phone := newUA(t, n.node, "udp", "bob")
	if res := phone.registerAuth("bob", "bob-secret", "fork-udp-reg@test", 1, "Contact: <sip:bob@"+phone.local+">"); res.StatusCode != 200 {
		t.Fatalf("the phone's REGISTER: %d", res.StatusCode)
	}
	page := openPhonePage(t, startPhoneBrowser(t, n), servePages(t), n, "bob", "bob-secret")

	ma := newMediaSocket(t)
	alice := newUA(t, n.node, "udp", "alice")
	alice.sdp = ma.sdp(1001)
	// authenticated's Via branch and From tag carry the Call-ID's "@",
	// which JsSIP's parser refuses (it drops the INVITE): tokens only.
	const from = "From: <sip:alice@sori.test>;tag=fork-browser-alice"
	via := func(n int) string {
		return fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK-fork-browser-%d;rport", alice.local, n)
	}
	first := alice.request("INVITE", "sip:bob@sori.test", "fork-browser@test", 1, via(1), from)
	challenge := alice.do(first)
	if challenge.StatusCode != 407 {
		t.Fatalf("INVITE: %d, want 407 first", challenge.StatusCode)
	}
	alice.send(ackFor(first, challenge))
	alice.send(alice.request("INVITE", "sip:bob@sori.test", "fork-browser@test", 2, via(2), from,
		"Proxy-Authorization: "+digestFor(t, challenge, "Proxy-Authenticate", "INVITE", "sip:bob@sori.test", "alice", "alice-secret")))
	toPhone := phone.readRequest()
	if ps, err := sdp.Parse(toPhone.Body()); err != nil || toPhone.Method != sip.INVITE || len(ps.Media) != 1 || ps.Media[0].Proto != "RTP/AVP" ||
		strings.Contains(string(toPhone.Body()), "a=fingerprint:") || strings.Contains(string(toPhone.Body()), "a=ice-") {
		t.Fatalf("the phone's fork (%v):\n%s", err, toPhone.Body())
	}
	phone.respond(toPhone, 180, "Ringing")
	page.waitFor(t, "phone.direction === 'incoming'")
	browserPhone(t, page).mustBe(t, "called", func(p browserState) bool { return p.State != "failed" && p.State != "ended" })

	ok200 := alice.final()
	if ok200.StatusCode != 200 {
		t.Fatalf("INVITE: %d %s", ok200.StatusCode, ok200.Reason)
	}
	toAnchorFromA := mediaTarget(t, ok200.Body())
	if s, _ := sdp.Parse(ok200.Body()); !an.hasPort(toAnchorFromA) || s.Media[0].Proto != "RTP/AVP" || strings.Contains(string(ok200.Body()), "a=fingerprint:") {
		t.Fatalf("alice's 200 from the browser:\n%s", ok200.Body())
	}
	alice.sdp = ""
	alice.send(alice.inDialog("ACK", 2, ok200))
	page.waitFor(t, "phone.direction === 'incoming' && (phone.state === 'answered' || phone.state === 'failed' || phone.state === 'ended')")
	browserPhone(t, page).mustBe(t, "answered", func(p browserState) bool { return p.State == "answered" })

	// The phone's fork is cancelled.
	cancel := phone.readRequest()
	if cancel.Method != sip.CANCEL {
		t.Fatalf("the phone got %s, want CANCEL", cancel.Method)
	}
	phone.respond(cancel, 200, "OK")
	phone.respond(toPhone, 487, "Request Terminated")
	if ack := phone.readRequest(); ack.Method != sip.ACK {
		t.Fatalf("the phone got %s, want the ACK of its 487", ack.Method)
	}

	// Media both ways: alice's RTP reaches the browser's WebRTC stack, and
	// the browser's comes to alice from the anchor, decrypted.
	want := 50
	var got int
	buf := make([]byte, 2048)
	for seq, deadline := 0, time.Now().Add(15*time.Second); ; seq++ {
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(seq), Timestamp: uint32(seq) * 960, SSRC: 0xa11ce},
			Payload: append([]byte{0xfc}, bytes.Repeat([]byte{byte(seq)}, 79)...)}
		raw, _ := p.Marshal()
		if _, err := ma.conn.WriteToUDPAddrPort(raw, toAnchorFromA); err != nil {
			t.Fatal(err)
		}
		// The RTP clock paces what alice sends; what the browser sends is
		// read meanwhile.
		_ = ma.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		for {
			k, src, err := ma.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			var in rtp.Packet
			if src == toAnchorFromA && in.Unmarshal(buf[:k]) == nil && in.PayloadType == 111 {
				got++
			}
		}
		if seq%25 == 0 && got >= want && browserPhone(t, page).Received >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice got %d RTP packets from the browser through the anchor, the browser %d from alice: want >= %d each",
				got, browserPhone(t, page).Received, want)
		}
	}

	waitLoserDeleted(t, an, n.node)
	legs := anchorWebRTCLegs(t, an) // exactly one call
	browserTag := ok200.To().Params.GetOr("tag", "")
	if b := legs[browserTag]; len(legs) != 2 || b.protocol != "UDP/TLS/RTP/SAVPF" || b.keying != "DTLS" || b.suite == "" || !strings.HasPrefix(b.selected, "127.0.0.1:") {
		t.Fatalf("the anchor's legs %+v: want alice's and the browser's (%s), keyed by DTLS", legs, browserTag)
	}

	alice.send(alice.inDialog("BYE", 3, ok200))
	if r := alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
	page.waitFor(t, "phone.state === 'ended'")
	waitNoCalls(t, an, n.node)
	page.checkNoErrors(t)
}

// waitLoserDeleted waits for sori to have deleted the losing branch's
// media, and the anchor to hold the call's two legs, one port pair each.
func waitLoserDeleted(t *testing.T, an *anchorProc, n *node) {
	t.Helper()
	deleted := `sori_media_commands_total{command="delete",outcome="ok"}`
	for deadline := time.Now().Add(5 * time.Second); an.legCount(t) != 2 || nodeMetric(t, n, deleted) != "1"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("during the call the anchor holds %d port pairs (want 2); sori's branch deletes: %q; its call: %v",
				an.legCount(t), nodeMetric(t, n, deleted), anchorCall(t, an))
		}
	}
}
