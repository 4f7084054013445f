package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/media/icelite"
	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/media/webrtc"
)

const browserTone = 880 // Hz, the WAV Chromium's fake microphone plays

// chromiumWebRTCFlags make headless Chromium a browser on loopback with a
// microphone: the fake capture device plays wav, permission is granted,
// and WebRTC gathers the loopback interface (it skips it otherwise).
func chromiumWebRTCFlags(wav string) []string {
	return []string{"--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
		"--use-file-for-fake-audio-capture=" + wav, "--autoplay-policy=no-user-gesture-required",
		"--allow-loopback-in-peer-connection"}
}

// servePages serves testdata/webrtc on 127.0.0.1: a secure context for
// getUserMedia, as localhost is.
func servePages(t *testing.T) string {
	t.Helper()
	s := httptest.NewServer(http.FileServer(http.Dir(filepath.Join("..", "..", "testdata", "webrtc"))))
	t.Cleanup(s.Close)
	return s.URL
}

// evalPromise evaluates a JavaScript expression giving a promise of a
// string and returns the string.
func evalPromise(t *testing.T, p *cdpPage, expr string) string {
	t.Helper()
	var r struct {
		Result struct {
			Value string `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	p.call(t, "Runtime.evaluate", map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true}, &r)
	if r.Exception != nil {
		t.Fatalf("%s: %s %s", expr, r.Exception.Text, r.Exception.Exception.Description)
	}
	return r.Result.Value
}

// Chromium's own WebRTC stack against the anchor's end of a WebRTC leg
// (media/webrtc) on a UDP socket of 127.0.0.30, without SIP: Chromium
// offers, the test answers as the anchor does (sdp.WithTransport: ICE-lite,
// a host candidate, the anchor's fingerprint, a=setup:passive), the leg
// answers Chromium's ICE checks and is its DTLS server, and the SRTP keys
// it exports must decrypt Chromium's Opus and encrypt Opus Chromium counts
// as received.
func TestBrowserDTLSWithAnchorLeg(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 30)})
	if err != nil {
		t.Fatal(err)
	}
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	wav := filepath.Join(t.TempDir(), "tone.wav")
	writeToneWAV(t, wav, browserTone, 10)
	b := startChromium(t, chromiumWebRTCFlags(wav)...)
	p := b.open(t, servePages(t)+"/peer.html")
	p.waitFor(t, "typeof window.offer === 'function'")
	offerSDP := evalPromise(t, p, "offer()")

	off, err := sdp.Parse([]byte(offerSDP))
	if err != nil {
		t.Fatal(err)
	}
	if len(off.Media) != 1 || !sdp.DTLSProto(off.Media[0].Proto) || off.Media[0].OpusPT < 0 {
		t.Fatalf("Chromium offered %+v", off.Media)
	}
	peer, err := off.WebRTC(0)
	if err != nil {
		t.Fatal(err)
	}
	setup, client, err := sdp.AnswerSetup(peer.Setup)
	if err != nil {
		t.Fatal(err)
	}
	role := dtlssrtp.Server
	if client {
		role = dtlssrtp.Client
	}
	cert, err := dtlssrtp.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := icelite.NewCredentials()
	if err != nil {
		t.Fatal(err)
	}
	keys := make(chan dtlssrtp.Keys, 1)
	failed := make(chan error, 1)
	leg, err := webrtc.New(t.Context(), webrtc.Config{
		ICE: creds, Certificate: cert,
		Send: func(b []byte, to netip.AddrPort) error { _, err := conn.WriteToUDPAddrPort(b, to); return err },
		Keys: func(k dtlssrtp.Keys, err error) {
			if err != nil {
				failed <- err
				return
			}
			keys <- k
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := leg.SetPeer(webrtc.Peer{Ufrag: peer.Ufrag, Fingerprint: dtlssrtp.Fingerprint(peer.Fingerprint), Role: role}); err != nil {
		t.Fatal(err)
	}
	var in atomic.Pointer[srtp.Context]
	var decrypted, undecryptable atomic.Int64
	reading := make(chan struct{})
	t.Cleanup(func() {
		_ = leg.Close()
		_ = conn.Close()
		<-reading
	})
	opusPT := uint8(off.Media[0].OpusPT)
	go func() {
		defer close(reading)
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			if !from.Addr().IsLoopback() {
				// Chromium checks from every interface's candidate; this
				// test keeps its traffic on loopback by answering none
				// of the others, so the loopback pair is the one chosen.
				continue
			}
			if webrtc.Classify(buf[0]) != webrtc.RTP {
				_ = leg.Handle(buf[:n], from)
				continue
			}
			ctx := in.Load()
			if ctx == nil || buf[1] >= 192 && buf[1] <= 223 { // RTCP
				continue
			}
			var h rtp.Header
			if _, err := ctx.DecryptRTP(nil, buf[:n], &h); err != nil {
				undecryptable.Add(1)
				continue
			}
			if h.PayloadType == opusPT {
				decrypted.Add(1)
			}
		}
	}()

	phone := "v=0\r\no=- 1 1 IN IP4 127.0.0.30\r\ns=-\r\nc=IN IP4 127.0.0.30\r\nt=0 0\r\nm=audio " + strconv.Itoa(int(local.Port())) +
		" UDP/TLS/RTP/SAVPF " + strconv.Itoa(int(opusPT)) + "\r\na=rtpmap:" + strconv.Itoa(int(opusPT)) + " opus/48000/2\r\na=sendrecv\r\n"
	answer, err := sdp.WithTransport([]byte(phone), []sdp.Transport{{
		Ufrag: creds.Ufrag, Pwd: creds.Pwd, Fingerprint: sdp.Fingerprint(cert.Fingerprint()), Setup: setup, Candidate: local, Mid: peer.Mid,
	}})
	if err != nil {
		t.Fatal(err)
	}
	answerJS, _ := json.Marshal(string(answer))
	evalPromise(t, p, "answer("+string(answerJS)+").then(String)")

	var k dtlssrtp.Keys
	select {
	case k = <-keys:
	case err := <-failed:
		t.Fatalf("DTLS with Chromium: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatalf("no DTLS with Chromium in 15 s; ICE selected %v", must(leg.Selected()))
	}
	dec, err := srtp.CreateContext(k.RemoteKey, k.RemoteSalt, srtp.ProtectionProfile(k.Profile))
	if err != nil {
		t.Fatal(err)
	}
	in.Store(dec)
	enc, err := srtp.CreateContext(k.LocalKey, k.LocalSalt, srtp.ProtectionProfile(k.Profile))
	if err != nil {
		t.Fatal(err)
	}
	to, ok := leg.Selected()
	if !ok || !to.Addr().IsLoopback() {
		t.Fatalf("ICE selected %v %v, want a loopback address", to, ok)
	}
	// 2 s of 20 ms Opus frames to Chromium (a valid Opus packet: TOC 0xf8,
	// a 20 ms CELT frame of silence), while its microphone's come in.
	frame := []byte{0xf8, 0xff, 0xfe}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for seq := range uint16(100) {
		<-tick.C
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: opusPT, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 0x50710001}, Payload: frame}
		plain, _ := pkt.Marshal()
		out, err := enc.EncryptRTP(nil, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteToUDPAddrPort(out, to); err != nil {
			t.Fatal(err)
		}
	}
	var st struct {
		State    string `json:"state"`
		Sent     int    `json:"sent"`
		Received int    `json:"received"`
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := json.Unmarshal([]byte(evalPromise(t, p, "counters()")), &st); err != nil {
			t.Fatal(err)
		}
		if st.Received >= 90 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("profile %v; Chromium %+v; the leg decrypted %d of Chromium's Opus packets, %d did not decrypt", k.Profile, st, decrypted.Load(), undecryptable.Load())
	if st.State != "connected" {
		t.Errorf("Chromium's connection is %q, want connected", st.State)
	}
	if st.Received < 90 {
		t.Errorf("Chromium received %d of the 100 SRTP packets sent with the exported local key", st.Received)
	}
	if decrypted.Load() < 50 || undecryptable.Load() != 0 {
		t.Errorf("the exported remote key decrypted %d of Chromium's Opus packets (2 s: ~100), %d failed", decrypted.Load(), undecryptable.Load())
	}
	p.checkNoErrors(t)
}

func must[T any](v T, _ bool) T { return v }
