package rtptest

import (
	"net"
	"testing"
	"time"

	"github.com/pion/rtp"
)

func TestStreamsTalk(t *testing.T) {
	a, b := New(t, 0xa1), New(t, 0xb2)
	if _, ok := a.Last(); ok || a.Sent() != 0 {
		t.Fatal("a stream new: something received or sent")
	}
	if err := a.Send(); err != nil || a.Sent() != 0 {
		t.Fatalf("a stream with no target sent: %v, %d", err, a.Sent())
	}
	a.SetTarget(b.Addr())
	b.SetTarget(a.Addr())

	// Something other than Opus RTP is passed over.
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{0x81, 200, 0, 1, 0, 0, 0, 1}); err != nil { // an RTCP SR's start
		t.Fatal(err)
	}

	start := time.Now()
	stop := Pace(func() {
		if err := a.Send(); err != nil {
			t.Error(err)
		}
		if err := b.Send(); err != nil {
			t.Error(err)
		}
	})
	defer stop()
	fifth, ok := b.Await(5*time.Second, func(x Arrival) bool { return x.Seq == 5 })
	if !ok {
		t.Fatalf("b got no 5th packet; it got %v", b.Arrivals())
	}
	if fifth.SSRC != 0xa1 || fifth.From != a.Addr() {
		t.Fatalf("b's 5th packet %+v: want a's SSRC from %s", fifth, a.Addr())
	}
	if d := fifth.At.Sub(start); d < 4*Frame {
		t.Fatalf("5 packets in %s: not paced a frame apart", d)
	}
	if _, ok := a.Await(5*time.Second, func(x Arrival) bool { return x.SSRC == 0xb2 && x.From == b.Addr() }); !ok {
		t.Fatal("a got nothing of b's")
	}
	stop()
	stop() // again: no panic, no wait
	sent := a.Sent()
	time.Sleep(3 * Frame)
	if a.Sent() != sent {
		t.Fatal("Pace sent on after stop")
	}
	got := b.Arrivals()
	for i, x := range got {
		if int(x.Seq) != i+1 {
			t.Fatalf("b's arrivals %v: want Opus packets 1, 2, ... only", got)
		}
	}
	if last, _ := b.Last(); last != got[len(got)-1] {
		t.Fatalf("Last %+v, want %+v", last, got[len(got)-1])
	}
	if _, ok := b.Await(2*Frame, func(x Arrival) bool { return int(x.Seq) > len(got) }); ok {
		t.Fatal("Await found a packet never sent")
	}
}

func TestOpus(t *testing.T) {
	var p rtp.Packet
	if err := p.Unmarshal(Opus(7, 0x1234)); err != nil {
		t.Fatal(err)
	}
	if p.Version != 2 || p.PayloadType != OpusPT || p.SequenceNumber != 7 || p.Timestamp != 7*960 || p.SSRC != 0x1234 || len(p.Payload) != 80 || p.Payload[0] != 0xfc {
		t.Fatalf("Opus(7, 0x1234): %+v", p)
	}
}
