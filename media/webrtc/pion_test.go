package webrtc_test

import (
	"net"
	"net/netip"
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
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
)

// TestPionPeerOverLoopback has pion/webrtc, a full ICE agent and DTLS
// client like a browser's, offer Opus to the anchor's end of a leg on a
// real UDP socket. The anchor answers with sdp.WithTransport, the leg does
// ICE-lite and DTLS, and the exported keys must decrypt pion's SRTP and
// encrypt SRTP that pion's track plays: both directions, both keys.
func TestPionPeerOverLoopback(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 30)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()

	// The browser side.
	browser := webrtctest.NewBrowser(t)

	// The anchor reads the offer...
	off, err := sdp.Parse([]byte(browser.Offer()))
	if err != nil {
		t.Fatal(err)
	}
	if !sdp.DTLSProto(off.Media[0].Proto) {
		t.Fatalf("pion offered %s", off.Media[0].Proto)
	}
	peer, err := off.WebRTC(0)
	if err != nil {
		t.Fatal(err)
	}
	setup, client, err := sdp.AnswerSetup(peer.Setup)
	if err != nil || client {
		t.Fatalf("setup %q: %q %v %v", peer.Setup, setup, client, err)
	}

	// ...runs the leg on its socket...
	cert, err := dtlssrtp.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := icelite.NewCredentials()
	if err != nil {
		t.Fatal(err)
	}
	keys := make(chan dtlssrtp.Keys, 1)
	leg, err := webrtc.New(t.Context(), webrtc.Config{
		ICE: creds, Certificate: cert,
		Send: func(b []byte, to netip.AddrPort) error { _, err := conn.WriteToUDPAddrPort(b, to); return err },
		Keys: func(k dtlssrtp.Keys, err error) {
			if err != nil {
				t.Errorf("handshake: %v", err)
				return
			}
			keys <- k
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leg.Close() })
	if err := leg.SetPeer(webrtc.Peer{Ufrag: peer.Ufrag, Fingerprint: dtlssrtp.Fingerprint(peer.Fingerprint), Role: dtlssrtp.Server}); err != nil {
		t.Fatal(err)
	}
	var srtpIn atomic.Pointer[srtp.Context]
	fromBrowser := make(chan []byte, 16)
	var nonRTPErrors atomic.Int64
	reading := make(chan struct{})
	t.Cleanup(func() {
		_ = conn.Close()
		<-reading
	})
	go func() {
		defer close(reading)
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			if webrtc.Classify(buf[0]) != webrtc.RTP {
				if leg.Handle(buf[:n], from) != nil {
					nonRTPErrors.Add(1)
				}
				continue
			}
			ctx := srtpIn.Load()
			if ctx == nil || (n > 1 && buf[1] >= 192 && buf[1] <= 223) { // RTCP: not checked here
				continue
			}
			var h rtp.Header
			p, err := ctx.DecryptRTP(nil, buf[:n], &h)
			if err != nil {
				t.Errorf("SRTP from pion does not decrypt with the exported remote key: %v", err)
				continue
			}
			var pkt rtp.Packet
			if pkt.Unmarshal(p) == nil {
				select {
				case fromBrowser <- pkt.Payload:
				default:
				}
			}
		}
	}()

	// ...and answers with a SIP phone's SDP turned toward WebRTC.
	phone := "v=0\r\no=- 1 1 IN IP4 127.0.0.30\r\ns=-\r\nc=IN IP4 127.0.0.30\r\nt=0 0\r\nm=audio " + strconv.Itoa(int(local.Port())) +
		" UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=sendrecv\r\n"
	answer, err := sdp.WithTransport([]byte(phone), []sdp.Transport{{
		Ufrag: creds.Ufrag, Pwd: creds.Pwd, Fingerprint: sdp.Fingerprint(cert.Fingerprint()), Setup: setup, Candidate: local, Mid: peer.Mid,
	}})
	if err != nil {
		t.Fatal(err)
	}
	browser.Answer(t, string(answer))

	var k dtlssrtp.Keys
	select {
	case k = <-keys:
	case <-time.After(15 * time.Second):
		t.Fatal("no DTLS keys")
	}
	browser.WaitConnected(t, 15*time.Second)
	in, err := srtp.CreateContext(k.RemoteKey, k.RemoteSalt, srtp.ProtectionProfile(k.Profile))
	if err != nil {
		t.Fatal(err)
	}
	srtpIn.Store(in)
	out, err := srtp.CreateContext(k.LocalKey, k.LocalSalt, srtp.ProtectionProfile(k.Profile))
	if err != nil {
		t.Fatal(err)
	}
	sel, ok := leg.Selected()
	if !ok || sel.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("selected %v %v", sel, ok)
	}

	// Opus-shaped payloads both ways, every 20 ms, until each side has one.
	browserSays, anchorSays := []byte{0xfc, 'b', 'r', 'o', 'w'}, []byte{0xfc, 'a', 'n', 'c', 'h'}
	browser.Converse(t, browserSays, anchorSays, fromBrowser, func(seq uint16) {
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 0x50710000}, Payload: anchorSays}
		plain, _ := pkt.Marshal()
		enc, err := out.EncryptRTP(nil, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteToUDPAddrPort(enc, sel); err != nil {
			t.Fatal(err)
		}
	})
	if n := nonRTPErrors.Load(); n != 0 {
		t.Errorf("%d of pion's STUN or DTLS datagrams were refused", n)
	}
}
