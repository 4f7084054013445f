package phone

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// fakeAnchor is the other end of a phone's media: an RTP socket and the
// RTCP socket above it.
type fakeAnchor struct {
	rtp, rtcp *net.UDPConn
}

func newFakeAnchor(t *testing.T) *fakeAnchor {
	t.Helper()
	m, err := openMedia(loopback, "anchor")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.rtpConn.Close(); m.rtcpConn.Close() })
	return &fakeAnchor{rtp: m.rtpConn, rtcp: m.rtcpConn}
}

func (f *fakeAnchor) addr() netip.AddrPort { return f.rtp.LocalAddr().(*net.UDPAddr).AddrPort() }

// The phone numbers every packet, leaves out its uplink share (never the
// first or the last), sends Opus-sized 20 ms packets, and its reports
// count what it dropped of the stream it received.
func TestMediaLossesAndReports(t *testing.T) {
	m, err := openMedia(loopback, "a01")
	if err != nil {
		t.Fatal(err)
	}
	if m.port()%2 != 0 || m.rtcpConn.LocalAddr().(*net.UDPAddr).Port != m.port()+1 {
		t.Fatalf("ports %s %s", m.rtpConn.LocalAddr(), m.rtcpConn.LocalAddr())
	}
	an := newFakeAnchor(t)
	const packets = 100
	leg := Leg{UpLoss: 0.1, DownLoss: 0.2, UpJitter: 5 * time.Millisecond, DownJitter: 10 * time.Millisecond, Seed: 42}
	start := time.Now()
	m.start(context.Background(), an.addr(), leg, packets, 500*time.Millisecond)

	// The anchor's side: our stream to the phone, 100 packets from a
	// random start near the wrap of the sequence numbers.
	go func() {
		phoneAddr := netip.AddrPortFrom(loopback, uint16(m.port()))
		for i := range packets {
			p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: opusPT, SequenceNumber: uint16(65500 + i), Timestamp: uint32(i * tsPerFrame), SSRC: 0xb0b},
				Payload: make([]byte, 70)}
			raw, _ := p.Marshal()
			_, _ = an.rtp.WriteToUDPAddrPort(raw, phoneAddr)
			time.Sleep(ptime)
		}
	}()
	var seqs []uint16
	buf := make([]byte, 2048)
	for len(seqs) < packets {
		_ = an.rtp.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := an.rtp.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		var p rtp.Packet
		if err := p.Unmarshal(buf[:n]); err != nil {
			t.Fatal(err)
		}
		if p.PayloadType != opusPT || p.Payload[0] != opusTOC || len(p.Payload) < 60 || len(p.Payload) > 80 || p.SSRC != m.ssrc {
			t.Fatalf("packet %+v, payload %d bytes", p.Header, len(p.Payload))
		}
		seqs = append(seqs, p.SequenceNumber-m.seq0)
	}
	took := time.Since(start)
	for !m.done() {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	m.report()
	side := m.side()
	if len(seqs) != packets-side.UpDropped || seqs[0] != 0 || seqs[len(seqs)-1] != packets-1 {
		t.Fatalf("the anchor got %d packets (first %d, last %d); the phone left out %d", len(seqs), seqs[0], seqs[len(seqs)-1], side.UpDropped)
	}
	if side.UpDropped < 3 || side.UpDropped > 20 {
		t.Errorf("%d of %d left out at 10 %%", side.UpDropped, packets)
	}
	if took < 1900*time.Millisecond || took > 3*time.Second {
		t.Errorf("100 packets took %v, want 2 s at 50 packets/s", took)
	}
	if side.Received+side.DownDropped != packets || side.DownDropped < 8 || side.DownDropped > 35 {
		t.Errorf("received %d, dropped %d of %d at 20 %%", side.Received, side.DownDropped, packets)
	}

	// Its reports: sender reports with a block on our stream; the last one
	// counts every packet it dropped, with the extended highest sequence
	// number past the wrap and some jitter.
	var last *rtcp.SenderReport
	var cname string
	reports := 0
	for {
		_ = an.rtcp.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := an.rtcp.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		reports++
		for _, p := range pkts {
			switch x := p.(type) {
			case *rtcp.SenderReport:
				last = x
			case *rtcp.SourceDescription:
				cname = string(x.Chunks[0].Items[0].Text)
			}
		}
	}
	if last == nil || reports < 4 || cname != "a01@127.0.0.1" {
		t.Fatalf("%d reports, last SR %v, CNAME %q", reports, last, cname)
	}
	if len(last.Reports) != 1 {
		t.Fatalf("SR %+v", last)
	}
	b := last.Reports[0]
	if b.SSRC != 0xb0b || int(b.TotalLost) != side.DownDropped || b.LastSequenceNumber != 65536+63 || b.Jitter == 0 ||
		last.PacketCount != uint32(packets-side.UpDropped) || int(b.TotalLost) != side.ReportedLost {
		t.Fatalf("the last report %+v (SR %+v), side %+v", b, last, side)
	}
	m.close()

	// The same seed drops the same packets.
	m2, err := openMedia(loopback, "a01")
	if err != nil {
		t.Fatal(err)
	}
	an2 := newFakeAnchor(t)
	m2.start(context.Background(), an2.addr(), leg, packets, 0)
	for !m2.done() {
		time.Sleep(10 * time.Millisecond)
	}
	if s2 := m2.side(); s2.UpDropped != side.UpDropped || m2.ssrc != m.ssrc {
		t.Errorf("seed 42 left out %d, then %d", side.UpDropped, s2.UpDropped)
	}
	m2.close()
}

func TestMediaTarget(t *testing.T) {
	got, err := mediaTarget([]byte("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 30002 RTP/AVP 111\r\n"))
	if err != nil || got != netip.MustParseAddrPort("127.0.0.9:30002") {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", "c=IN IP4 127.0.0.1\r\n", "m=audio 0 RTP/AVP 111\r\nc=IN IP4 127.0.0.1\r\n", "c=IN IP4 x\r\nm=audio 5 RTP/AVP 0\r\n"} {
		if _, err := mediaTarget([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestNTPTime(t *testing.T) {
	tm := time.Date(2026, 12, 1, 0, 0, 0, 500_000_000, time.UTC)
	n := ntpTime(tm)
	if n>>32 != uint64(tm.Unix())+2208988800 || uint32(n) != 1<<31 {
		t.Fatalf("%x", n)
	}
}
