package anchor

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
)

// A plain RTP phone's offer made a WebRTC offer is one pion takes as it
// is (issue 17): pion answers only the sections of a BUNDLE group (it
// sets the port of others to 0), so the anchor's offer carries
// a=group:BUNDLE 0 and a=mid:0. pion answers, ICE and DTLS connect, and
// Opus goes both ways.
func TestPionAnswersTheAnchorsOfferFromAPlainPhone(t *testing.T) {
	alloc, err := ports.New(loopback, 48700, 48799)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(alloc.Close)
	m := New(Config{Advertise: []netip.Addr{loopback}, Ports: alloc, ICESources: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(m.Close)
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
