package anchor

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
)

// A plain RTP phone's offer made a WebRTC offer is one pion takes as it
// is (issue 17): pion answers only the sections of a BUNDLE group (it
// sets the port of others to 0), so the anchor's offer carries
// a=group:BUNDLE 0 and a=mid:0. pion answers, ICE and DTLS connect, and
// Opus goes both ways.
func TestPionAnswersTheAnchorsOfferFromAPlainPhone(t *testing.T) {
	m, _ := iceManager(t, 48700, Config{})
	phone := newUDPPhone(t)
	fromBrowser := plainPhone(phone)

	opusOnly := strings.NewReplacer(" RTP/AVP 111 101", " RTP/AVP 111", "a=rtpmap:101 telephone-event/48000\r\n", "").Replace(phoneSDP(phone.addr()))
	res := do(t, m, "offer", ng.Dict{"call-id": "bundle", "from-tag": "phone", "sdp": opusOnly, "ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	offer := res.Str("sdp")
	if g := sdpLines(offer, "a=group:"); len(g) != 1 || g[0] != "a=group:BUNDLE 0" || strings.Index(offer, "a=group:") > strings.Index(offer, "m=") {
		t.Fatalf("the offer's groups %q, want a session-level a=group:BUNDLE 0:\n%s", g, offer)
	}
	if mids := sdpLines(offer, "a=mid:"); len(mids) != 1 || mids[0] != "a=mid:0" {
		t.Fatalf("the offer's mids %q, want a=mid:0", mids)
	}

	b := webrtctest.NewPeer(t)
	toAnchor := b.AnswerOffer(t, offer)
	if md := mediaOf(t, toAnchor); md.Port == 0 {
		t.Fatalf("pion rejected the section:\n%s", toAnchor)
	}
	res = do(t, m, "answer", ng.Dict{"call-id": "bundle", "from-tag": "phone", "to-tag": "browser", "sdp": toAnchor, "ICE": "remove"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	toPhoneLeg := netip.AddrPortFrom(loopback, uint16(checkToPhone(t, res.Str("sdp"), "RTP/AVP").Port))
	select {
	case <-b.Connected():
	case <-time.After(15 * time.Second):
		t.Fatalf("pion never connected (ICE %s)", b.PC.ICEConnectionState())
	}
	talk(t, "bundled", b, phone, fromBrowser, toPhoneLeg, 1)
}

// The answer toward a browser keeps the BUNDLE group it offered, with the
// mid the anchor accepts, and has none when it offered none.
func TestAnswerToABrowserKeepsItsBundleGroup(t *testing.T) {
	m, _ := newManager(t, 49200, 0, nil)
	phone := newUDPPhone(t)
	for _, tt := range []struct {
		name, offer string
		groups      []string
	}{
		{"bundled", browserSDP(t), []string{"a=group:BUNDLE 0"}},
		{"without a group", strings.Replace(browserSDP(t), "a=group:BUNDLE 0\r\n", "", 1), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := "keep-group-" + tt.name
			res := do(t, m, "offer", ng.Dict{"call-id": id, "from-tag": "browser", "sdp": tt.offer, "ICE": "remove", "transport-protocol": "RTP/AVP"})
			if res.Str("result") != "ok" {
				t.Fatalf("offer: %v", res)
			}
			res = do(t, m, "answer", ng.Dict{"call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"})
			if res.Str("result") != "ok" {
				t.Fatalf("answer: %v", res)
			}
			body := res.Str("sdp")
			if g := sdpLines(body, "a=group:"); strings.Join(g, "|") != strings.Join(tt.groups, "|") {
				t.Fatalf("the answer's groups %q, want %q:\n%s", g, tt.groups, body)
			}
			if mids := sdpLines(body, "a=mid:"); len(mids) != 1 || mids[0] != "a=mid:0" {
				t.Fatalf("the answer's mids %q, want a=mid:0", mids)
			}
		})
	}
}

// bundledBrowserOffer is a max-bundle browser's offer: audio, and video
// a=bundle-only on the audio's transport (RFC 8843 §6), one group.
func bundledBrowserOffer() string {
	return "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n" +
		"m=audio 54321 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\n" +
		"a=candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host\r\na=ice-ufrag:Gw3R\r\na=ice-pwd:qLmQ2lV0s7wYdC6Xh0o5XzRk\r\n" +
		"a=fingerprint:sha-256 4F:1A:0B:72:3C:9D:5E:E8:61:07:AA:93:2B:CC:40:D1:18:F6:75:0E:3A:9B:C2:D4:56:E7:08:19:2A:3B:4C:5D\r\n" +
		"a=setup:actpass\r\na=mid:0\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=ssrc:1111 cname:b\r\n" +
		"m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\na=bundle-only\r\na=mid:1\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n" +
		"a=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=ssrc:2222 cname:b\r\n"
}

// twoSections is a plain phone's SDP with audio and video on ports of
// their own.
func twoSections(audio, video netip.AddrPort, extra ...string) string {
	lines := []string{"v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
		fmt.Sprintf("m=audio %d RTP/AVP 111", audio.Port()), "a=rtpmap:111 opus/48000/2", "a=ssrc:50001 cname:phone",
		fmt.Sprintf("m=video %d RTP/AVP 96", video.Port()), "a=rtpmap:96 VP8/90000", "a=ssrc:50002 cname:phone"}
	return strings.Join(append(lines, extra...), "\r\n") + "\r\n"
}

// checkOneTransport requires every section of body to be on one
// transport, in one group listing mids: the same port, ICE credentials
// and fingerprint, rtcp-mux, candidates in the first section only.
func checkOneTransport(t *testing.T, body string, mids ...string) int {
	t.Helper()
	s, err := sdp.ParseString(body)
	if err != nil {
		t.Fatal(err)
	}
	if g := sdpLines(body, "a=group:"); len(g) != 1 || g[0] != "a=group:BUNDLE "+strings.Join(mids, " ") {
		t.Fatalf("groups %q, want one of %q:\n%s", g, mids, body)
	}
	if len(s.Media) != len(mids) {
		t.Fatalf("%d sections, want %d", len(s.Media), len(mids))
	}
	first, _ := s.WebRTC(0)
	fps := map[string]bool{}
	for _, l := range sdpLines(body, "a=fingerprint:") {
		fps[l] = true
	}
	if len(fps) != 1 {
		t.Errorf("fingerprints %v, want one", fps)
	}
	for i, md := range s.Media {
		w, err := s.WebRTC(i)
		if err != nil {
			t.Fatal(err)
		}
		if md.Port == 0 || md.Port != s.Media[0].Port || md.BundleOnly || w.Ufrag != first.Ufrag || w.Pwd != first.Pwd || w.Fingerprint != first.Fingerprint ||
			!w.Mux || w.Mid != mids[i] || w.Bundle != strings.Join(mids, " ") || md.Proto != "UDP/TLS/RTP/SAVPF" {
			t.Errorf("section %d: port %d, %+v, want section 0's transport (port %d, %+v) and mid %s", i, md.Port, w, s.Media[0].Port, first, mids[i])
		}
	}
	if n := len(sdpLines(body, "a=candidate:")); n == 0 || strings.Count(body[strings.Index(body, "m=video"):], "a=candidate:") != 0 {
		t.Errorf("candidates: want them in the first section only:\n%s", body)
	}
	return s.Media[0].Port
}

// A max-bundle browser's audio and bundle-only video: the phone gets two
// m= lines on ports of their own; the browser's answer has both on the
// audio's port, ICE and DTLS, one group of both mids, and the mid
// extension it offered.
func TestAnswerToABrowserBundlesAllItsSections(t *testing.T) {
	m, _ := newManager(t, 44000, 0, nil)
	audio, video := newUDPPhone(t), newUDPPhone(t)
	res := do(t, m, "offer", ng.Dict{"call-id": "max-bundle", "from-tag": "browser", "sdp": bundledBrowserOffer(), "ICE": "remove", "transport-protocol": "RTP/AVP"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	toPhone, err := sdp.ParseString(res.Str("sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(toPhone.Media) != 2 || toPhone.Media[0].Port == 0 || toPhone.Media[1].Port == 0 || toPhone.Media[0].Port == toPhone.Media[1].Port ||
		strings.Contains(res.Str("sdp"), "a=bundle-only") || toPhone.Media[1].Proto != "RTP/AVP" {
		t.Fatalf("toward the phone, want two sections on ports of their own:\n%s", res.Str("sdp"))
	}
	res = do(t, m, "answer", ng.Dict{"call-id": "max-bundle", "from-tag": "browser", "to-tag": "phone", "sdp": twoSections(audio.addr(), video.addr()), "ICE": "force"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	body := res.Str("sdp")
	checkOneTransport(t, body, "0", "1")
	if n := len(sdpLines(body, "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid")); n != 2 {
		t.Errorf("%d mid extensions, want one per section:\n%s", n, body)
	}
}

// An offer from a plain phone with audio and video toward a browser: one
// group of both, on one transport.
func TestOfferToABrowserBundlesItsSections(t *testing.T) {
	m, _ := newManager(t, 44200, 0, nil)
	audio, video := newUDPPhone(t), newUDPPhone(t)
	res := do(t, m, "offer", ng.Dict{"call-id": "offer-bundle", "from-tag": "phone", "sdp": twoSections(audio.addr(), video.addr()), "ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	body := res.Str("sdp")
	checkOneTransport(t, body, "0", "1")
	if w := sdpLines(body, "a=setup:"); len(w) != 2 || w[0] != "a=setup:actpass" || w[1] != w[0] {
		t.Errorf("setup %q, want actpass in both", w)
	}
	// A browser's answer that does not keep them bundled is refused: the
	// anchor offered them one address.
	unbundled := strings.Replace(bundledBrowserOffer(), "a=group:BUNDLE 0 1", "a=group:BUNDLE 0", 1)
	unbundled = strings.Replace(unbundled, "m=video 0", "m=video 54323", 1)
	res = do(t, m, "answer", ng.Dict{"call-id": "offer-bundle", "from-tag": "phone", "to-tag": "browser", "sdp": unbundled, "ICE": "remove"})
	if res.Str("result") != "error" || !strings.Contains(res.Str("error-reason"), "BUNDLE") {
		t.Fatalf("unbundled answer: %v", res)
	}
	// One that refuses the video (port 0, out of the group) is taken:
	// the audio stays on the transport, the phone's video gets port 0.
	refused := strings.Replace(bundledBrowserOffer(), "a=group:BUNDLE 0 1", "a=group:BUNDLE 0", 1)
	refused = strings.Replace(refused, "a=bundle-only\r\n", "", 1)
	res = do(t, m, "answer", ng.Dict{"call-id": "offer-bundle", "from-tag": "phone", "to-tag": "browser", "sdp": refused, "ICE": "remove"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer refusing the video: %v", res)
	}
	s, err := sdp.ParseString(res.Str("sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Media) != 2 || s.Media[0].Port == 0 || s.Media[1].Port != 0 {
		t.Fatalf("toward the phone:\n%s", res.Str("sdp"))
	}
}
