package anchor

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/stun/v3"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
)

// browserSDP is Chromium's offer (testdata/sdp/chrome.sdp): Opus, ICE
// candidates on a LAN address, DTLS actpass, rtcp-mux, a=mid:0.
func browserSDP(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "sdp", "chrome.sdp"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sdpLines are the lines of body that start with prefix.
func sdpLines(body, prefix string) []string {
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(body, "\r\n", "\n"), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// checkToBrowser requires body to be what a browser needs from the anchor:
// UDP/TLS/RTP/SAVPF, ICE-lite with the anchor's credentials and one host
// candidate per advertised address on the m= port, the anchor's
// fingerprint and the given a=setup, rtcp-mux, a mid, and no SDES.
func checkToBrowser(t *testing.T, m *Manager, body, setup string) sdp.WebRTC {
	t.Helper()
	s, err := sdp.Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	md := s.Media[0]
	w, err := s.WebRTC(0)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := m.certificate()
	if err != nil {
		t.Fatal(err)
	}
	if md.Proto != "UDP/TLS/RTP/SAVPF" || !w.Lite || !w.Mux || w.Mid == "" || w.Setup != setup || len(w.Ufrag) != 8 || len(w.Pwd) != 24 ||
		w.Fingerprint != sdp.Fingerprint(cert.Fingerprint()) || w.Fingerprint.Hash != "sha-256" {
		t.Fatalf("toward the browser: %s %+v (setup want %s, fingerprint %v)\n%s", md.Proto, w, setup, cert.Fingerprint(), body)
	}
	port := strconv.Itoa(md.Port)
	want := []string{"a=candidate:1 1 udp 2130706431 203.0.113.5 " + port + " typ host", "a=candidate:2 1 udp 2130706175 2001:db8::5 " + port + " typ host"}
	if got := sdpLines(body, "a=candidate:"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("candidates %q, want %q", got, want)
	}
	if len(md.Crypto) != 0 || len(sdpLines(body, "a=ice-lite")) != 1 || len(sdpLines(body, "a=end-of-candidates")) != 1 {
		t.Fatalf("a=crypto, a=ice-lite or a=end-of-candidates wrong:\n%s", body)
	}
	if !strings.Contains(body, "a=rtpmap:111 opus/48000/2\r\n") {
		t.Fatalf("Opus lost:\n%s", body)
	}
	return w
}

// checkToPhone requires body to carry none of WebRTC's transport.
func checkToPhone(t *testing.T, body, proto string) sdp.Media {
	t.Helper()
	md := mediaOf(t, body)
	if md.Proto != proto || md.ICE || md.DTLS || len(md.Crypto) != 0 {
		t.Fatalf("toward the phone: %+v, want %s without ICE, DTLS or SDES\n%s", md, proto, body)
	}
	for _, gone := range []string{"a=fingerprint:", "a=setup:", "a=ice-", "a=candidate:", "a=end-of-candidates", "a=crypto:", "192.168.1.33"} {
		if strings.Contains(body, gone) {
			t.Fatalf("%q kept toward the phone:\n%s", gone, body)
		}
	}
	return md
}

// mediaDict is query's first media section of tag.
func mediaDict(t *testing.T, q ng.Dict, tag string) ng.Dict {
	t.Helper()
	medias, _ := q.Dict("tags").Dict(tag)["medias"].([]any)
	if len(medias) != 1 {
		t.Fatalf("tag %s: medias %v", tag, q.Dict("tags").Dict(tag))
	}
	md, _ := medias[0].(map[string]any)
	return ng.Dict(md)
}

func TestBrowserOfferBridgedToAPlainPhone(t *testing.T) {
	m, alloc := newManager(t, 48000, 0, nil)
	phone := newUDPPhone(t)
	res := do(t, m, "offer", ng.Dict{"call-id": "w1", "from-tag": "browser", "sdp": browserSDP(t), "ICE": "remove",
		"transport-protocol": "RTP/AVP", "replace": []any{"origin"}})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	toPhone := res.Str("sdp")
	checkToPhone(t, toPhone, "RTP/AVP")
	if !strings.Contains(toPhone, "c=IN IP4 203.0.113.5\r\n") || !strings.Contains(toPhone, "a=fmtp:111 minptime=10;useinbandfec=1\r\n") {
		t.Fatalf("toward the phone:\n%s", toPhone)
	}
	res = do(t, m, "answer", ng.Dict{"call-id": "w1", "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	w := checkToBrowser(t, m, res.Str("sdp"), "passive")
	if w.Mid != "0" {
		t.Fatalf("the answer's a=mid:%s, the offer's is 0", w.Mid)
	}
	q := do(t, m, "query", ng.Dict{"call-id": "w1"})
	b, p := mediaDict(t, q, "browser"), mediaDict(t, q, "phone")
	if b.Str("protocol") != "UDP/TLS/RTP/SAVPF" || b.Dict("SRTP").Str("keying") != "DTLS" || b.Dict("SRTP").Str("DTLS role") != "server" {
		t.Fatalf("the browser's leg: %v", b)
	}
	if p.Str("protocol") != "RTP/AVP" || p.Dict("SRTP") != nil {
		t.Fatalf("the phone's leg: %v", p)
	}
	// The browser's SDP address (a LAN candidate) is not where its media
	// goes: only ICE says that.
	streams, _ := b["streams"].([]any)
	if ep := ng.Dict(streams[0].(map[string]any)).Dict("endpoint"); ep != nil {
		t.Fatalf("the browser's leg has an endpoint before any ICE check: %v", ep)
	}
	// A re-offer from the browser (hold) keeps the leg's credentials.
	again := do(t, m, "offer", ng.Dict{"call-id": "w1", "from-tag": "browser", "to-tag": "phone", "sdp": strings.Replace(browserSDP(t), "a=sendrecv", "a=sendonly", 1), "ICE": "remove"})
	checkToPhone(t, again.Str("sdp"), "RTP/AVP")
	res2 := do(t, m, "answer", ng.Dict{"call-id": "w1", "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr(), "a=recvonly"), "ICE": "force"})
	if w2 := checkToBrowser(t, m, res2.Str("sdp"), "passive"); w2.Ufrag != w.Ufrag || w2.Pwd != w.Pwd {
		t.Fatalf("the re-answer has new ICE credentials %s/%s, was %s/%s", w2.Ufrag, w2.Pwd, w.Ufrag, w.Pwd)
	}
	do(t, m, "delete", ng.Dict{"call-id": "w1"})
	if alloc.InUse() != 0 {
		t.Fatalf("%d port pairs left", alloc.InUse())
	}
}

func TestPlainPhoneOfferToABrowser(t *testing.T) {
	m, _ := newManager(t, 48200, 0, nil)
	phone := newUDPPhone(t)
	for _, tt := range []struct {
		name, dtls, setup string
		answerSetup       string // the browser's
		role              string // the anchor's then
		fails             bool
	}{
		{name: "actpass", setup: "actpass", answerSetup: "active", role: "server"},
		{name: "actpass, browser passive", setup: "actpass", answerSetup: "passive", role: "client"},
		{name: "DTLS=passive", dtls: "passive", setup: "passive", answerSetup: "active", role: "server"},
		{name: "DTLS=active", dtls: "active", setup: "active", answerSetup: "passive", role: "client"},
		{name: "DTLS=passive, browser passive too", dtls: "passive", setup: "passive", answerSetup: "passive", fails: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := "w2-" + tt.name
			req := ng.Dict{"call-id": id, "from-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF"}
			if tt.dtls != "" {
				req["DTLS"] = tt.dtls
			}
			res := do(t, m, "offer", req)
			if res.Str("result") != "ok" {
				t.Fatalf("offer: %v", res)
			}
			checkToBrowser(t, m, res.Str("sdp"), tt.setup)
			answer := strings.Replace(browserSDP(t), "a=setup:actpass", "a=setup:"+tt.answerSetup, 1)
			res = do(t, m, "answer", ng.Dict{"call-id": id, "from-tag": "phone", "to-tag": "browser", "sdp": answer, "ICE": "remove"})
			if tt.fails {
				if res.Str("result") != "error" || !strings.Contains(res.Str("error-reason"), "a=setup") {
					t.Fatalf("answer with a=setup:%s to a=setup:%s: %v", tt.answerSetup, tt.setup, res)
				}
				return
			}
			if res.Str("result") != "ok" {
				t.Fatalf("answer: %v", res)
			}
			checkToPhone(t, res.Str("sdp"), "RTP/AVP")
			b := mediaDict(t, do(t, m, "query", ng.Dict{"call-id": id}), "browser")
			if b.Dict("SRTP").Str("DTLS role") != tt.role {
				t.Fatalf("the anchor's DTLS role %v, want %s", b.Dict("SRTP"), tt.role)
			}
		})
	}
}

func TestWebRTCRefusals(t *testing.T) {
	m, _ := newManager(t, 48400, 0, nil)
	phone := newUDPPhone(t)
	noFP := strings.Replace(browserSDP(t), "a=fingerprint:", "a=x-fingerprint:", 1)
	noICE := strings.NewReplacer("a=ice-ufrag:", "a=x-ufrag:", "a=ice-pwd:", "a=x-pwd:").Replace(browserSDP(t))
	for _, tt := range []struct {
		name string
		req  ng.Dict
		want string
	}{
		{"no fingerprint", ng.Dict{"sdp": noFP}, "a=fingerprint"},
		{"no ICE credentials", ng.Dict{"sdp": noICE}, "ICE"},
		{"ICE=force to a plain phone", ng.Dict{"sdp": phoneSDP(phone.addr()), "ICE": "force"}, "ICE=force toward RTP/AVP"},
		{"ICE=force-relay", ng.Dict{"sdp": browserSDP(t), "ICE": "force-relay"}, "force-relay"},
		{"DTLS=off to a browser", ng.Dict{"sdp": phoneSDP(phone.addr()), "transport-protocol": "UDP/TLS/RTP/SAVPF", "DTLS": "off"}, "DTLS=off"},
	} {
		tt.req["call-id"], tt.req["from-tag"] = "refused-"+tt.name, "a"
		res := do(t, m, "offer", tt.req)
		if res.Str("result") != "error" || !strings.Contains(res.Str("error-reason"), tt.want) {
			t.Errorf("%s: %v, want an error with %q", tt.name, res, tt.want)
		}
	}
	// A UDP/TLS answer to an offer that was plain.
	if res := do(t, m, "offer", ng.Dict{"call-id": "plain", "from-tag": "a", "sdp": phoneSDP(phone.addr())}); res.Str("result") != "ok" {
		t.Fatal(res)
	}
	res := do(t, m, "answer", ng.Dict{"call-id": "plain", "from-tag": "a", "to-tag": "b", "sdp": browserSDP(t)})
	if res.Str("result") != "error" || !strings.Contains(res.Str("error-reason"), "not UDP/TLS") {
		t.Errorf("UDP/TLS answer to a plain offer: %v", res)
	}
}

// A pion/webrtc peer, a full ICE agent and DTLS client as a browser is,
// calls a plain RTP phone through the anchor: ng offer (toward RTP/AVP)
// and answer (toward WebRTC), then ICE, DTLS and SRTP on the anchor's
// socket, and Opus both ways in clear on the phone's side.
func TestPionPeerThroughTheAnchorToAPlainPhone(t *testing.T) {
	m, _ := iceManager(t, 48600, Config{})
	phone := newUDPPhone(t)

	browser := webrtctest.NewBrowser(t)

	res := do(t, m, "offer", ng.Dict{"call-id": "pion", "from-tag": "browser", "sdp": browser.Offer(), "ICE": "remove", "transport-protocol": "RTP/AVP"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	toPhone := checkToPhone(t, res.Str("sdp"), "RTP/AVP")
	anchorForPhone := netip.AddrPortFrom(loopback, uint16(toPhone.Port))
	// The phone answers Opus alone: what pion offered.
	opusOnly := strings.NewReplacer(" RTP/AVP 111 101", " RTP/AVP 111", "a=rtpmap:101 telephone-event/48000\r\n", "").Replace(phoneSDP(phone.addr()))
	res = do(t, m, "answer", ng.Dict{"call-id": "pion", "from-tag": "browser", "to-tag": "phone", "sdp": opusOnly, "ICE": "force"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	browser.Answer(t, res.Str("sdp"))
	browser.WaitConnected(t, 15*time.Second)

	// Opus both ways every 20 ms until each end has the other's.
	browserSays, phoneSays := []byte{0xfc, 'b', 'r', 'o', 'w'}, []byte{0xfc, 'p', 'h', 'o', 'n'}
	fromBrowser := make(chan []byte, 64)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := phone.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			var p rtp.Packet
			if p.Unmarshal(buf[:n]) == nil && p.PayloadType == 111 {
				select {
				case fromBrowser <- bytes.Clone(p.Payload):
				default:
				}
			}
		}
	}()
	browser.Converse(t, browserSays, phoneSays, fromBrowser, func(seq uint16) {
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 0x50710002}, Payload: phoneSays}
		plain, _ := pkt.Marshal()
		if _, err := phone.conn.WriteToUDPAddrPort(plain, anchorForPhone); err != nil {
			t.Fatal(err)
		}
	})
	q := do(t, m, "delete", ng.Dict{"call-id": "pion"})
	b, p := mediaDict(t, q, "browser"), mediaDict(t, q, "phone")
	srtpD := b.Dict("SRTP")
	if srtpD.Str("suite") == "" || !strings.HasPrefix(srtpD.Str("ICE selected"), "127.0.0.1:") || srtpD.Str("DTLS role") != "server" {
		t.Fatalf("the browser's leg keying: %v", srtpD)
	}
	for tag, md := range map[string]ng.Dict{"browser": b, "phone": p} {
		streams, _ := md["streams"].([]any)
		st := ng.Dict(streams[0].(map[string]any))
		if n, _ := st.Dict("stats").Int("packets"); n == 0 {
			t.Fatalf("leg %s received no packets: %v", tag, st)
		}
		if exp, _ := st.Dict("reception").Int("expected"); exp == 0 {
			t.Fatalf("leg %s has no reception statistics (RTP decrypted and read): %v", tag, st)
		}
	}
}

// The anchor answers the browser's ICE checks only from -ice-sources and
// only with the leg's credentials, and takes no media before a check
// passed (nor, here, before DTLS: no keys, so nothing is relayed).
func TestICEChecksOnTheAnchorsPort(t *testing.T) {
	alloc, err := ports.New(loopback, 48800, 48899)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(alloc.Close) // the parked pairs, after everything else
	m := New(Config{Advertise: []netip.Addr{loopback}, Ports: alloc, ICESources: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(m.Close)
	phone := newUDPPhone(t)
	if res := do(t, m, "offer", ng.Dict{"call-id": "ice", "from-tag": "browser", "sdp": browserSDP(t), "transport-protocol": "RTP/AVP"}); res.Str("result") != "ok" {
		t.Fatal(res)
	}
	res := do(t, m, "answer", ng.Dict{"call-id": "ice", "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"})
	s, err := sdp.Parse([]byte(res.Str("sdp")))
	if err != nil {
		t.Fatal(err)
	}
	w, _ := s.WebRTC(0)
	port := netip.AddrPortFrom(loopback, uint16(s.Media[0].Port))
	inside := newUDPPhone(t) // 127.0.0.1: within -ice-sources
	outside, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = outside.Close() })
	check := func(pwd string) []byte {
		msg, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername(w.Ufrag+":Gw3R"),
			stun.RawAttribute{Type: stun.AttrICEControlling, Value: make([]byte, 8)}, stun.NewShortTermIntegrity(pwd), stun.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		return msg.Raw
	}
	answered := func(c *net.UDPConn, pkt []byte) (*stun.Message, bool) {
		t.Helper()
		if _, err := c.WriteToUDPAddrPort(pkt, port); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil, false
		}
		if from != port {
			t.Fatalf("answer from %s, want the leg's port %s", from, port)
		}
		msg := &stun.Message{Raw: buf[:n]}
		if err := msg.Decode(); err != nil {
			t.Fatalf("not STUN: %v", err)
		}
		return msg, true
	}
	// Outside -ice-sources: no answer at all, even with the right password.
	if _, ok := answered(outside, check(w.Pwd)); ok {
		t.Fatal("a check from 127.0.0.2 was answered; -ice-sources is 127.0.0.1/32")
	}
	// Inside, with a wrong password: 401.
	if msg, ok := answered(inside.conn, check("wrongpasswordwrongpassword")); !ok || msg.Type != stun.NewType(stun.MethodBinding, stun.ClassErrorResponse) {
		t.Fatalf("a check with the wrong password: %v %v", msg, ok)
	}
	if got := mediaDict(t, do(t, m, "query", ng.Dict{"call-id": "ice"}), "browser").Dict("SRTP").Str("ICE selected"); got != "" {
		t.Fatalf("a failed check selected %s", got)
	}
	// The right one: a success carrying the source as XOR-MAPPED-ADDRESS,
	// signed with the leg's password, and the path is selected.
	msg, ok := answered(inside.conn, check(w.Pwd))
	if !ok || msg.Type != stun.BindingSuccess {
		t.Fatalf("a good check: %v %v", msg, ok)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(msg); err != nil || xor.Port != int(inside.addr().Port()) || stun.NewShortTermIntegrity(w.Pwd).Check(msg) != nil {
		t.Fatalf("the success response: %v %v", xor, err)
	}
	if got := mediaDict(t, do(t, m, "query", ng.Dict{"call-id": "ice"}), "browser").Dict("SRTP").Str("ICE selected"); got != inside.addr().String() {
		t.Fatalf("ICE selected %q, want %s", got, inside.addr())
	}
	// Media from the outside address goes nowhere, and neither does the
	// validated one's before DTLS keyed the leg.
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: 1, SSRC: 1}, Payload: []byte{0xfc, 1, 2, 3}}
	raw, _ := pkt.Marshal()
	for _, c := range []*net.UDPConn{outside, inside.conn} {
		if _, err := c.WriteToUDPAddrPort(raw, port); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1500)
	_ = phone.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := phone.conn.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("the phone got %x from a leg that has no DTLS keys", buf[:n])
	}
}

// iceManager is a Manager on loopback ports lo..lo+99 taking ICE
// checks from 127.0.0.0/8, cfg giving the rest; both closed at the end,
// the parked port pairs after everything else.
func iceManager(t *testing.T, lo int, cfg Config) (*Manager, *ports.Allocator) {
	t.Helper()
	alloc, err := ports.New(loopback, lo, lo+99)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(alloc.Close)
	cfg.Advertise, cfg.Ports = []netip.Addr{loopback}, alloc
	cfg.ICESources = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := New(cfg)
	t.Cleanup(m.Close)
	return m, alloc
}
