// Package webrtctest is a browser for tests: a pion/webrtc peer, a full
// ICE agent and DTLS client as a browser is, with one Opus track, on
// 127.0.0.1 only.
package webrtctest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	pion "github.com/pion/webrtc/v4"
)

// Browser is one peer: NewBrowser makes its offer, Answer takes the
// answer, and then it talks (Say) and plays what comes in (Heard).
type Browser struct {
	PC        *pion.PeerConnection
	track     *pion.TrackLocalStaticRTP
	heard     chan []byte
	connected chan struct{}
}

// NewPeer makes the peer, with no offer yet (MakeOffer, AnswerOffer);
// it closes when the test ends.
func NewPeer(t testing.TB) *Browser {
	t.Helper()
	return NewPeerWith(t, nil)
}

// NewCertificate is a DTLS certificate for NewPeerWith.
func NewCertificate(t testing.TB) *pion.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pion.GenerateCertificate(key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewPeerWith is NewPeer with cert as its DTLS certificate (nil: one of
// its own): a second peer with the first one's certificate has its
// fingerprint, as a browser tab that reconnects with the same
// RTCCertificate has.
func NewPeerWith(t testing.TB, cert *pion.Certificate) *Browser {
	t.Helper()
	var conf pion.Configuration
	if cert != nil {
		conf.Certificates = []pion.Certificate{*cert}
	}
	var se pion.SettingEngine
	se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) })
	// An answer turned from a SIP phone's declares no a=ssrc: match the
	// stream by payload type, as browsers do with one audio section.
	se.SetHandleUndeclaredSSRCWithoutAnswer(true)
	var me pion.MediaEngine
	if err := me.RegisterCodec(pion.RTPCodecParameters{RTPCodecCapability: pion.RTPCodecCapability{MimeType: pion.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111}, pion.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	pc, err := pion.NewAPI(pion.WithSettingEngine(se), pion.WithMediaEngine(&me)).NewPeerConnection(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	track, err := pion.NewTrackLocalStaticRTP(pion.RTPCodecCapability{MimeType: pion.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "browser")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	b := &Browser{PC: pc, track: track, heard: make(chan []byte, 64), connected: make(chan struct{})}
	pc.OnTrack(func(tr *pion.TrackRemote, _ *pion.RTPReceiver) {
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			select {
			case b.heard <- p.Payload:
			default:
			}
		}
	})
	var once sync.Once
	pc.OnConnectionStateChange(func(s pion.PeerConnectionState) {
		if s == pion.PeerConnectionStateConnected {
			once.Do(func() { close(b.connected) })
		}
	})
	return b
}

// NewBrowser makes the peer and its offer, every candidate gathered.
func NewBrowser(t testing.TB) *Browser {
	t.Helper()
	b := NewPeer(t)
	b.MakeOffer(t)
	return b
}

// MakeOffer makes the browser's (next) offer, every candidate gathered,
// and returns it.
func (b *Browser) MakeOffer(t testing.TB) string {
	t.Helper()
	offer, err := b.PC.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b.local(t, offer)
}

// AnswerOffer takes the other end's offer and returns the browser's
// answer, every candidate gathered.
func (b *Browser) AnswerOffer(t testing.TB, offer string) string {
	t.Helper()
	if err := b.PC.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeOffer, SDP: offer}); err != nil {
		t.Fatalf("pion refused the offer: %v\n%s", err, offer)
	}
	answer, err := b.PC.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b.local(t, answer)
}

func (b *Browser) local(t testing.TB, d pion.SessionDescription) string {
	t.Helper()
	gathered := pion.GatheringCompletePromise(b.PC)
	if err := b.PC.SetLocalDescription(d); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return b.PC.LocalDescription().SDP
}

// Connected is closed once ICE and DTLS connect the peer.
func (b *Browser) Connected() <-chan struct{} { return b.connected }

// Offer is the browser's offer.
func (b *Browser) Offer() string { return b.PC.LocalDescription().SDP }

// Answer gives the browser the answer to its offer.
func (b *Browser) Answer(t testing.TB, sdp string) {
	t.Helper()
	if err := b.PC.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: sdp}); err != nil {
		t.Fatalf("pion refused the answer: %v\n%s", err, sdp)
	}
}

// WaitConnected waits for ICE and DTLS to connect the peer.
func (b *Browser) WaitConnected(t testing.TB, within time.Duration) {
	t.Helper()
	select {
	case <-b.connected:
	case <-time.After(within):
		t.Fatalf("pion never connected (ICE %s)", b.PC.ICEConnectionState())
	}
}

// Say sends payload on the browser's track, as packet seq of 20 ms.
func (b *Browser) Say(seq uint16, payload []byte) error {
	return b.track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960}, Payload: payload})
}

// Heard brings the payloads the browser played (those it had no room for
// are dropped).
func (b *Browser) Heard() <-chan []byte { return b.heard }

// Converse has the browser and the other end talk every 20 ms: the
// browser says says, and other sends the other end's packet seq, until
// the other end heard the browser (fromBrowser brought says) and the
// browser played hears; the test fails after 10 s.
func (b *Browser) Converse(t testing.TB, says, hears []byte, fromBrowser <-chan []byte, other func(seq uint16)) {
	t.Helper()
	b.ConverseFrom(t, 1, says, hears, fromBrowser, other)
}

// ConverseFrom is Converse with the packets numbered from seq on (a
// stream that goes on from an earlier talk); the seq after the last.
func (b *Browser) ConverseFrom(t testing.TB, seq uint16, says, hears []byte, fromBrowser <-chan []byte, other func(seq uint16)) uint16 {
	t.Helper()
	var gotBrowser, gotOther bool
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for ; !gotBrowser || !gotOther; seq++ {
		select {
		case <-tick.C:
		case p := <-fromBrowser:
			gotBrowser = gotBrowser || bytes.Equal(p, says)
			continue
		case p := <-b.heard:
			gotOther = gotOther || bytes.Equal(p, hears)
			continue
		case <-deadline:
			t.Fatalf("after 10 s of %q: the other end heard the browser %v, the browser played the other end %v", says, gotBrowser, gotOther)
		}
		if err := b.Say(seq, says); err != nil {
			t.Fatal(err)
		}
		other(seq)
	}
	return seq
}

// PhoneSSRC is the SSRC of the Opus a plain phone sends in Talk.
const PhoneSSRC = 0x50710002

// Talk has the browser and a plain RTP phone on conn talk every 20 ms,
// from packet seq on, until each heard the other's payload of phase
// ("\xfcbrowser "+phase, "\xfcphone "+phase): the phone sends its Opus to
// toPhoneLeg, the anchor's port for it, and fromBrowser (PlainRTP of
// conn) brings what it heard. The seq after the last packet.
func (b *Browser) Talk(t testing.TB, phase string, conn *net.UDPConn, fromBrowser <-chan []byte, toPhoneLeg netip.AddrPort, seq uint16) uint16 {
	t.Helper()
	phoneSays := []byte("\xfcphone " + phase)
	return b.ConverseFrom(t, seq, []byte("\xfcbrowser "+phase), phoneSays, fromBrowser, func(seq uint16) {
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: PhoneSSRC}, Payload: phoneSays}
		plain, _ := pkt.Marshal()
		if _, err := conn.WriteToUDPAddrPort(plain, toPhoneLeg); err != nil {
			t.Fatal(err)
		}
	})
}

// PlainRTP brings the payloads of the Opus (payload type 111) RTP conn
// receives, until it closes; those there is no room for are dropped.
func PlainRTP(conn *net.UDPConn) <-chan []byte {
	got := make(chan []byte, 256)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			var p rtp.Packet
			if p.Unmarshal(buf[:n]) == nil && p.PayloadType == 111 {
				select {
				case got <- bytes.Clone(p.Payload):
				default:
				}
			}
		}
	}()
	return got
}
