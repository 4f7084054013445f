package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
)

// A delayed offer (an INVITE without SDP, as carrier gateways and some
// phones send) forked to a user registered from a browser over WSS and
// from a UDP phone: no branch gets an offer, each callee makes its own
// in its 200 (the browser WebRTC, the phone RTP/AVP), and the caller's
// ACK brings the answer. The browser is a raw SIP client over WSS whose
// media is a pion PeerConnection (full ICE, DTLS client, SRTP, as a
// browser's), so media is checked both ways on either branch.

// forkLate is bob registered from a browser and a phone, and alice's
// INVITE without SDP to him as each contact got it.
type forkLate struct {
	an                 *anchorProc
	n                  *defaultNode
	alice, phone       *ua
	browser            *wsPhone
	toPhone, toBrowser *sip.Request
}

func (f *forkLate) inAnchorRange(ap netip.AddrPort) bool {
	return ap.Addr() == netip.MustParseAddr("127.0.0.1") && int(ap.Port()) >= f.an.minPort && int(ap.Port()) <= f.an.maxPort
}

func startForkLate(t *testing.T, an *anchorProc, config ...[2]string) *forkLate {
	t.Helper()
	f := &forkLate{an: an}
	f.n = startDefaultNode(t, f.an, config...)
	f.phone = newUA(t, f.n.node, "udp", "bob")
	if res := f.phone.registerAuth("bob", "bob-secret", "forklate-udp-reg@test", 1, "Contact: <sip:bob@"+f.phone.local+">"); res.StatusCode != 200 {
		t.Fatalf("the phone's REGISTER: %d", res.StatusCode)
	}
	c, _, err := dialWS(t, fmt.Sprintf("wss://127.0.0.1:%d/", f.n.wssPort), f.n.ca, "sip")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	f.browser = &wsPhone{t: t, c: c, host: "q7late.invalid"}
	register := func(cseq int, auth string) string {
		return fmt.Sprintf("REGISTER sip:sori.test SIP/2.0\nVia: SIP/2.0/WSS %s;branch=z9hG4bK-forklate-ws-%d\nMax-Forwards: 70\nFrom: <sip:bob@sori.test>;tag=flws%d\nTo: <sip:bob@sori.test>\nCall-ID: forklate-ws-reg@test\nCSeq: %d REGISTER\nContact: <sip:bob@%s;transport=ws>\nExpires: 600\n%sContent-Length: 0\n\n",
			f.browser.host, cseq, cseq, cseq, f.browser.host, auth)
	}
	f.browser.send(register(1, ""))
	res := f.browser.final()
	if res.StatusCode != 401 {
		t.Fatalf("the browser's REGISTER: %d", res.StatusCode)
	}
	f.browser.send(register(2, "Authorization: "+digestFor(t, res, "WWW-Authenticate", "REGISTER", "sip:sori.test", "bob", "bob-secret")+"\n"))
	if res := f.browser.final(); res.StatusCode != 200 {
		t.Fatalf("the browser's REGISTER with credentials: %d %s", res.StatusCode, res.Reason)
	}

	f.alice = newUA(t, f.n.node, "udp", "alice")
	f.alice.authenticated("INVITE", "sip:bob@sori.test") // no SDP: alice.sdp is empty
	f.toPhone = f.phone.readRequest()
	f.toBrowser = f.browserRequest(t, sip.INVITE)
	for name, r := range map[string]*sip.Request{"browser": f.toBrowser, "phone": f.toPhone} {
		if r.Method != sip.INVITE || len(r.Body()) != 0 {
			t.Fatalf("the %s got %s with body %q, want the INVITE without SDP", name, r.Method, r.Body())
		}
	}
	return f
}

// browserRequest reads the browser's messages until a request of method.
func (f *forkLate) browserRequest(t *testing.T, method sip.RequestMethod) *sip.Request {
	t.Helper()
	for {
		if r, ok := f.browser.read().(*sip.Request); ok && r.Method == method {
			return r
		}
	}
}

// browserResponse is the browser's response to req, with an SDP body
// when sdp is not empty.
func (f *forkLate) browserResponse(req *sip.Request, code int, reason, tag, body string) string {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if tag != "" && req.To().Params.GetOr("tag", "") == "" {
		res.To().Params.Add("tag", tag) // over the one sipgo makes up
	}
	if code > 100 && code < 300 {
		res.AppendHeader(sip.NewHeader("Contact", "<sip:bob@"+f.browser.host+";transport=ws>"))
	}
	if body != "" {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody([]byte(body))
	} else {
		res.SetBody(nil)
	}
	return res.String()
}

// calleeRequest is an in-dialog request from the callee that got inv
// (its tag tag, its Via via) to the caller: Request-URI the caller's
// Contact, Route the Record-Route as it came, From and To swapped.
func calleeRequest(method string, cseq int, inv *sip.Request, tag, via, contact string) string {
	var routes []string
	for _, rr := range inv.GetHeaders("Record-Route") {
		routes = append(routes, "Route: "+rr.Value())
	}
	to := inv.From().Value()
	from := inv.To().Value()
	if !inv.To().Params.Has("tag") {
		from += ";tag=" + tag
	}
	return fmt.Sprintf("%s %s SIP/2.0\nVia: %s\nMax-Forwards: 70\n%sFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: %d %s\nContact: %s\nContent-Length: 0\n\n",
		method, inv.Contact().Address.String(), via, joinLines(routes), from, to, inv.CallID().Value(), cseq, method, contact)
}

// noWebRTC requires a phone's SDP to be plain RTP/AVP to the anchor.
func (f *forkLate) noWebRTC(t *testing.T, who string, body []byte) netip.AddrPort {
	t.Helper()
	s, err := sdp.Parse(body)
	if err != nil || len(s.Media) != 1 || s.Media[0].Proto != "RTP/AVP" {
		t.Fatalf("%s's SDP is not RTP/AVP (%v):\n%s", who, err, body)
	}
	for _, gone := range []string{"a=fingerprint:", "a=ice-", "a=candidate:", "a=setup:", "a=crypto:"} {
		if strings.Contains(string(body), gone) {
			t.Fatalf("%s's SDP has %q:\n%s", who, gone, body)
		}
	}
	to := netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port))
	if !f.inAnchorRange(to) {
		t.Fatalf("%s's SDP sends media to %s, not to the anchor:\n%s", who, to, body)
	}
	return to
}

// toBrowserSDP requires the anchor's SDP for the browser to be WebRTC:
// UDP/TLS/RTP/SAVPF, the anchor's ICE credentials and a candidate on the
// m= port, its fingerprint, and setup (when not empty).
func (f *forkLate) toBrowserSDP(t *testing.T, body []byte, setup string) netip.AddrPort {
	t.Helper()
	s, err := sdp.Parse(body)
	if err != nil || len(s.Media) != 1 {
		t.Fatalf("the browser's SDP (%v):\n%s", err, body)
	}
	w, err := s.WebRTC(0)
	to := netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port))
	if err != nil || s.Media[0].Proto != "UDP/TLS/RTP/SAVPF" || w.Ufrag == "" || w.Pwd == "" || w.Fingerprint.Value == "" ||
		!strings.Contains(string(body), fmt.Sprintf(" 127.0.0.1 %d typ host", to.Port())) || !f.inAnchorRange(to) ||
		setup != "" && w.Setup != setup || strings.Contains(string(body), "a=crypto:") {
		t.Fatalf("the browser's SDP is not the anchor's WebRTC (setup %s) (%v):\n%s", setup, err, body)
	}
	return to
}

func mustParse(t *testing.T, body []byte) *sdp.Session {
	t.Helper()
	s, err := sdp.Parse(body)
	if err != nil {
		t.Fatalf("%v:\n%s", err, body)
	}
	return s
}

// phoneCancelled has the branch that lost get CANCEL, answer it and 487.
func (f *forkLate) phoneCancelled(t *testing.T) {
	t.Helper()
	cancel := f.phone.readRequest()
	if cancel.Method != sip.CANCEL {
		t.Fatalf("the phone got %s, want CANCEL", cancel.Method)
	}
	f.phone.respond(cancel, 200, "OK")
	f.phone.respond(f.toPhone, 487, "Request Terminated")
	if ack := f.phone.readRequest(); ack.Method != sip.ACK {
		t.Fatalf("the phone got %s, want the ACK of its 487", ack.Method)
	}
}

func (f *forkLate) browserCancelled(t *testing.T) {
	t.Helper()
	cancel := f.browserRequest(t, sip.CANCEL)
	f.browser.send(f.browserResponse(cancel, 200, "OK", "", ""))
	f.browser.send(f.browserResponse(f.toBrowser, 487, "Request Terminated", "bob-browser", ""))
	f.browserRequest(t, sip.ACK)
}

// twoLegs waits for the anchor to hold the call's two legs only, the
// lost branch's gone (none was ever made for it), and checks they are
// peers, with the protocols given by tag.
func (f *forkLate) twoLegs(t *testing.T, protocols map[string]string) ng.Dict {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); f.an.legCount(t) != 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("during the call the anchor holds %d port pairs, want 2: %v", f.an.legCount(t), anchorCall(t, f.an))
		}
	}
	q := anchorCall(t, f.an)
	tags := liveLegs(q.Dict("tags"))
	if len(tags) != 2 {
		t.Fatalf("the anchor's call has legs %v, want %v", keys(tags), protocols)
	}
	var names []string
	for tag := range protocols {
		names = append(names, tag)
	}
	for i, tag := range names {
		leg := tags.Dict(tag)
		if leg == nil {
			t.Fatalf("the anchor's call has legs %v, want %v", keys(tags), protocols)
		}
		medias, _ := leg["medias"].([]any)
		if len(medias) != 1 || ng.Dict(medias[0].(map[string]any)).Str("protocol") != protocols[tag] {
			t.Fatalf("leg %s: %v, want %s", tag, leg, protocols[tag])
		}
		if peer := peerOf(leg); peer != names[1-i] {
			t.Fatalf("leg %s is in dialogue with %q, want %q", tag, peer, names[1-i])
		}
	}
	return q
}

// localPort is the anchor's port of tag's leg in an ng query.
func localPort(t *testing.T, q ng.Dict, tag string) int {
	t.Helper()
	medias, _ := q.Dict("tags").Dict(tag)["medias"].([]any)
	if len(medias) == 0 {
		t.Fatalf("no leg %s in %v", tag, q)
	}
	streams, _ := ng.Dict(medias[0].(map[string]any))["streams"].([]any)
	p, _ := ng.Dict(streams[0].(map[string]any)).Int("local port")
	return int(p)
}

// Case 1: the phone answers first with its RTP/AVP offer. Alice gets the
// anchor's plain offer, her ACK's answer reaches the phone from the
// anchor, RTP flows both ways through it; the browser's branch, which
// only rang, is cancelled and left nothing on the anchor. Then a
// re-INVITE without SDP from either side is anchored the same way, on
// the same ports.
func TestForkDelayedOfferAnsweredByThePhone(t *testing.T) {
	forkLateAnsweredByThePhone(t, startAnchor(t))
}

func forkLateAnsweredByThePhone(t *testing.T, an *anchorProc) {
	f := startForkLate(t, an)
	ma, mb := newMediaSocket(t), newMediaSocket(t)
	f.browser.send(f.browserResponse(f.toBrowser, 180, "Ringing", "bob-browser", ""))
	f.phone.send(answer200(f.toPhone, "bob-phone", "<sip:bob@"+f.phone.local+">", mb.sdp(2002)))
	ok200 := f.alice.final()
	if ok200.StatusCode != 200 || ok200.To().Params.GetOr("tag", "") != "bob-phone" {
		t.Fatalf("INVITE: %d %s from %s", ok200.StatusCode, ok200.Reason, ok200.To().Value())
	}
	toAnchorFromA := f.noWebRTC(t, "alice's 200", ok200.Body())
	mediaTarget(t, ok200.Body()) // the phone's Opus lines untouched
	f.alice.send(withSDP(f.alice.inDialog("ACK", 2, ok200), ma.sdp(1001)))
	ack := f.phone.readRequest()
	if ack.Method != sip.ACK {
		t.Fatalf("the phone got %s, want the ACK", ack.Method)
	}
	toAnchorFromB := f.noWebRTC(t, "the phone's ACK", ack.Body())
	if toAnchorFromB == toAnchorFromA {
		t.Fatalf("alice and the phone both send media to %s", toAnchorFromA)
	}
	f.browserCancelled(t)

	stream(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce, 50)
	stream(t, mb, toAnchorFromB, ma, toAnchorFromA, 0xb0b, 50)
	aliceTag := ok200.From().Params.GetOr("tag", "")
	f.twoLegs(t, map[string]string{aliceTag: "RTP/AVP", "bob-phone": "RTP/AVP"})

	// Alice's re-INVITE without SDP: the phone offers in its 200.
	f.alice.send(strings.Replace(f.alice.inDialog("INVITE", 3, ok200), "CSeq: 3 INVITE\n",
		"CSeq: 3 INVITE\nContact: <sip:alice@"+f.alice.local+";transport=udp>\n", 1))
	reinv := f.phone.readRequest()
	if reinv.Method != sip.INVITE || len(reinv.Body()) != 0 {
		t.Fatalf("the phone got %s with body %q", reinv.Method, reinv.Body())
	}
	f.phone.send(answer200(reinv, "bob-phone", "<sip:bob@"+f.phone.local+">", mb.sdp(2002)))
	reres := f.alice.final()
	if reres.StatusCode != 200 || f.noWebRTC(t, "alice's re-INVITE's 200", reres.Body()) != toAnchorFromA {
		t.Fatalf("alice's re-INVITE: %d, media to %s (was %s)", reres.StatusCode, mediaTarget(t, reres.Body()), toAnchorFromA)
	}
	f.alice.send(withSDP(f.alice.inDialog("ACK", 3, ok200), ma.sdp(1001)))
	reack := f.phone.readRequest()
	if reack.Method != sip.ACK || f.noWebRTC(t, "the phone's re-ACK", reack.Body()) != toAnchorFromB {
		t.Fatalf("the phone got %s sending media to %s (was %s)", reack.Method, mediaTarget(t, reack.Body()), toAnchorFromB)
	}
	stream(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce2, 10)
	stream(t, mb, toAnchorFromB, ma, toAnchorFromA, 0xb0b2, 10)

	// The phone's re-INVITE without SDP: alice offers in her 200.
	f.phone.send(calleeRequest("INVITE", 1, f.toPhone, "bob-phone", "SIP/2.0/UDP "+f.phone.local+";branch=z9hG4bK-fl-phone-1;rport",
		"<sip:bob@"+f.phone.local+">"))
	toAlice := f.alice.readRequest()
	if toAlice.Method != sip.INVITE || len(toAlice.Body()) != 0 {
		t.Fatalf("alice got %s with body %q", toAlice.Method, toAlice.Body())
	}
	f.alice.send(answer200(toAlice, aliceTag, "<sip:alice@"+f.alice.local+">", ma.sdp(1001)))
	var phone200 *sip.Response
	for phone200 == nil {
		if r, ok := f.phone.readMessage().(*sip.Response); ok && r.StatusCode >= 200 {
			phone200 = r
		}
	}
	if phone200.StatusCode != 200 || f.noWebRTC(t, "the phone's re-INVITE's 200", phone200.Body()) != toAnchorFromB {
		t.Fatalf("the phone's re-INVITE: %d, media to %s (was %s)", phone200.StatusCode, mediaTarget(t, phone200.Body()), toAnchorFromB)
	}
	f.phone.send(withSDP(calleeRequest("ACK", 1, f.toPhone, "bob-phone", "SIP/2.0/UDP "+f.phone.local+";branch=z9hG4bK-fl-phone-ack-1;rport",
		"<sip:bob@"+f.phone.local+">"), mb.sdp(2002)))
	aliceAck := f.alice.readRequest()
	if aliceAck.Method != sip.ACK || f.noWebRTC(t, "alice's ACK", aliceAck.Body()) != toAnchorFromA {
		t.Fatalf("alice got %s sending media to %s (was %s)", aliceAck.Method, mediaTarget(t, aliceAck.Body()), toAnchorFromA)
	}
	stream(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce3, 10)
	stream(t, mb, toAnchorFromB, ma, toAnchorFromA, 0xb0b3, 10)
	f.twoLegs(t, map[string]string{aliceTag: "RTP/AVP", "bob-phone": "RTP/AVP"})

	f.alice.send(f.alice.inDialog("BYE", 4, ok200))
	f.phone.respond(f.phone.readRequest(), 200, "OK")
	if r := f.alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
	waitNoCalls(t, f.an, f.n.node)
}

// pionBrowser is a browser's WebRTC stack (webrtctest: pion, full ICE
// on loopback, Opus on a track) whose SDP is as a browser's.
type pionBrowser struct{ *webrtctest.Browser }

func newPionBrowser(t *testing.T) *pionBrowser { return &pionBrowser{webrtctest.NewPeer(t)} }

// offer is the browser's offer, its candidates gathered.
func (b *pionBrowser) offer(t *testing.T) string {
	t.Helper()
	return browserDefault(t, b.MakeOffer(t))
}

// browserDefault is pion's SDP as a browser's is once its candidates are
// gathered (RFC 8839 §4.2.1.1): c= and the m= port its host candidate's;
// pion keeps JSEP's placeholders (c=IN IP4 0.0.0.0, port 9), which the
// anchor takes for an old-style hold.
func browserDefault(t *testing.T, body string) string {
	t.Helper()
	for _, l := range strings.Split(body, "\r\n") {
		if f := strings.Fields(l); strings.HasPrefix(l, "a=candidate:") && len(f) >= 8 && f[4] == "127.0.0.1" && f[7] == "host" {
			body = strings.Replace(body, "c=IN IP4 0.0.0.0", "c=IN IP4 127.0.0.1", -1)
			return strings.Replace(body, "m=audio 9 ", "m=audio "+f[5]+" ", 1)
		}
	}
	t.Fatalf("the browser's SDP has no host candidate on 127.0.0.1:\n%s", body)
	return ""
}

func (b *pionBrowser) answered(t *testing.T, body []byte) {
	t.Helper()
	b.Answer(t, string(body))
	b.WaitConnected(t, 15*time.Second)
}

// media has the browser and alice (her socket ma, the anchor's address
// toAnchor) send Opus at once until each got want packets of the other's.
func (b *pionBrowser) media(t *testing.T, ma *mediaSocket, toAnchor netip.AddrPort, want int64) {
	t.Helper()
	var got, heard int64
	buf := make([]byte, 2048)
	for seq, deadline := 0, time.Now().Add(15*time.Second); ; seq++ {
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(seq), Timestamp: uint32(seq) * 960, SSRC: 0xa11ce},
			Payload: append([]byte{0xfc}, bytes.Repeat([]byte{byte(seq)}, 79)...)}
		raw, _ := p.Marshal()
		if _, err := ma.conn.WriteToUDPAddrPort(raw, toAnchor); err != nil {
			t.Fatal(err)
		}
		if err := b.Say(uint16(seq), append([]byte{0xfc}, bytes.Repeat([]byte{0xbb}, 79)...)); err != nil {
			t.Fatal(err)
		}
		_ = ma.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		for {
			k, src, err := ma.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			var in rtp.Packet
			if src == toAnchor && in.Unmarshal(buf[:k]) == nil && in.PayloadType == 111 && len(in.Payload) > 1 && in.Payload[1] == 0xbb {
				got++
			}
		}
		for played := true; played; {
			select {
			case <-b.Heard():
				heard++
			default:
				played = false
			}
		}
		if got >= want && heard >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice got %d RTP packets of the browser's from the anchor, the browser played %d of alice's: want >= %d each",
				got, heard, want)
		}
	}
}

// Case 2: the browser answers first, its WebRTC offer in the 200. Alice,
// a UDP phone, gets the anchor's plain RTP/AVP offer (no DTLS or ICE
// line); her ACK's answer reaches the browser as the anchor's WebRTC
// answer (fingerprint, setup, ICE, candidate) on the same leg pair that
// took the 200's offer. ICE and DTLS connect, Opus flows both ways, the
// phone's branch is cancelled, and re-INVITEs without SDP from either
// side keep the call on the same ports with media flowing.
func TestForkDelayedOfferAnsweredByTheBrowser(t *testing.T) {
	forkLateAnsweredByTheBrowser(t, startAnchor(t))
}

// The same two calls with rtpengine as the anchor.
func TestRtpengineForkDelayedOffer(t *testing.T) {
	an := startRtpengine(t)
	t.Run("the phone answers", func(t *testing.T) { forkLateAnsweredByThePhone(t, an) })
	t.Run("the browser answers", func(t *testing.T) { forkLateAnsweredByTheBrowser(t, an) })
}

func forkLateAnsweredByTheBrowser(t *testing.T, an *anchorProc) {
	f := startForkLate(t, an)
	ma := newMediaSocket(t)
	pb := newPionBrowser(t)
	f.phone.respond(f.toPhone, 180, "Ringing", "Contact: <sip:bob@"+f.phone.local+">")
	offer := pb.offer(t)
	f.browser.send(f.browserResponse(f.toBrowser, 200, "OK", "bob-browser", offer))
	ok200 := f.alice.final()
	if ok200.StatusCode != 200 || ok200.To().Params.GetOr("tag", "") != "bob-browser" {
		t.Fatalf("INVITE: %d %s from %s", ok200.StatusCode, ok200.Reason, ok200.To().Value())
	}
	toAnchorFromA := f.noWebRTC(t, "alice's 200", ok200.Body())
	f.alice.send(withSDP(f.alice.inDialog("ACK", 2, ok200), ma.sdp(1001)))
	ack := f.browserRequest(t, sip.ACK)
	toAnchorFromB := f.toBrowserSDP(t, ack.Body(), "") // an answer to actpass: active or passive
	if w, _ := mustParse(t, ack.Body()).WebRTC(0); w.Setup != "active" && w.Setup != "passive" {
		t.Fatalf("the anchor's answer to the browser has a=setup:%s:\n%s", w.Setup, ack.Body())
	}
	if toAnchorFromB == toAnchorFromA {
		t.Fatalf("alice and the browser both send media to %s", toAnchorFromA)
	}
	f.phoneCancelled(t)

	// The legs of the 200's offer took the ACK's answer: one pair, the
	// ports alice's 200 and the browser's ACK name.
	aliceTag := ok200.From().Params.GetOr("tag", "")
	q := f.twoLegs(t, map[string]string{aliceTag: "RTP/AVP", "bob-browser": "UDP/TLS/RTP/SAVPF"})
	if a, b := localPort(t, q, aliceTag), localPort(t, q, "bob-browser"); a != int(toAnchorFromA.Port()) || b != int(toAnchorFromB.Port()) {
		t.Fatalf("the anchor's legs have ports %d (alice) and %d (browser); the 200 named %d, the ACK %d", a, b, toAnchorFromA.Port(), toAnchorFromB.Port())
	}
	pb.answered(t, ack.Body())
	pb.media(t, ma, toAnchorFromA, 50)
	legs := anchorWebRTCLegs(t, f.an)
	// sori-anchor says how the browser's leg is keyed; rtpengine's query does not.
	if b := legs["bob-browser"]; an.http != "" && (b.keying != "DTLS" || b.suite == "" || !strings.HasPrefix(b.selected, "127.0.0.1:")) {
		t.Fatalf("the anchor's legs %+v: want the browser's keyed by DTLS over ICE", legs)
	}

	// Alice's re-INVITE without SDP: the browser offers again in its 200
	// (the same ICE and DTLS), alice answers in the ACK.
	f.alice.send(strings.Replace(f.alice.inDialog("INVITE", 3, ok200), "CSeq: 3 INVITE\n",
		"CSeq: 3 INVITE\nContact: <sip:alice@"+f.alice.local+";transport=udp>\n", 1))
	reinv := f.browserRequest(t, sip.INVITE)
	if len(reinv.Body()) != 0 {
		t.Fatalf("the browser's re-INVITE has a body:\n%s", reinv.Body())
	}
	f.browser.send(f.browserResponse(reinv, 200, "OK", "bob-browser", browserDefault(t, pb.PC.LocalDescription().SDP)))
	reres := f.alice.final()
	if reres.StatusCode != 200 || f.noWebRTC(t, "alice's re-INVITE's 200", reres.Body()) != toAnchorFromA {
		t.Fatalf("alice's re-INVITE: %d, media to %s (was %s)", reres.StatusCode, mediaTarget(t, reres.Body()), toAnchorFromA)
	}
	f.alice.send(withSDP(f.alice.inDialog("ACK", 3, ok200), ma.sdp(1001)))
	reack := f.browserRequest(t, sip.ACK)
	if f.toBrowserSDP(t, reack.Body(), "") != toAnchorFromB {
		t.Fatalf("the browser's re-ACK sends media to %s (was %s):\n%s", mediaTarget(t, reack.Body()), toAnchorFromB, reack.Body())
	}
	pb.media(t, ma, toAnchorFromA, 25)

	// The browser's re-INVITE without SDP: alice offers in her 200 and
	// the browser gets it as the anchor's WebRTC offer, answers in its ACK.
	f.browser.send(calleeRequest("INVITE", 1, f.toBrowser, "bob-browser", "SIP/2.0/WSS "+f.browser.host+";branch=z9hG4bK-fl-ws-1",
		"<sip:bob@"+f.browser.host+";transport=ws>"))
	toAlice := f.alice.readRequest()
	if toAlice.Method != sip.INVITE || len(toAlice.Body()) != 0 {
		t.Fatalf("alice got %s with body %q", toAlice.Method, toAlice.Body())
	}
	f.alice.send(answer200(toAlice, aliceTag, "<sip:alice@"+f.alice.local+">", ma.sdp(1001)))
	var browser200 *sip.Response
	for browser200 == nil {
		if r, ok := f.browser.read().(*sip.Response); ok && r.StatusCode >= 200 && r.CSeq().MethodName == sip.INVITE {
			browser200 = r
		}
	}
	if browser200.StatusCode != 200 || f.toBrowserSDP(t, browser200.Body(), "") != toAnchorFromB {
		t.Fatalf("the browser's re-INVITE: %d, media to %s (was %s)", browser200.StatusCode, mediaTarget(t, browser200.Body()), toAnchorFromB)
	}
	// The browser's answer: its transport as before, the DTLS client it is.
	answer := strings.Replace(browserDefault(t, pb.PC.LocalDescription().SDP), "a=setup:actpass", "a=setup:active", 1)
	f.browser.send(withSDP(calleeRequest("ACK", 1, f.toBrowser, "bob-browser", "SIP/2.0/WSS "+f.browser.host+";branch=z9hG4bK-fl-ws-ack-1",
		"<sip:bob@"+f.browser.host+";transport=ws>"), answer))
	aliceAck := f.alice.readRequest()
	if aliceAck.Method != sip.ACK || f.noWebRTC(t, "alice's ACK", aliceAck.Body()) != toAnchorFromA {
		t.Fatalf("alice got %s sending media to %s (was %s)", aliceAck.Method, mediaTarget(t, aliceAck.Body()), toAnchorFromA)
	}
	pb.media(t, ma, toAnchorFromA, 25)
	f.twoLegs(t, map[string]string{aliceTag: "RTP/AVP", "bob-browser": "UDP/TLS/RTP/SAVPF"})

	f.alice.send(f.alice.inDialog("BYE", 4, ok200))
	bye := f.browserRequest(t, sip.BYE)
	f.browser.send(f.browserResponse(bye, 200, "OK", "", ""))
	if r := f.alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
	waitNoCalls(t, f.an, f.n.node)
}

// The browser answers first as before, and alice's configuration says
// srtp (media.encryption): she gets the anchor's RTP/SAVP offer with its
// SDES key (a=crypto), still no DTLS or ICE line, and her SRTP answer
// in the ACK reaches the browser as the anchor's WebRTC answer, with
// which the browser's ICE and DTLS connect: each side keeps what it
// speaks, the anchor between SDES and DTLS-SRTP.
func TestForkDelayedOfferToAnSRTPCaller(t *testing.T) {
	f := startForkLate(t, startAnchor(t), [2]string{"encryption: pass ", "encryption: srtp "})
	pb := newPionBrowser(t)
	f.phone.respond(f.toPhone, 180, "Ringing", "Contact: <sip:bob@"+f.phone.local+">")
	f.browser.send(f.browserResponse(f.toBrowser, 200, "OK", "bob-browser", pb.offer(t)))
	ok200 := f.alice.final()
	if ok200.StatusCode != 200 {
		t.Fatalf("INVITE: %d %s", ok200.StatusCode, ok200.Reason)
	}
	s := mustParse(t, ok200.Body())
	body := string(ok200.Body())
	var suite string
	for _, l := range strings.Split(body, "\r\n") {
		if f := strings.Fields(strings.TrimPrefix(l, "a=crypto:")); strings.HasPrefix(l, "a=crypto:") && len(f) >= 3 && suite == "" {
			suite = f[1]
		}
	}
	if len(s.Media) != 1 || s.Media[0].Proto != "RTP/SAVP" || suite == "" {
		t.Fatalf("alice's 200 is not the anchor's RTP/SAVP offer with an SDES key:\n%s", body)
	}
	for _, gone := range []string{"a=fingerprint:", "a=ice-", "a=candidate:", "a=setup:"} {
		if strings.Contains(body, gone) {
			t.Fatalf("alice's 200 has %q:\n%s", gone, body)
		}
	}
	toAnchorFromA := netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port))
	if !f.inAnchorRange(toAnchorFromA) {
		t.Fatalf("alice's 200 sends media to %s", toAnchorFromA)
	}
	// Alice's own key and salt for the anchor's suite (RFC 4568, RFC 7714).
	key := make([]byte, map[string]int{"AEAD_AES_256_GCM": 44, "AEAD_AES_128_GCM": 28, "AES_256_CM_HMAC_SHA1_80": 46, "AES_256_CM_HMAC_SHA1_32": 46}[suite])
	if len(key) == 0 {
		key = make([]byte, 30) // AES_CM_128_HMAC_SHA1_80, _32
	}
	_, _ = rand.Read(key)
	ma := newMediaSocket(t)
	answer := strings.Replace(ma.sdp(1001), "RTP/AVP", "RTP/SAVP", 1) + "a=crypto:1 " + suite + " inline:" + base64.StdEncoding.EncodeToString(key) + "\r\n"
	f.alice.send(withSDP(f.alice.inDialog("ACK", 2, ok200), answer))
	ack := f.browserRequest(t, sip.ACK)
	toAnchorFromB := f.toBrowserSDP(t, ack.Body(), "")
	if toAnchorFromB == toAnchorFromA {
		t.Fatalf("alice and the browser both send media to %s", toAnchorFromA)
	}
	f.phoneCancelled(t)
	aliceTag := ok200.From().Params.GetOr("tag", "")
	f.twoLegs(t, map[string]string{aliceTag: "RTP/SAVP", "bob-browser": "UDP/TLS/RTP/SAVPF"})
	pb.answered(t, ack.Body()) // ICE and DTLS with the anchor

	f.alice.send(f.alice.inDialog("BYE", 3, ok200))
	bye := f.browserRequest(t, sip.BYE)
	f.browser.send(f.browserResponse(bye, 200, "OK", "", ""))
	if r := f.alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
	waitNoCalls(t, f.an, f.n.node)
}
