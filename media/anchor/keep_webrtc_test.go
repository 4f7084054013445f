package anchor

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	pion "github.com/pion/webrtc/v4"

	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
)

// plainPhone reads Opus payloads from phone's socket.
func plainPhone(phone *udpPhone) <-chan []byte { return webrtctest.PlainRTP(phone.conn) }

// talk has the browser and the phone send Opus every 20 ms, from seq on,
// until each has heard the other's payload of this phase; the next seq.
func talk(t *testing.T, phase string, b *webrtctest.Browser, phone *udpPhone, fromBrowser <-chan []byte, toPhoneLeg netip.AddrPort, seq uint16) uint16 {
	t.Helper()
	return b.Talk(t, phase, phone.conn, fromBrowser, toPhoneLeg, seq)
}

// keptManagers makes, each time it is called, a Manager on loopback's
// ports lo to lo+99 keeping its calls in k (KeepEvery an hour: kept when
// the test says), with iceSources; the Manager and its allocator
// close when the test ends.
func keptManagers(t *testing.T, k *memKeeper, lo int, iceSources ...netip.Prefix) func() (*Manager, *ports.Allocator) {
	return func() (*Manager, *ports.Allocator) {
		t.Helper()
		alloc, err := ports.New(loopback, lo, lo+99)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(alloc.Close)
		m := New(Config{Advertise: []netip.Addr{loopback}, Ports: alloc, ICESources: iceSources,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Keep: k, KeepEvery: time.Hour})
		t.Cleanup(m.Close)
		return m, alloc
	}
}

// A call with a WebRTC leg, its DTLS-SRTP handshake done, is kept and
// restored by a new anchor on the same ports: the browser's SRTP goes on
// both ways with the keys of the first handshake and none other, its
// consent checks with the credentials of the first SDP are answered, and
// a re-offer keeps the fingerprint, credentials and a=setup.
func TestKeptWebRTCCallGoesOnWithoutANewHandshake(t *testing.T) {
	k := &memKeeper{calls: map[string]anchorstate.Call{}}
	manager := keptManagers(t, k, 46000, netip.MustParsePrefix("127.0.0.0/8"))
	m1, alloc1 := manager()
	phone := newUDPPhone(t)
	fromBrowser := plainPhone(phone)
	b := webrtctest.NewPeer(t)
	browserOffer := b.MakeOffer(t)
	res := do(t, m1, "offer", ng.Dict{"call-id": "webrtc-kept", "from-tag": "browser", "sdp": browserOffer, "ICE": "remove", "transport-protocol": "RTP/AVP"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	toPhoneLeg := netip.AddrPortFrom(loopback, uint16(checkToPhone(t, res.Str("sdp"), "RTP/AVP").Port))
	opusOnly := strings.NewReplacer(" RTP/AVP 111 101", " RTP/AVP 111", "a=rtpmap:101 telephone-event/48000\r\n", "").Replace(phoneSDP(phone.addr()))
	res = do(t, m1, "answer", ng.Dict{"call-id": "webrtc-kept", "from-tag": "browser", "to-tag": "phone", "sdp": opusOnly, "ICE": "force"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	firstSDP, err := sdp.Parse([]byte(res.Str("sdp")))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := firstSDP.WebRTC(0)
	if first.Setup != "passive" || first.Ufrag == "" || first.Fingerprint.Value == "" {
		t.Fatalf("the answer to the browser: %+v", first)
	}
	toBrowserLeg := netip.AddrPortFrom(loopback, uint16(firstSDP.Media[0].Port))
	if err := b.PC.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: res.Str("sdp")}); err != nil {
		t.Fatalf("pion refused the anchor's answer: %v", err)
	}
	select {
	case <-b.Connected():
	case <-time.After(15 * time.Second):
		t.Fatalf("pion never connected (ICE %s)", b.PC.ICEConnectionState())
	}
	seq := talk(t, "before", b, phone, fromBrowser, toPhoneLeg, 1)
	// From now on pion's DTLS association must not change: no new
	// handshake, no close_notify from the anchor that goes.
	dtlsChanged := make(chan pion.DTLSTransportState, 4)
	b.PC.GetSenders()[0].Transport().OnStateChange(func(s pion.DTLSTransportState) {
		select {
		case dtlsChanged <- s:
		default:
		}
	})
	before := mediaDict(t, do(t, m1, "query", ng.Dict{"call-id": "webrtc-kept"}), "browser").Dict("SRTP")

	// A call snapshotted before its WebRTC leg had its keys is written
	// again by the next tick, nothing else having changed.
	m1.keepChanged(time.Now())
	saves := k.saves
	m1.mu.Lock()
	m1.calls["webrtc-kept"].kept.keyed = 0
	m1.mu.Unlock()
	if m1.keepChanged(time.Now()); k.saves != saves+1 {
		t.Fatalf("%d saves after the leg got its keys, want %d", k.saves, saves+1)
	}
	if m1.keepChanged(time.Now()); k.saves != saves+1 {
		t.Fatal("saved again with nothing new")
	}
	kept := k.all()
	if len(kept) != 1 {
		t.Fatalf("kept %d calls", len(kept))
	}
	var kw *anchorstate.WebRTC
	for _, l := range kept[0].Legs {
		if l.Tag == "browser" {
			kw = l.Medias[0].WebRTC
		}
	}
	if kw == nil || kw.SRTP == nil || kw.Role != "server" || kw.Ufrag != first.Ufrag || !strings.Contains(kw.Key, "PRIVATE KEY") || len(kw.ICE.Valid) == 0 {
		t.Fatalf("the browser's leg kept as %+v", kw)
	}
	m1.Close()
	alloc1.Close()

	m2, alloc2 := manager()
	if n, dropped := m2.Restore(kept); n != 1 || len(dropped) != 0 || alloc2.InUse() != 2 {
		t.Fatalf("restored %d, dropped %v, %d pairs", n, dropped, alloc2.InUse())
	}
	after := mediaDict(t, do(t, m2, "query", ng.Dict{"call-id": "webrtc-kept"}), "browser").Dict("SRTP")
	for _, key := range []string{"suite", "DTLS role", "DTLS fingerprint", "ICE selected"} {
		if after.Str(key) == "" || after.Str(key) != before.Str(key) {
			t.Fatalf("after the restore %s is %q, was %q", key, after.Str(key), before.Str(key))
		}
	}
	seq = talk(t, "after the restore", b, phone, fromBrowser, toPhoneLeg, seq)

	// A consent check as the browser makes it, with the credentials of
	// the first SDP, is answered and signed with the same password.
	offered, err := sdp.Parse([]byte(browserOffer))
	if err != nil {
		t.Fatal(err)
	}
	bw, _ := offered.WebRTC(0)
	checker := newUDPPhone(t)
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername(first.Ufrag+":"+bw.Ufrag),
		stun.RawAttribute{Type: stun.AttrICEControlling, Value: make([]byte, 8)}, stun.NewShortTermIntegrity(first.Pwd), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checker.conn.WriteToUDPAddrPort(req.Raw, toBrowserLeg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = checker.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := checker.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("the consent check was not answered: %v", err)
	}
	resp := &stun.Message{Raw: buf[:n]}
	if err := resp.Decode(); err != nil || resp.Type != stun.BindingSuccess || stun.NewShortTermIntegrity(first.Pwd).Check(resp) != nil {
		t.Fatalf("the consent check's answer: %v %v", resp, err)
	}
	if got := mediaDict(t, do(t, m2, "query", ng.Dict{"call-id": "webrtc-kept"}), "browser").Dict("SRTP").Str("ICE selected"); got != before.Str("ICE selected") {
		t.Fatalf("a check from another address moved the media to %s, nominated was %s", got, before.Str("ICE selected"))
	}

	// The browser re-offers: the same fingerprint, credentials and role.
	res = do(t, m2, "offer", ng.Dict{"call-id": "webrtc-kept", "from-tag": "browser", "to-tag": "phone", "sdp": b.MakeOffer(t), "ICE": "remove"})
	if res.Str("result") != "ok" {
		t.Fatalf("re-offer: %v", res)
	}
	res = do(t, m2, "answer", ng.Dict{"call-id": "webrtc-kept", "from-tag": "browser", "to-tag": "phone", "sdp": opusOnly, "ICE": "force"})
	if res.Str("result") != "ok" {
		t.Fatalf("re-answer: %v", res)
	}
	s, err := sdp.Parse([]byte(res.Str("sdp")))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := s.WebRTC(0)
	if again.Fingerprint != first.Fingerprint || again.Ufrag != first.Ufrag || again.Pwd != first.Pwd || again.Setup != "passive" || s.Media[0].Port != firstSDP.Media[0].Port {
		t.Fatalf("the re-answer after the restore has %+v port %d, the first %+v port %d", again, s.Media[0].Port, first, firstSDP.Media[0].Port)
	}
	if err := b.PC.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: res.Str("sdp")}); err != nil {
		t.Fatalf("pion refused the re-answer: %v", err)
	}
	talk(t, "after the re-offer", b, phone, fromBrowser, toPhoneLeg, seq)
	select {
	case s := <-dtlsChanged:
		t.Fatalf("pion's DTLS transport went %s across the restart", s)
	default:
	}
	if st := b.PC.ConnectionState(); st != pion.PeerConnectionStateConnected {
		t.Fatalf("pion is %s", st)
	}
}

// A WebRTC leg kept before its handshake (a phone's call offered to a
// browser, the anchor restarting while it rings) is restored as a new
// leg with the credentials and certificate its offer named: the
// browser's answer, taken by the new anchor, leads to ICE, the handshake
// and media as without the restart.
func TestKeptWebRTCLegBeforeItsHandshake(t *testing.T) {
	k := &memKeeper{calls: map[string]anchorstate.Call{}}
	manager := keptManagers(t, k, 46200)
	m1, alloc1 := manager()
	phone := newUDPPhone(t)
	fromBrowser := plainPhone(phone)
	opusOnly := strings.NewReplacer(" RTP/AVP 111 101", " RTP/AVP 111", "a=rtpmap:101 telephone-event/48000\r\n", "").Replace(phoneSDP(phone.addr()))
	res := do(t, m1, "offer", ng.Dict{"call-id": "ringing", "from-tag": "phone", "sdp": opusOnly, "ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	toBrowser := res.Str("sdp") // as is: its a=group:BUNDLE 0 is what pion answers
	kept := k.all()
	if len(kept) != 1 {
		t.Fatalf("kept %d calls", len(kept))
	}
	m1.Close()
	alloc1.Close()

	m2, _ := manager()
	if n, dropped := m2.Restore(kept); n != 1 || len(dropped) != 0 {
		t.Fatalf("restored %d, dropped %v", n, dropped)
	}
	b := webrtctest.NewPeer(t)
	browserAnswer := b.AnswerOffer(t, toBrowser)
	res = do(t, m2, "answer", ng.Dict{"call-id": "ringing", "from-tag": "phone", "to-tag": "browser", "sdp": browserAnswer, "ICE": "remove"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	toPhoneLeg := netip.AddrPortFrom(loopback, uint16(checkToPhone(t, res.Str("sdp"), "RTP/AVP").Port))
	select {
	case <-b.Connected():
	case <-time.After(15 * time.Second):
		t.Fatalf("pion never connected to the restored leg (ICE %s)", b.PC.ICEConnectionState())
	}
	talk(t, "after the restore", b, phone, fromBrowser, toPhoneLeg, 1)
}
