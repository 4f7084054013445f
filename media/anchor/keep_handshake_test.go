package anchor

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
)

// An anchor killed in the middle of a WebRTC leg's DTLS handshake, the
// leg's state kept before its keys existed: the restarted anchor's leg is
// not dead.
//
//   - killed before its answer to the browser's ClientHello went out: the
//     browser's retransmitted ClientHello is answered by the restored leg,
//     the handshake completes with the certificate its SDP named, and
//     SRTP flows both ways.
//   - killed once the browser had its answer (past its ClientHello: its
//     last flight unanswered, a state no new process can finish): the
//     browser reconnects (a new peer connection with its certificate, a
//     re-offer with new ICE credentials), and its new ClientHello replaces
//     the restored leg's handshake, which had only the old one's tail.
func TestWebRTCHandshakeCutByARestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		pass int // the anchor's DTLS datagrams the browser gets before the kill
	}{{"before the anchor answered", 0}, {"after the anchor answered", 1}} {
		t.Run(tc.name, func(t *testing.T) { handshakeCut(t, tc.pass) })
	}
}

func handshakeCut(t *testing.T, pass int) {
	k := &memKeeper{calls: map[string]anchorstate.Call{}}
	manager := keptManagers(t, k, 46600)
	m1, alloc1 := manager()
	phone := newUDPPhone(t)
	fromBrowser := plainPhone(phone)
	cert := webrtctest.NewCertificate(t)
	b := webrtctest.NewPeerWith(t, cert)
	const id = "cut-handshake"
	res := do(t, m1, "offer", ng.Dict{"call-id": id, "from-tag": "browser", "sdp": b.MakeOffer(t), "ICE": "remove", "transport-protocol": "RTP/AVP"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	toPhoneLeg := netip.AddrPortFrom(loopback, uint16(checkToPhone(t, res.Str("sdp"), "RTP/AVP").Port))
	res = do(t, m1, "answer", ng.Dict{"call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	answer := res.Str("sdp")
	proxy := webrtctest.NewCutProxy(t, netip.AddrPortFrom(loopback, uint16(mediaOf(t, answer).Port)), pass)
	b.Answer(t, proxy.ViaProxy(answer))

	// ICE done, the browser's ClientHello at the anchor: the leg is kept
	// now, before any keys (as a latch's write would keep it).
	webrtctest.WaitClosed(t, "ClientHello from the browser", proxy.BrowserDTLS(1), 15*time.Second)
	m1.keepAll(time.Now())
	kept := k.all()
	if len(kept) != 1 || kept[0].Legs[0].Medias[0].WebRTC == nil || kept[0].Legs[0].Medias[0].WebRTC.SRTP != nil ||
		len(kept[0].Legs[0].Medias[0].WebRTC.ICE.Valid) == 0 {
		t.Fatalf("kept %+v, want the WebRTC leg after ICE and before its keys", kept)
	}
	if pass > 0 {
		// The browser got the anchor's flight and answered it: its last
		// flight is at the anchor, whose answer never reaches it.
		webrtctest.WaitClosed(t, "the browser's second flight", proxy.BrowserDTLS(2), 15*time.Second)
	}
	m1.Close()
	alloc1.Close()

	m2, _ := manager()
	if n, dropped := m2.Restore(kept); n != 1 || len(dropped) != 0 {
		t.Fatalf("restored %d, dropped %v", n, dropped)
	}
	proxy.Open()
	if pass > 0 {
		// Its association cannot complete: the restored leg gets the
		// browser's retransmitted last flight, which no new process can
		// answer. The browser starts again with the certificate its SDP
		// names, on the same call.
		webrtctest.WaitClosed(t, "the browser's retransmission at the restored leg", proxy.BrowserDTLS(3), 15*time.Second)
		nb := webrtctest.NewPeerWith(t, cert)
		_ = b.PC.Close()
		b = nb
		if res := do(t, m2, "offer", ng.Dict{"call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": b.MakeOffer(t), "ICE": "remove"}); res.Str("result") != "ok" {
			t.Fatalf("re-offer: %v", res)
		}
		res := do(t, m2, "answer", ng.Dict{"call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"})
		if res.Str("result") != "ok" {
			t.Fatalf("re-answer: %v", res)
		}
		if got, want := fingerprintOf(res.Str("sdp")), fingerprintOf(answer); got != want {
			t.Fatalf("the re-answer names %v, the leg's SDP said %v", got, want)
		}
		b.Answer(t, proxy.ViaProxy(res.Str("sdp")))
	}
	webrtctest.WaitClosed(t, "DTLS connection of the browser with the restored leg", b.Connected(), 15*time.Second)
	talk(t, "after the restart", b, phone, fromBrowser, toPhoneLeg, 1)
	if q := webrtcSRTP(t, m2, id, "browser"); q.Str("DTLS failure") != "" {
		t.Fatalf("the restored leg reports a DTLS failure: %v", q)
	}
	// Keyed in this process: kept at once with its new keys.
	m2.keepChanged(time.Now())
	if kept := k.all(); len(kept) != 1 || kept[0].Legs[0].Medias[0].WebRTC.SRTP == nil {
		t.Fatalf("after the handshake, kept %+v", kept)
	}
}
