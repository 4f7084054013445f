package main

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

// A browser registered over WSS on node b is called by alice on node a:
// node a, the call's anchor, knows it for a browser from its binding
// (not from the node link the INVITE goes to b over) and offers it
// WebRTC; node b sends that offer down the WSS flow as it came, anchoring
// nothing again.
func TestNodesBrowserOnAnotherNodeGetsWebRTC(t *testing.T) {
	an, a, browser := browserOnNodeB(t, startAnchor(t))
	ma := newMediaSocket(t)
	alice := &ua{sipConn: dialFrom(t, "udp", "127.0.0.10", a.sipAddr()), user: "alice", password: "alice-secret"}
	alice.sdp = ma.sdp(1001)
	alice.authenticated("INVITE", "sip:bob@sori.test")

	var inv *sip.Request
	for inv == nil {
		if r, ok := browser.read().(*sip.Request); ok && r.Method == sip.INVITE {
			inv = r
		}
	}
	if vias := inv.GetHeaders("Via"); len(vias) != 3 || !strings.Contains(vias[1].Value(), a.sipAddr()) {
		t.Fatalf("the INVITE did not come from node a through node b: Via %v", vias)
	}
	s, err := sdp.Parse(inv.Body())
	if err != nil || len(s.Media) != 1 {
		t.Fatalf("the browser's SDP: %v\n%s", err, inv.Body())
	}
	w, err := s.WebRTC(0)
	if err != nil || s.Media[0].Proto != "UDP/TLS/RTP/SAVPF" || w.Ufrag == "" || w.Fingerprint.Value == "" ||
		!an.hasPort(netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port))) {
		t.Fatalf("the browser on node b did not get a WebRTC offer from the anchor (%v):\n%s", err, inv.Body())
	}
	for _, want := range []string{"a=fingerprint:", "a=ice-ufrag:", "a=candidate:"} {
		if !strings.Contains(string(inv.Body()), want) {
			t.Fatalf("the browser's offer has no %q:\n%s", want, inv.Body())
		}
	}

	busy := sip.NewResponseFromRequest(inv, 486, "Busy Here", nil)
	busy.To().Params.Add("tag", "bob-browser")
	busy.SetBody(nil)
	browser.send(busy.String())
	if res := alice.final(); res.StatusCode != 486 {
		t.Fatalf("INVITE: %d %s, want the browser's 486", res.StatusCode, res.Reason)
	}
}

// In a delayed-offer call the browser's 200 offer comes back to node a
// over the node link: node a still takes it for a WebRTC peer's, so the
// ACK's answer node b sends down the flow carries the anchor's ICE and
// DTLS.
// With rtpengine too, which would take ICE away from an answer whose
// offerer it was not told is a browser.
func TestNodesBrowserOnAnotherNodeOffersInItsOK(t *testing.T) {
	t.Run("sori-anchor", func(t *testing.T) { browserOffersInItsOK(t, startAnchor(t)) })
	t.Run("rtpengine", func(t *testing.T) { browserOffersInItsOK(t, startRtpengine(t)) })
}

func browserOffersInItsOK(t *testing.T, an *anchorProc) {
	an, a, browser := browserOnNodeB(t, an)
	ma := newMediaSocket(t)
	alice := &ua{sipConn: dialFrom(t, "udp", "127.0.0.10", a.sipAddr()), user: "alice", password: "alice-secret"}
	alice.authenticated("INVITE", "sip:bob@sori.test")
	var inv *sip.Request
	for inv == nil {
		if r, ok := browser.read().(*sip.Request); ok && r.Method == sip.INVITE {
			inv = r
		}
	}
	if len(inv.Body()) != 0 {
		t.Fatalf("the browser's INVITE has a body:\n%s", inv.Body())
	}
	ok := sip.NewResponseFromRequest(inv, 200, "OK", nil)
	ok.To().Params.Add("tag", "bob-browser")
	ok.AppendHeader(sip.NewHeader("Contact", "<sip:bob@"+browser.host+";transport=ws>"))
	ok.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	ok.SetBody([]byte(strings.ReplaceAll(nodesBrowserOffer, "\n", "\r\n")))
	browser.send(ok.String())
	res := alice.final()
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d %s", res.StatusCode, res.Reason)
	}
	if body := string(res.Body()); !strings.Contains(body, " RTP/AVP ") || strings.Contains(body, "a=fingerprint") || strings.Contains(body, "a=ice-") {
		t.Fatalf("alice got the browser's offer, want the anchor's RTP/AVP:\n%s", body)
	}
	alice.send(withSDP(alice.inDialog("ACK", 2, res), ma.sdp(1001)))
	var ack *sip.Request
	for ack == nil {
		if r, ok := browser.read().(*sip.Request); ok && r.Method == sip.ACK {
			ack = r
		}
	}
	s, err := sdp.Parse(ack.Body())
	if err != nil || len(s.Media) != 1 {
		t.Fatalf("the browser's ACK: %v\n%s", err, ack.Body())
	}
	w, err := s.WebRTC(0)
	if err != nil || s.Media[0].Proto != "UDP/TLS/RTP/SAVPF" || w.Ufrag == "" || w.Pwd == "" || w.Fingerprint.Value == "" ||
		!strings.Contains(string(ack.Body()), "a=candidate:") || !an.hasPort(netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port))) {
		t.Fatalf("the ACK's answer to the browser on node b is not the anchor's WebRTC one (%v):\n%s", err, ack.Body())
	}
	alice.send(alice.inDialog("BYE", 3, res))
	for {
		if r, ok := browser.read().(*sip.Request); ok && r.Method == sip.BYE {
			bye := sip.NewResponseFromRequest(r, 200, "OK", nil)
			bye.SetBody(nil)
			browser.send(bye.String())
			break
		}
	}
	if r := alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d %s", r.StatusCode, r.Reason)
	}
}

// nodesBrowserOffer is a browser's WebRTC offer (Chromium's, trimmed).
const nodesBrowserOffer = `v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host
a=ice-ufrag:Xk3b
a=ice-pwd:9fJq2LwRt7ZpYvN4sHcM1dEe
a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF
a=setup:actpass
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
`

// browserOnNodeB starts two nodes on anchor an on one Redis, a (UDP and
// TCP) and b (with WSS too), and registers bob's browser over WSS on b.
func browserOnNodeB(t *testing.T, an *anchorProc) (*anchorProc, *sipNode, *wsPhone) {
	t.Helper()
	rs := redistest.Start(t)
	dir := t.TempDir()
	ips := []string{"127.0.0.1", "127.0.0.2"}
	ports := []int{freeSIPPort(t), freeSIPPort(t)}
	wssPort := freeSIPPort(t)
	addrs := nodeAddrs("tcp", ips, ports)
	media := fmt.Sprintf("media:\n  anchors: [%q]\n", an.ng)
	a := nodeSpec{id: "a", ip: ips[0], port: ports[0], nodes: addrs, store: rs.URL(), sections: media}.start(t)
	bs := nodeSpec{id: "b", ip: ips[1], port: ports[1], nodes: addrs, store: rs.URL(), sections: media,
		listen: []string{fmt.Sprintf(`"udp:%[1]s:%[2]d", "tcp:%[1]s:%[2]d", "wss:%[1]s:%[3]d"`, ips[1], ports[1], wssPort)}}
	// Its certificate for the browsers: sori.test, the name they check.
	phones := newTestCA(t, dir, "phones-ca")
	cert, key := sign(t, certSpec{name: "b-for-phones", ips: []string{ips[1]}, dns: []string{"sori.test"}}, phones.cert, phones.key)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	bs.tlsCert, bs.tlsKey = filepath.Join(dir, "b-phones.crt"), filepath.Join(dir, "b-phones.key")
	writePEM(t, bs.tlsCert, "CERTIFICATE", cert.Raw)
	writePEM(t, bs.tlsKey, "PRIVATE KEY", kder)
	bs.start(t)

	browser := registeredWSPhone(t, fmt.Sprintf("wss://%s:%d/", ips[1], wssPort), phones.certFile, "k3v9nodes.invalid", "nodes-ws")
	return an, a, browser
}

// The browser on node b calls alice, registered over TCP on node a: node
// b, the first node, anchors the call (its WSS flow says the caller is a
// browser), so alice on node a gets the anchor's plain RTP/AVP offer and
// the browser the anchor's WebRTC answer; node a anchors nothing again
// (one call with two legs on the anchor), and the browser's BYE through
// both nodes leaves the anchor with nothing.
func TestNodesBrowserOnAnotherNodeCalls(t *testing.T) {
	an, a, browser := browserOnNodeB(t, startAnchor(t))
	ma := newMediaSocket(t)
	alice := &ua{sipConn: dialFrom(t, "tcp", "127.0.0.10", a.sipAddr()), user: "alice", password: "alice-secret"}
	contact := "Contact: <sip:alice@" + alice.local + ";transport=tcp>"
	if r := alice.registerAuth("alice", "alice-secret", "alice-reg@test", 1, contact); r.StatusCode != 200 {
		t.Fatalf("alice's REGISTER on node a: %d %s", r.StatusCode, r.Reason)
	}

	offer := strings.ReplaceAll(nodesBrowserOffer, "\n", "\r\n")
	invite := func(cseq int, auth string) string {
		return fmt.Sprintf("INVITE sip:alice@sori.test SIP/2.0\nVia: SIP/2.0/WSS %[1]s;branch=z9hG4bK-bcall-%[2]d\nMax-Forwards: 70\nFrom: <sip:bob@sori.test>;tag=bcall\nTo: <sip:alice@sori.test>\nCall-ID: browser-calls@test\nCSeq: %[2]d INVITE\nContact: <sip:bob@%[1]s;transport=ws;ob>\n%[3]sContent-Type: application/sdp\nContent-Length: %[4]d\n\n%[5]s",
			browser.host, cseq, auth, len(offer), offer)
	}
	first := invite(1, "")
	browser.send(first)
	res := browser.final()
	if res.StatusCode != 407 {
		t.Fatalf("the browser's INVITE: %d %s, want 407", res.StatusCode, res.Reason)
	}
	browser.send(ackFor(first, res))
	browser.send(invite(2, "Proxy-Authorization: "+digestFor(t, res, "Proxy-Authenticate", "INVITE", "sip:alice@sori.test", "bob", "bob-secret")+"\n"))

	var inv *sip.Request
	for inv == nil {
		if r := alice.readRequest(); r.Method == sip.INVITE {
			inv = r
		}
	}
	if vias := inv.GetHeaders("Via"); len(vias) != 3 || !strings.Contains(vias[0].Value(), a.sipAddr()) {
		t.Fatalf("the INVITE did not come from node b through node a: Via %v", vias)
	}
	body := string(inv.Body())
	s, err := sdp.Parse(inv.Body())
	if err != nil || len(s.Media) != 1 || s.Media[0].Proto != "RTP/AVP" || strings.Contains(body, "a=fingerprint") ||
		strings.Contains(body, "a=ice-") || !an.hasPort(netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port))) {
		t.Fatalf("alice on node a did not get the anchor's plain offer (%v):\n%s", err, body)
	}
	alice.respondSDP(inv, 200, "OK", ma.sdp(2002), contact)

	ok := browser.final()
	if ok.StatusCode != 200 {
		t.Fatalf("the browser's INVITE with credentials: %d %s", ok.StatusCode, ok.Reason)
	}
	s, err = sdp.Parse(ok.Body())
	if err != nil || len(s.Media) != 1 {
		t.Fatalf("the browser's answer: %v\n%s", err, ok.Body())
	}
	w, err := s.WebRTC(0)
	if err != nil || s.Media[0].Proto != "UDP/TLS/RTP/SAVPF" || w.Ufrag == "" || w.Pwd == "" || w.Fingerprint.Value == "" ||
		!strings.Contains(string(ok.Body()), "a=candidate:") || !strings.Contains(string(ok.Body()), "a=ice-lite") ||
		!an.hasPort(netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port))) {
		t.Fatalf("the browser did not get the anchor's WebRTC answer (%v):\n%s", err, ok.Body())
	}
	if n := an.legCount(t); n != 2 {
		t.Fatalf("the anchor holds %d legs, want the one call's 2 (node a anchored it again?)", n)
	}

	browser.send(wsInDialog(browser, "ACK", 2, ok))
	for {
		if r := alice.readRequest(); r.Method == sip.ACK {
			break
		}
	}
	browser.send(wsInDialog(browser, "BYE", 3, ok))
	for {
		if r := alice.readRequest(); r.Method == sip.BYE {
			alice.respond(r, 200, "OK")
			break
		}
	}
	if r := browser.final(); r.StatusCode != 200 || r.CSeq().MethodName != sip.BYE {
		t.Fatalf("the browser's BYE: %d %s", r.StatusCode, r.Reason)
	}
	waitFor(t, 5*time.Second, "the anchor lets the call go", func() string {
		if c, l := an.callCount(t), an.legCount(t); c != 0 || l != 0 {
			return fmt.Sprintf("%d calls, %d legs", c, l)
		}
		return ""
	})
}

// wsInDialog builds the browser's ACK or BYE for its answered INVITE res:
// Request-URI the callee's Contact, Route the Record-Route reversed.
func wsInDialog(p *wsPhone, method string, cseq int, res *sip.Response) string {
	var routes strings.Builder
	rrs := res.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		routes.WriteString("Route: " + rrs[i].Value() + "\n")
	}
	return fmt.Sprintf("%s %s SIP/2.0\nVia: SIP/2.0/WSS %s;branch=z9hG4bK-bdlg-%d\nMax-Forwards: 70\n%sFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: %d %s\nContent-Length: 0\n\n",
		method, res.Contact().Address.String(), p.host, cseq, routes.String(), res.From().Value(), res.To().Value(), res.CallID().Value(), cseq, method)
}
