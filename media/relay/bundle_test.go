package relay

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

func bundlePacket(t *testing.T, pt uint8, ssrc uint32, ext func(h *rtp.Header)) []byte {
	t.Helper()
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: 1, SSRC: ssrc}, Payload: []byte{1, 2, 3}}
	if ext != nil {
		ext(&p.Header)
	}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Audio (mid a, Opus 111) and video (mid v, VP8 96, declared SSRC 2222)
// on one transport: each packet finds its section by its mid extension,
// then by SSRC, then by payload type.
func TestBundleRoute(t *testing.T) {
	newBundle := func() *Bundle {
		return NewBundle(4, []BundleSection{
			{Mid: "a", PTs: []uint8{111, 0}},
			{Mid: "v", PTs: []uint8{96, 97}, SSRCs: []uint32{2222}},
		})
	}
	oneByte := func(mid string) func(h *rtp.Header) {
		return func(h *rtp.Header) {
			h.Extension, h.ExtensionProfile = true, 0xBEDE
			if err := h.SetExtension(1, []byte{9}); err != nil { // another extension first
				t.Fatal(err)
			}
			if err := h.SetExtension(4, []byte(mid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	twoByte := func(mid string) func(h *rtp.Header) {
		return func(h *rtp.Header) {
			h.Extension, h.ExtensionProfile = true, 0x1000
			if err := h.SetExtension(4, []byte(mid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("mid extension", func(t *testing.T) {
		b := newBundle()
		// The mid wins over the payload type (111 is audio's)...
		if got := b.Route(bundlePacket(t, 111, 7777, oneByte("v"))); got != 1 {
			t.Fatalf("one-byte mid v: section %d", got)
		}
		if got := b.Route(bundlePacket(t, 96, 8888, twoByte("a"))); got != 0 {
			t.Fatalf("two-byte mid a: section %d", got)
		}
		// ...and the SSRC it came with keeps its section without it.
		if got := b.Route(bundlePacket(t, 111, 7777, nil)); got != 1 {
			t.Fatalf("learnt SSRC: section %d", got)
		}
		// An unknown mid falls back to the payload type.
		if got := b.Route(bundlePacket(t, 96, 9999, oneByte("x"))); got != 1 {
			t.Fatalf("unknown mid: section %d", got)
		}
	})
	t.Run("ssrc", func(t *testing.T) {
		b := newBundle()
		// Declared: 2222 is video's even with audio's payload type.
		if got := b.Route(bundlePacket(t, 0, 2222, nil)); got != 1 {
			t.Fatalf("declared SSRC: section %d", got)
		}
		b.Learn(4444, 0)
		if got := b.Route(bundlePacket(t, 96, 4444, nil)); got != 0 {
			t.Fatalf("learnt SSRC: section %d", got)
		}
	})
	t.Run("payload type", func(t *testing.T) {
		b := newBundle()
		for pt, want := range map[uint8]int{111: 0, 0: 0, 96: 1, 97: 1, 8: -1} {
			if got := b.Route(bundlePacket(t, pt, 5000+uint32(pt), nil)); got != want {
				t.Errorf("PT %d: section %d, want %d", pt, got, want)
			}
		}
	})
	t.Run("rtcp", func(t *testing.T) {
		b := newBundle()
		b.Route(bundlePacket(t, 111, 1111, nil)) // audio's source, by its PT
		sr, _ := (&rtcp.SenderReport{SSRC: 1111}).Marshal()
		rr, _ := (&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 2222}}}).Marshal()
		unknown, _ := (&rtcp.ReceiverReport{SSRC: 1}).Marshal()
		for name, c := range map[string]struct {
			b    []byte
			want int
		}{"sender": {sr, 0}, "report block": {rr, 1}, "unknown": {unknown, -1}} {
			if got := b.Route(c.b); got != c.want {
				t.Errorf("%s: section %d, want %d", name, got, c.want)
			}
		}
	})
	t.Run("feedback", func(t *testing.T) {
		phoneVideo := &Stream{}
		b := NewBundle(0, []BundleSection{{Mid: "a", PTs: []uint8{111}}, {Mid: "v", PTs: []uint8{96}, From: phoneVideo}})
		b.Route(bundlePacket(t, 111, 1111, nil)) // the browser's audio source
		b.Sent(phoneVideo, 0x50002)              // the phone's video, sent to the browser on v
		// Chrome's feedback on video from the sender SSRC of its audio: a
		// PLI, alone and after a receiver report, goes by its media source.
		pli, _ := (&rtcp.PictureLossIndication{SenderSSRC: 1111, MediaSSRC: 0x50002}).Marshal()
		compound, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 1111}, &rtcp.PictureLossIndication{SenderSSRC: 1111, MediaSSRC: 0x50002}})
		nack, _ := (&rtcp.TransportLayerNack{SenderSSRC: 1111, MediaSSRC: 0x50002}).Marshal()
		rr, _ := (&rtcp.ReceiverReport{SSRC: 1111}).Marshal()
		for name, c := range map[string]struct {
			b    []byte
			want int
		}{"pli": {pli, 1}, "rr then pli": {compound, 1}, "nack": {nack, 1}, "rr without blocks": {rr, 0}} {
			if got := b.Route(c.b); got != c.want {
				t.Errorf("%s: section %d, want %d", name, got, c.want)
			}
		}
		if n := testing.AllocsPerRun(100, func() { b.Sent(phoneVideo, 0x50002) }); n != 0 {
			t.Errorf("Sent: %v allocations", n)
		}
	})
	t.Run("allocations", func(t *testing.T) {
		b := newBundle()
		pkts := [][]byte{bundlePacket(t, 111, 7777, oneByte("v")), bundlePacket(t, 96, 9, nil), bundlePacket(t, 8, 10, nil)}
		if n := testing.AllocsPerRun(100, func() {
			for _, p := range pkts {
				b.Route(p)
			}
		}); n != 0 {
			t.Fatalf("%v allocations per route", n)
		}
	})
}

func TestMidOfRefusesTruncatedExtensions(t *testing.T) {
	p := bundlePacket(t, 96, 1, func(h *rtp.Header) {
		h.Extension, h.ExtensionProfile = true, 0xBEDE
		_ = h.SetExtension(4, []byte("video"))
	})
	for n := 12; n < len(p)-3; n++ {
		if mid, ok := midOf(p[:n], 4); ok && string(mid) != "video" {
			t.Fatalf("%d bytes: mid %q", n, mid)
		}
	}
	if mid, ok := midOf(p, 4); !ok || string(mid) != "video" {
		t.Fatalf("mid %q %v", mid, ok)
	}
}

// Whatever arrives, Route finds a section or none, and never panics.
func FuzzBundleRoute(f *testing.F) {
	f.Add([]byte{0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xBE, 0xDE, 0, 1, 0x41, 'v', 0, 0})
	rr, _ := (&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 2222}}}).Marshal()
	f.Add(rr)
	b := NewBundle(4, []BundleSection{{Mid: "a", PTs: []uint8{111}}, {Mid: "v", PTs: []uint8{96}, SSRCs: []uint32{2222}}})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if got := b.Route(pkt); got < -1 || got > 1 {
			t.Fatalf("section %d", got)
		}
	})
}

// bundledCall is a browser's two sections on one transport (a: audio,
// the transport; rider: video, never read from the network) toward a
// phone's two m= lines (b and video, on sockets of their own).
type bundledCall struct {
	*call
	rider, video *Stream
	pv           *phone // the phone's video socket
}

func newBundledCall(t testing.TB, lo int) *bundledCall {
	t.Helper()
	alloc := anchorPorts(t, lo)
	c := &bundledCall{call: newCall(t, alloc, Options{}, netip.AddrPort{}), pv: newPhone(t)}
	for _, s := range []**Stream{&c.rider, &c.video} {
		p, err := alloc.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		if *s, err = NewStream(p, Options{}); err != nil {
			t.Fatal(err)
		}
		st := *s
		t.Cleanup(func() { alloc.Release(p); st.Wait() })
	}
	c.video.SetEndpoint(c.pv.addr(), netip.AddrPort{})
	c.rider.SetPeer(c.video) // the browser's video goes to the phone's video m= line
	c.video.SetPeer(c.a)     // and the phone's video to the browser on the transport
	c.a.SetMux(true)
	c.a.SetBundle(NewBundle(0, []BundleSection{{Stream: c.a, Mid: "0", PTs: []uint8{111}}, {Stream: c.rider, Mid: "1", PTs: []uint8{96}, From: c.video}}))
	c.rider.Start()
	c.video.Start()
	return c
}

func vp8Packet(seq uint16) []byte {
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, SSRC: 0x5678}, Payload: bytes.Repeat([]byte{0x10, byte(seq)}, 100)}
	b, _ := p.Marshal()
	return b
}

// What the browser sends on the transport reaches the phone's m= line of
// its section, measured and counted on that section's stream; what the
// phone sends on either m= line reaches the browser from the transport's
// port.
func TestBundleForwardsEachSectionToItsOwn(t *testing.T) {
	c := newBundledCall(t, 38000)
	for seq := uint16(1); seq <= 20; seq++ {
		c.pa.send(c.portA(), vp8Packet(seq))
		if got, from, ok := c.pv.recv(time.Second); !ok || !bytes.Equal(got, vp8Packet(seq)) || from.Port() != uint16(c.video.Port()) {
			t.Fatalf("video %d: ok=%v from %s, want it from the phone's video m= line's port %d", seq, ok, from, c.video.Port())
		}
		c.pa.send(c.portA(), opusPacket(seq))
		if got, _, ok := c.pb.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(seq)) {
			t.Fatalf("audio %d did not reach the phone's audio m= line", seq)
		}
	}
	audio, _ := c.a.Stats()
	video, _ := c.rider.Stats()
	if audio.Packets != 20 || video.Packets != 20 || c.a.ReceptionSnapshot().Received != 20 || c.rider.ReceptionSnapshot().Received != 20 {
		t.Fatalf("audio %+v %+v, video %+v %+v: want 20 packets each, each section its own", audio, c.a.ReceptionSnapshot(), video, c.rider.ReceptionSnapshot())
	}
	c.pv.send(netip.AddrPortFrom(loopback, uint16(c.video.Port())), vp8Packet(1))
	if got, from, ok := c.pa.recv(time.Second); !ok || !bytes.Equal(got, vp8Packet(1)) || from != c.portA() {
		t.Fatalf("the phone's video: ok=%v from %s, want it from the transport %s", ok, from, c.portA())
	}
	// The browser's feedback on that video (a PLI from its audio's
	// source) goes to the phone's video m= line's RTCP.
	rtcpV := newPhone(t)
	c.video.SetEndpoint(c.pv.addr(), rtcpV.addr())
	pli, _ := (&rtcp.PictureLossIndication{SenderSSRC: 0x1234, MediaSSRC: 0x5678}).Marshal()
	c.pa.send(c.portA(), pli)
	if got, _, ok := rtcpV.recv(time.Second); !ok || !bytes.Equal(got, pli) {
		t.Fatalf("the PLI did not reach the phone's video RTCP (ok=%v)", ok)
	}
}

// BenchmarkForwardBundled is BenchmarkForward through a bundle's
// transport to its second section: allocs/op must stay 0.
func BenchmarkForwardBundled(b *testing.B) {
	c := newBundledCall(b, 38200)
	pkt := vp8Packet(1)
	buf := make([]byte, 2048)
	dst := c.portA()
	for i := 0; i < 100; i++ {
		c.pa.send(dst, pkt)
		c.pv.recv(time.Second)
	}
	_ = c.pv.conn.SetReadDeadline(time.Time{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.pa.conn.WriteToUDPAddrPort(pkt, dst); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.pv.conn.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
}
