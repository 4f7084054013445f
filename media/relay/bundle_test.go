package relay

import (
	"testing"

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
