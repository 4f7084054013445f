package main

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/media/rtptest"
)

// A phone calls a browser with a delayed offer (an INVITE without SDP,
// as some SIP phones and PBXs send): the browser's JsSIP makes the offer
// in its 200, a WebRTC one; the phone gets the anchor's plain RTP/AVP
// offer in the 200 and answers in its ACK; the anchor's answer, with its
// fingerprint, ICE credentials and candidate, reaches the browser in the
// ACK. ICE and DTLS then key the browser's leg, RTP flows both ways
// through the anchor, and BYE leaves the anchor empty.
func TestBrowserAnswersADelayedOffer(t *testing.T) {
	an := startAnchor(t, "-ice-sources", "127.0.0.0/8")
	n := startDefaultNode(t, an)
	b := startPhoneBrowser(t, n)
	page := openPhonePage(t, b, servePages(t), n, "alice", "alice-secret")

	leg := newRTPLeg(t, 0xb0b1a7e, 3003)
	bob := newUA(t, n.node, "udp", "bob")
	bob.authenticated("INVITE", "sip:alice@sori.test")
	// JsSIP sends its 200 once Chromium has gathered its candidates,
	// which may take longer than a read's 5 s.
	start := time.Now()
	page.waitFor(t, "session && session.connection && session.connection.iceGatheringState === 'complete'")
	t.Logf("the browser's offer was ready %v after the INVITE", time.Since(start).Round(time.Millisecond))
	res := bob.final()
	if res.StatusCode != 200 {
		t.Fatalf("INVITE without SDP to the browser: %d %s", res.StatusCode, res.Reason)
	}
	body := string(res.Body())
	if !strings.Contains(body, " RTP/AVP ") || strings.Contains(body, "a=fingerprint") || strings.Contains(body, "a=ice-ufrag") {
		t.Fatalf("the phone got the browser's offer as it is, want the anchor's RTP/AVP:\n%s", body)
	}
	toAnchor, err := sdpTarget(res.Body()) // the browser's Opus parameters, untouched
	if err != nil {
		t.Fatalf("the 200's SDP: %v\n%s", err, body)
	}
	if !strings.Contains(body, "opus/48000/2") {
		t.Fatalf("the 200's offer has no Opus:\n%s", body)
	}
	if !an.hasPort(toAnchor) {
		t.Fatalf("the 200's offer sends media to %s, not to the anchor", toAnchor)
	}
	bob.send(withSDP(bob.inDialog("ACK", 2, res), leg.sdp))
	page.waitFor(t, "phone.state === 'answered' || phone.state === 'failed' || phone.state === 'ended'")
	browserPhone(t, page).mustBe(t, "answered", func(p browserState) bool { return p.State == "answered" })

	// Bob's media at 50 packets/s until both sides counted a second's worth.
	leg.SetTarget(toAnchor)
	defer rtptest.Pace(func() { _ = leg.Send() })()
	const want = 50
	fromAnchor := func() int {
		k := 0
		for _, a := range leg.Arrivals() {
			if an.hasPort(a.From) {
				k++
			}
		}
		return k
	}
	var st browserState
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st = browserPhone(t, page)
		if got := fromAnchor(); st.Received >= want && got >= want {
			t.Logf("the browser received %d RTP packets, bob %d of the browser's from the anchor", st.Received, got)
			break
		}
		if time.Now().After(deadline) {
			st.mustBe(t, "receiving", func(browserState) bool { return false })
			t.Fatalf("the browser received %d RTP packets and bob %d from the anchor; want %d each", st.Received, fromAnchor(), want)
		}
	}
	legs := anchorWebRTCLegs(t, an)
	browser, phone := browserAndPhone(legs)
	if browser == nil || phone == nil || browser.keying != "DTLS" || browser.suite == "" || !strings.HasPrefix(browser.selected, "127.0.0.1:") {
		t.Fatalf("the anchor's legs %+v: want the browser's keyed by DTLS over ICE on loopback, and the phone's", legs)
	}
	if phone.protocol != "RTP/AVP" || phone.suite != "" {
		t.Fatalf("the phone's leg %+v: want plain RTP/AVP", *phone)
	}

	bob.send(bob.inDialog("BYE", 3, res))
	if r := bob.final(); r.StatusCode != 200 || r.CSeq().MethodName != sip.BYE {
		t.Fatalf("BYE: %d %s", r.StatusCode, r.CSeq().MethodName)
	}
	page.waitFor(t, "phone.state === 'ended'")
	waitNoCalls(t, an, n.node)
	page.checkNoErrors(t)
}
