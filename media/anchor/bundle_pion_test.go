package anchor

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	pion "github.com/pion/webrtc/v4"

	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/sdp"
)

// bundlePeer is a browser with audio and video and bundlePolicy
// max-bundle: one transport for both, or no call.
type bundlePeer struct {
	pc           *pion.PeerConnection
	audio, video *pion.TrackLocalStaticRTP
	heard        map[pion.RTPCodecType]chan []byte
	connected    chan struct{}
}

func newBundlePeer(t *testing.T) *bundlePeer {
	t.Helper()
	var se pion.SettingEngine
	se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) })
	var me pion.MediaEngine
	for _, c := range []struct {
		p pion.RTPCodecParameters
		k pion.RTPCodecType
	}{
		{pion.RTPCodecParameters{RTPCodecCapability: pion.RTPCodecCapability{MimeType: pion.MimeTypeOpus, ClockRate: 48000, Channels: 2}, PayloadType: 111}, pion.RTPCodecTypeAudio},
		{pion.RTPCodecParameters{RTPCodecCapability: pion.RTPCodecCapability{MimeType: pion.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}, pion.RTPCodecTypeVideo},
	} {
		if err := me.RegisterCodec(c.p, c.k); err != nil {
			t.Fatal(err)
		}
		if err := me.RegisterHeaderExtension(pion.RTPHeaderExtensionCapability{URI: sdp.MidURI}, c.k); err != nil {
			t.Fatal(err)
		}
	}
	pc, err := pion.NewAPI(pion.WithSettingEngine(se), pion.WithMediaEngine(&me)).NewPeerConnection(pion.Configuration{BundlePolicy: pion.BundlePolicyMaxBundle})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	b := &bundlePeer{pc: pc, heard: map[pion.RTPCodecType]chan []byte{pion.RTPCodecTypeAudio: make(chan []byte, 64), pion.RTPCodecTypeVideo: make(chan []byte, 64)}, connected: make(chan struct{})}
	if b.audio, err = pion.NewTrackLocalStaticRTP(pion.RTPCodecCapability{MimeType: pion.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "browser"); err != nil {
		t.Fatal(err)
	}
	if b.video, err = pion.NewTrackLocalStaticRTP(pion.RTPCodecCapability{MimeType: pion.MimeTypeVP8, ClockRate: 90000}, "video", "browser"); err != nil {
		t.Fatal(err)
	}
	for _, tr := range []*pion.TrackLocalStaticRTP{b.audio, b.video} {
		if _, err := pc.AddTrack(tr); err != nil {
			t.Fatal(err)
		}
	}
	pc.OnTrack(func(tr *pion.TrackRemote, _ *pion.RTPReceiver) {
		ch := b.heard[tr.Kind()]
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			select {
			case ch <- p.Payload:
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

func (b *bundlePeer) gathered(t *testing.T, d pion.SessionDescription) string {
	t.Helper()
	done := pion.GatheringCompletePromise(b.pc)
	if err := b.pc.SetLocalDescription(d); err != nil {
		t.Fatal(err)
	}
	<-done
	return b.pc.LocalDescription().SDP
}

// phoneHeard reads a plain phone's socket: the payloads of payload type
// pt, and whether anything else came (media of the other section).
func phoneHeard(phone *udpPhone, pt uint8) (chan []byte, chan uint8) {
	got, stray := make(chan []byte, 256), make(chan uint8, 16)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := phone.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			var p rtp.Packet
			if p.Unmarshal(buf[:n]) != nil || buf[1] >= 192 && buf[1] <= 223 {
				continue // RTCP
			}
			ch := got
			if p.PayloadType != pt {
				select {
				case stray <- p.PayloadType:
				default:
				}
				continue
			}
			select {
			case ch <- bytes.Clone(p.Payload):
			default:
			}
		}
	}()
	return got, stray
}

// pion offers audio and video with max-bundle; the anchor answers both
// on one port, ICE and DTLS, and bridges them to a plain phone's two m=
// lines on ports of their own: audio and video flow both ways, each to
// its own section, through the one bundled port, and each section keeps
// its own statistics.
func TestPionMaxBundleAudioAndVideo(t *testing.T) { maxBundleCall(t, nil) }

// The same call kept and restored by a new anchor on the same ports: its
// sections stay on the one transport, each demultiplexed to its own.
func TestKeptMaxBundleCallGoesOn(t *testing.T) {
	maxBundleCall(t, &memKeeper{calls: map[string]anchorstate.Call{}})
}

func bundleManager(t *testing.T, k Keeper) (*Manager, *ports.Allocator) {
	t.Helper()
	m, alloc := iceManager(t, 44400, Config{Keep: k, KeepEvery: time.Hour})
	return m, alloc
}

func maxBundleCall(t *testing.T, k *memKeeper) {
	var keeper Keeper
	if k != nil {
		keeper = k
	}
	m, alloc := bundleManager(t, keeper)
	audio, video := newUDPPhone(t), newUDPPhone(t)
	audioHeard, audioStray := phoneHeard(audio, 111)
	videoHeard, videoStray := phoneHeard(video, 96)

	b := newBundlePeer(t)
	o, err := b.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	offer := b.gathered(t, o)
	off, err := sdp.ParseString(offer)
	if err != nil {
		t.Fatal(err)
	}
	mids := []string{off.Mid(0), off.Mid(1)}
	res := do(t, m, "offer", ng.Dict{"call-id": "pion-bundle", "from-tag": "browser", "sdp": offer, "ICE": "remove", "transport-protocol": "RTP/AVP"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	toPhone, err := sdp.ParseString(res.Str("sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(toPhone.Media) != 2 || toPhone.Media[0].Port == toPhone.Media[1].Port {
		t.Fatalf("toward the phone, want two sections on ports of their own:\n%s", res.Str("sdp"))
	}
	audioLeg := netip.AddrPortFrom(loopback, uint16(toPhone.Media[0].Port))
	videoLeg := netip.AddrPortFrom(loopback, uint16(toPhone.Media[1].Port))
	res = do(t, m, "answer", ng.Dict{"call-id": "pion-bundle", "from-tag": "browser", "to-tag": "phone", "sdp": twoSections(audio.addr(), video.addr()), "ICE": "force"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	answer := res.Str("sdp")
	port := checkOneTransport(t, answer, mids...)
	if err := b.pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatalf("pion refused the answer: %v\n%s", err, answer)
	}
	select {
	case <-b.connected:
	case <-time.After(15 * time.Second):
		t.Fatalf("pion never connected (ICE %s)", b.pc.ICEConnectionState())
	}
	// One transport: both senders' ICE pair ends on the bundled port.
	for _, s := range b.pc.GetSenders() {
		pair, err := s.Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || pair == nil || pair.Remote.Port != uint16(port) {
			t.Fatalf("%s sender's pair %v (%v), want the anchor's port %d", s.Track().Kind(), pair, err, port)
		}
	}

	bundleTalk(t, "max-bundle", b, audio, video, audioLeg, videoLeg, audioHeard, videoHeard, audioStray, videoStray)

	if k != nil {
		m.keepChanged(time.Now())
		kept := k.all()
		if len(kept) != 1 {
			t.Fatalf("kept %d calls", len(kept))
		}
		for _, l := range kept[0].Legs {
			if l.Tag == "browser" && (len(l.Medias) != 2 || l.Medias[0].Bundle == nil || l.Medias[1].Bundle == nil || l.Medias[1].Bundle.Via != 0 || l.Medias[1].WebRTC != nil) {
				t.Fatalf("the browser's leg kept as %+v", l.Medias)
			}
		}
		m.Close()
		alloc.Close()
		m, _ = bundleManager(t, k)
		if n, dropped := m.Restore(kept); n != 1 || len(dropped) != 0 {
			t.Fatalf("restored %d, dropped %v", n, dropped)
		}
		bundleTalk(t, "after the restore", b, audio, video, audioLeg, videoLeg, audioHeard, videoHeard, audioStray, videoStray)
	}

	// Each section of the browser's leg measured its own source.
	m.mu.Lock()
	leg := m.calls["pion-bundle"].legByTag("browser")
	secs := leg.medias
	m.mu.Unlock()
	if len(secs) != 2 {
		t.Fatalf("%d sections", len(secs))
	}
	for i, md := range secs {
		rtpc, _ := md.stream.Stats()
		rep := md.stream.ReceptionSnapshot()
		if rtpc.Packets == 0 || rep.Expected == 0 || uint64(rep.Received) > rtpc.Packets {
			t.Errorf("section %d: %+v packets, reception %+v", i, rtpc, rep)
		}
	}
}

// bundleTalk has the browser and the phone send audio and video every 20
// ms until each heard the other's of both kinds, each on its own section.
func bundleTalk(t *testing.T, phase string, b *bundlePeer, audio, video *udpPhone, audioLeg, videoLeg netip.AddrPort, audioHeard, videoHeard chan []byte, audioStray, videoStray chan uint8) {
	t.Helper()
	says := map[string][]byte{}
	for _, k := range []string{"browser audio", "browser video", "phone audio", "phone video"} {
		says[k] = []byte("\xfc" + k + " " + phase)
	}
	got := map[string]bool{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	phoneSend := func(p *udpPhone, to netip.AddrPort, pt uint8, ssrc uint32, seq uint16, payload []byte) {
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: ssrc}, Payload: payload}
		raw, _ := pkt.Marshal()
		if _, err := p.conn.WriteToUDPAddrPort(raw, to); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint16(1); len(got) < len(says); seq++ {
		select {
		case <-tick.C:
		case p := <-audioHeard:
			if bytes.Equal(p, says["browser audio"]) {
				got["browser audio"] = true
			}
			continue
		case p := <-videoHeard:
			if bytes.Equal(p, says["browser video"]) {
				got["browser video"] = true
			}
			continue
		case p := <-b.heard[pion.RTPCodecTypeAudio]:
			if bytes.Equal(p, says["phone audio"]) {
				got["phone audio"] = true
			}
			continue
		case p := <-b.heard[pion.RTPCodecTypeVideo]:
			if bytes.Equal(p, says["phone video"]) {
				got["phone video"] = true
			}
			continue
		case pt := <-audioStray:
			t.Fatalf("the phone's audio port got payload type %d", pt)
		case pt := <-videoStray:
			t.Fatalf("the phone's video port got payload type %d", pt)
		case <-deadline:
			t.Fatalf("%s: after 10 s, heard: %v", phase, got)
		}
		if err := b.audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 960}, Payload: says["browser audio"]}); err != nil {
			t.Fatal(err)
		}
		if err := b.video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, Marker: true}, Payload: says["browser video"]}); err != nil {
			t.Fatal(err)
		}
		phoneSend(audio, audioLeg, 111, 50001, seq, says["phone audio"])
		phoneSend(video, videoLeg, 96, 50002, seq, says["phone video"])
	}

}

// A plain phone offers audio and video toward a browser: the anchor's
// offer has them in one group on one transport, pion (max-bundle)
// answers it bundled, and both kinds flow both ways.
func TestPionAnswersABundledOfferOfAudioAndVideo(t *testing.T) {
	m, _ := iceManager(t, 44500, Config{})
	audio, video := newUDPPhone(t), newUDPPhone(t)
	audioHeard, audioStray := phoneHeard(audio, 111)
	videoHeard, videoStray := phoneHeard(video, 96)

	res := do(t, m, "offer", ng.Dict{"call-id": "pion-bundle-answer", "from-tag": "phone", "sdp": twoSections(audio.addr(), video.addr()), "ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	offer := res.Str("sdp")
	port := checkOneTransport(t, offer, "0", "1")
	b := newBundlePeer(t)
	if err := b.pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeOffer, SDP: offer}); err != nil {
		t.Fatalf("pion refused the offer: %v\n%s", err, offer)
	}
	a, err := b.pc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	answer := b.gathered(t, a)
	res = do(t, m, "answer", ng.Dict{"call-id": "pion-bundle-answer", "from-tag": "phone", "to-tag": "browser", "sdp": answer, "ICE": "remove"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v\n%s", res, answer)
	}
	toPhone, err := sdp.ParseString(res.Str("sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(toPhone.Media) != 2 || toPhone.Media[0].Port == toPhone.Media[1].Port || toPhone.Media[0].Port == port {
		t.Fatalf("toward the phone, want two sections on ports of their own:\n%s", res.Str("sdp"))
	}
	select {
	case <-b.connected:
	case <-time.After(15 * time.Second):
		t.Fatalf("pion never connected (ICE %s)", b.pc.ICEConnectionState())
	}
	bundleTalk(t, "bundled offer", b, audio, video, netip.AddrPortFrom(loopback, uint16(toPhone.Media[0].Port)), netip.AddrPortFrom(loopback, uint16(toPhone.Media[1].Port)),
		audioHeard, videoHeard, audioStray, videoStray)
}
