package main

import (
	"syscall"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
)

// TestWebRTCHandshakeSurvivesAnAnchorKill: a sori-anchor with -redis is
// SIGKILLed while a pion peer's DTLS handshake with it is under way (the
// peer's ClientHello at the anchor, the anchor's answer never out: the
// call kept in Redis after ICE, before any keys) and started again; the
// peer's retransmitted ClientHello is answered by the restored leg, the
// handshake completes against the fingerprint of the anchor's answer,
// and SRTP flows both ways.
func TestWebRTCHandshakeSurvivesAnAnchorKill(t *testing.T) {
	bin, redisURL, rdb := buildAnchor(t)
	anchor := startRedisAnchor(t, bin, redisURL, rdb, 53000, 100, "webrtc-handshake")
	client, ngAddr := anchor.client, anchor.ng
	phone, phoneSDP, fromBrowser := newPlainPhone(t)

	b := webrtctest.NewPeer(t)
	const id = "webrtc-handshake@127.0.0.1"
	res := ngDo(t, client, ngAddr, ng.Dict{"command": "offer", "call-id": id, "from-tag": "browser", "sdp": b.MakeOffer(t), "ICE": "remove", "transport-protocol": "RTP/AVP"})
	toPhoneLeg := anchorPort(t, res.Str("sdp"))
	res = ngDo(t, client, ngAddr, ng.Dict{"command": "answer", "call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP, "ICE": "force"})
	answer := res.Str("sdp")
	proxy := webrtctest.NewCutProxy(t, anchorPort(t, answer), 0)
	b.Answer(t, proxy.ViaProxy(answer))

	// The browser's ClientHello at the anchor, whose answers go nowhere;
	// the leg kept once ICE nominated its path, keys or none.
	webrtctest.WaitClosed(t, "ClientHello from the browser", proxy.BrowserDTLS(1), 15*time.Second)
	waitUntil(t, "the call kept with its ICE path, before any keys", 10*time.Second, func() bool {
		got, err := anchor.keptWebRTC()
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range got {
			if w.ICE.Nominated.IsValid() {
				if w.SRTP != nil {
					t.Fatal("the handshake finished with its answers dropped")
				}
				return true
			}
		}
		return false
	})
	anchor.restart(syscall.SIGKILL)
	proxy.Open()
	// The browser's retransmitted ClientHello completes it.
	b.WaitConnected(t, 30*time.Second)
	b.Talk(t, "after", phone, fromBrowser, toPhoneLeg, 1)
	// Kept at once with the keys of the handshake the restored leg did.
	waitUntil(t, "the call kept with its new keys", 10*time.Second, func() bool {
		got, _ := anchor.keptWebRTC()
		for _, w := range got {
			if w.SRTP != nil {
				return true
			}
		}
		return false
	})
	ngDo(t, client, ngAddr, ng.Dict{"command": "delete", "call-id": id, "from-tag": "browser"})
}
