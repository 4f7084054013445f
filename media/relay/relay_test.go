package relay

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/ports"
)

// phone is a UA's media socket on loopback.
type phone struct {
	t    testing.TB
	conn *net.UDPConn
}

func newPhone(t testing.TB) *phone {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &phone{t: t, conn: c}
}

func (p *phone) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *phone) send(to netip.AddrPort, b []byte) {
	p.t.Helper()
	if _, err := p.conn.WriteToUDPAddrPort(b, to); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next datagram and its source, or ok false after wait.
func (p *phone) recv(wait time.Duration) ([]byte, netip.AddrPort, bool) {
	buf := make([]byte, 2048)
	_ = p.conn.SetReadDeadline(time.Now().Add(wait))
	n, from, err := p.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, netip.AddrPort{}, false
	}
	return buf[:n], from, true
}

type call struct {
	a, b   *Stream
	pa, pb *phone
}

var loopback = netip.MustParseAddr("127.0.0.1")

func anchorPorts(t testing.TB, lo int) *ports.Allocator {
	t.Helper()
	a, err := ports.New(loopback, lo, lo+199)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close) // the parked pairs, after everything else
	return a
}

// newCall links two streams as an offer/answer would; sdpA is where phone
// A said it receives (its real socket unless a NAT test says otherwise).
func newCall(t testing.TB, alloc *ports.Allocator, o Options, sdpA netip.AddrPort) *call {
	t.Helper()
	c := &call{pa: newPhone(t), pb: newPhone(t)}
	for _, s := range []**Stream{&c.a, &c.b} {
		p, err := alloc.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		if *s, err = NewStream(p, o); err != nil {
			t.Fatal(err)
		}
		st := *s
		t.Cleanup(func() { alloc.Release(p); st.Wait() })
	}
	if !sdpA.IsValid() {
		sdpA = c.pa.addr()
	}
	c.a.SetEndpoint(sdpA, netip.AddrPortFrom(sdpA.Addr(), sdpA.Port()+1))
	c.b.SetEndpoint(c.pb.addr(), netip.AddrPort{})
	c.a.SetPeer(c.b)
	c.b.SetPeer(c.a)
	c.a.Start()
	c.b.Start()
	return c
}

func (c *call) portA() netip.AddrPort { return netip.AddrPortFrom(loopback, uint16(c.a.Port())) }
func (c *call) portB() netip.AddrPort { return netip.AddrPortFrom(loopback, uint16(c.b.Port())) }

func opusPacket(seq uint16) []byte {
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 0x1234}, Payload: bytes.Repeat([]byte{0xfc, byte(seq)}, 40)}
	b, _ := p.Marshal()
	return b
}

func TestRelayBothWaysFromTheAnchorsAddress(t *testing.T) {
	c := newCall(t, anchorPorts(t, 41200), Options{}, netip.AddrPort{})
	for seq := uint16(1); seq <= 50; seq++ {
		c.pa.send(c.portA(), opusPacket(seq))
		got, from, ok := c.pb.recv(time.Second)
		if !ok || !bytes.Equal(got, opusPacket(seq)) || from != c.portB() {
			t.Fatalf("A→B packet %d: ok=%v from %s (want %s), same=%v", seq, ok, from, c.portB(), bytes.Equal(got, opusPacket(seq)))
		}
		c.pb.send(c.portB(), opusPacket(1000+seq))
		got, from, ok = c.pa.recv(time.Second)
		if !ok || !bytes.Equal(got, opusPacket(1000+seq)) || from != c.portA() {
			t.Fatalf("B→A packet %d: ok=%v from %s (want %s)", seq, ok, from, c.portA())
		}
	}
	// RTCP goes RTCP port to RTCP port.
	rtcpPhoneB := newPhone(t)
	c.b.SetEndpoint(c.pb.addr(), rtcpPhoneB.addr())
	c.pa.send(netip.AddrPortFrom(loopback, uint16(c.a.Port()+1)), []byte{0x81, 201, 0, 1, 0, 0, 0, 1})
	if got, from, ok := rtcpPhoneB.recv(time.Second); !ok || got[1] != 201 || from.Port() != uint16(c.b.Port()+1) {
		t.Fatalf("RTCP: ok=%v from %s", ok, from)
	}
	rtpA, rtcpA := c.a.Stats()
	rtpB, _ := c.b.Stats()
	if rtpA.Packets != 50 || rtpA.Bytes != 50*uint64(len(opusPacket(1))) || rtpA.Errors != 0 || rtcpA.Packets != 1 || rtpB.Packets != 50 {
		t.Fatalf("stats A %+v/%+v B %+v", rtpA, rtcpA, rtpB)
	}
	if time.Since(c.a.LastPacket()) > 5*time.Second {
		t.Fatal("last packet time not kept")
	}
}

func TestLatchingFindsAPhoneBehindNAT(t *testing.T) {
	// Phone A's SDP names an address where it does not listen.
	nowhere := newPhone(t)
	c := newCall(t, anchorPorts(t, 41400), Options{}, nowhere.addr())
	c.pb.send(c.portB(), opusPacket(1))
	if _, _, ok := nowhere.recv(time.Second); !ok {
		t.Fatal("before A sent anything, its SDP address is all there is")
	}
	c.pa.send(c.portA(), opusPacket(2)) // A's first packet: learned
	if _, _, ok := c.pb.recv(time.Second); !ok {
		t.Fatal("A's packet not forwarded")
	}
	c.pb.send(c.portB(), opusPacket(3))
	if got, _, ok := c.pa.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(3)) {
		t.Fatal("B's packet did not follow A's real address")
	}
	if ep, _ := c.a.Endpoint(); ep != c.pa.addr() {
		t.Fatalf("endpoint %s, want %s", ep, c.pa.addr())
	}
	// Without strict-source, a second source is forwarded but not learned.
	other := newPhone(t)
	other.send(c.portA(), opusPacket(4))
	if _, _, ok := c.pb.recv(time.Second); !ok {
		t.Fatal("packet from a second source dropped without strict-source")
	}
	if ep, _ := c.a.Endpoint(); ep != c.pa.addr() {
		t.Fatal("a second source took over the stream")
	}
}

func TestStrictSourceDropsStrangers(t *testing.T) {
	c := newCall(t, anchorPorts(t, 41600), Options{StrictSource: true}, netip.AddrPort{})
	stranger := newPhone(t)
	stranger.send(c.portA(), opusPacket(1))
	if _, _, ok := c.pb.recv(200 * time.Millisecond); ok {
		t.Fatal("a packet from outside the SDP address was forwarded")
	}
	c.pa.send(c.portA(), opusPacket(2))
	if got, _, ok := c.pb.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(2)) {
		t.Fatal("the phone's own packet was not forwarded")
	}
	stranger.send(c.portA(), opusPacket(3))
	if _, _, ok := c.pb.recv(200 * time.Millisecond); ok {
		t.Fatal("a stranger's packet was forwarded after latching")
	}
	if rtp, _ := c.a.Stats(); rtp.Packets != 3 || rtp.Errors != 2 {
		t.Fatalf("stats %+v", rtp)
	}
}

func TestHandoverFollowsTheNewAddress(t *testing.T) {
	c := newCall(t, anchorPorts(t, 41800), Options{Handover: true}, netip.AddrPort{})
	c.pa.send(c.portA(), opusPacket(1))
	c.pb.recv(time.Second)
	lte := newPhone(t) // the phone moved networks
	lte.send(c.portA(), opusPacket(2))
	c.pb.recv(time.Second)
	c.pb.send(c.portB(), opusPacket(3))
	if _, _, ok := lte.recv(time.Second); !ok {
		t.Fatal("media did not follow the phone to its new address")
	}
}

// BenchmarkForward sends one packet through the anchor and waits for it:
// allocs/op covers the pump, and must stay 0.
func BenchmarkForward(b *testing.B) {
	c := newCall(b, anchorPorts(b, 42000), Options{}, netip.AddrPort{})
	pkt := opusPacket(1)
	buf := make([]byte, 2048)
	dst := c.portA()
	// Warm up: latch, and fill the buffer pool.
	for i := 0; i < 100; i++ {
		c.pa.send(dst, pkt)
		c.pb.recv(time.Second)
	}
	_ = c.pb.conn.SetReadDeadline(time.Time{}) // recv left one
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.pa.conn.WriteToUDPAddrPort(pkt, dst); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.pb.conn.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRTCPMuxMeetsAPhoneWithout(t *testing.T) {
	c := newCall(t, anchorPorts(t, 42400), Options{}, netip.AddrPort{})
	// A multiplexes (a=rtcp-mux): RTCP to and from its RTP address. B does not.
	c.a.SetMux(true)
	c.a.SetEndpoint(c.pa.addr(), c.pa.addr())
	rtcpB := newPhone(t)
	c.b.SetEndpoint(c.pb.addr(), rtcpB.addr())
	sr := []byte{0x80, 200, 0, 6, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	c.pa.send(c.portA(), sr) // RTCP on A's RTP port
	if got, from, ok := rtcpB.recv(time.Second); !ok || got[1] != 200 || from.Port() != uint16(c.b.Port()+1) {
		t.Fatalf("A's multiplexed RTCP: ok=%v from %s, want B's RTCP port", ok, from)
	}
	c.pa.send(c.portA(), opusPacket(1)) // and RTP still goes to B's RTP port
	if got, _, ok := c.pb.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(1)) {
		t.Fatal("A's RTP did not reach B's RTP port")
	}
	rtcpB.send(netip.AddrPortFrom(loopback, uint16(c.b.Port()+1)), sr) // B's RTCP on its RTCP port
	if got, from, ok := c.pa.recv(time.Second); !ok || got[1] != 200 || from != c.portA() {
		t.Fatalf("B's RTCP: ok=%v from %s, want A's (multiplexed) RTP port %s", ok, from, c.portA())
	}
}

func TestReceptionStatisticsPerHop(t *testing.T) {
	c := newCall(t, anchorPorts(t, 42600), Options{}, netip.AddrPort{})
	sent := 0
	for seq := uint16(1); seq <= 200; seq++ {
		if seq%20 == 7 {
			continue // lost between phone A and the anchor: 5 %
		}
		c.pa.send(c.portA(), opusPacket(seq))
		c.pb.recv(time.Second)
		sent++
	}
	for seq := uint16(1); seq <= 50; seq++ {
		c.pb.send(c.portB(), opusPacket(seq))
		c.pa.recv(time.Second)
	}
	a, b := c.a.Reception(), c.b.Reception()
	if a.Expected != 200 || a.Lost != 10 || a.FractionLost != 12 || a.Received != uint32(sent) || a.SSRC != 0x1234 {
		t.Fatalf("A→anchor %+v", a)
	}
	if b.Expected != 50 || b.Lost != 0 || b.FractionLost != 0 {
		t.Fatalf("B→anchor %+v", b)
	}
}

func TestAnchorReportsAndRoundTrip(t *testing.T) {
	c := newCall(t, anchorPorts(t, 42800), Options{}, netip.AddrPort{})
	rtcpA, rtcpB := newPhone(t), newPhone(t)
	c.a.SetEndpoint(c.pa.addr(), rtcpA.addr())
	c.b.SetEndpoint(c.pb.addr(), rtcpB.addr())
	for seq := uint16(0); seq < 200; seq++ {
		if seq%20 == 3 {
			continue // 5 % lost on A's uplink
		}
		c.pa.send(c.portA(), opusPacket(seq))
		c.pb.recv(time.Second)
	}
	// B sends an SR; the anchor forwards it to A; A answers with an RR
	// naming it 10 ms later: the anchor learns the round trip to A.
	sr := &rtcp.SenderReport{SSRC: 0xb0b, NTPTime: 0x0123456789abcdef}
	raw, _ := sr.Marshal()
	rtcpB.send(netip.AddrPortFrom(loopback, uint16(c.b.Port()+1)), raw)
	if _, _, ok := rtcpA.recv(time.Second); !ok {
		t.Fatal("B's SR not relayed to A")
	}
	time.Sleep(30 * time.Millisecond)
	rr := &rtcp.ReceiverReport{SSRC: 0xa11ce, Reports: []rtcp.ReceptionReport{{SSRC: 0xb0b, FractionLost: 3, LastSenderReport: 0x456789ab, Delay: 655}}} // 10 ms
	raw, _ = rr.Marshal()
	rtcpA.send(netip.AddrPortFrom(loopback, uint16(c.a.Port()+1)), raw)
	if _, _, ok := rtcpB.recv(time.Second); !ok {
		t.Fatal("A's RR not relayed to B")
	}
	down := c.a.Downstream()
	if !down.Known || down.Report.FractionLost != 3 || down.RTT < 15*time.Millisecond || down.RTT > 200*time.Millisecond {
		t.Fatalf("downstream %+v", down)
	}

	b, rep, ok := c.a.Report(time.Now(), JitterFigures{})
	if !ok || rep.Lost != 10 {
		t.Fatalf("report %+v %v", rep, ok)
	}
	if err := c.a.SendRTCP(b); err != nil {
		t.Fatal(err)
	}
	got, from, ok := rtcpA.recv(time.Second)
	if !ok || from.Port() != uint16(c.a.Port()+1) {
		t.Fatalf("anchor's report: ok=%v from %s", ok, from)
	}
	pkts, err := rtcp.Unmarshal(got)
	if err != nil || len(pkts) != 3 {
		t.Fatalf("%v %v", pkts, err)
	}
	rrOut, ok1 := pkts[0].(*rtcp.ReceiverReport)
	xr, ok2 := pkts[2].(*rtcp.ExtendedReport)
	if !ok1 || !ok2 || len(rrOut.Reports) != 1 || len(xr.Reports) != 1 {
		t.Fatalf("compound %v", pkts)
	}
	block := rrOut.Reports[0]
	if block.SSRC != 0x1234 || block.FractionLost != 12 || block.TotalLost != 10 || block.LastSequenceNumber != 199 {
		t.Fatalf("reception block %+v", block)
	}
	voip, ok := xr.Reports[0].(*rtcp.VoIPMetricsReportBlock)
	// Lone losses every 20 packets: all in the gap, no burst.
	if !ok || voip.SSRC != 0x1234 || voip.LossRate != 12 || voip.MOSLQ < 35 || voip.MOSLQ > 42 || voip.RoundTripDelay < 15 ||
		voip.BurstDensity != 0 || voip.GapDensity != 12 || voip.GapDuration != 4000 {
		t.Fatalf("VoIP metrics %+v", xr.Reports[0])
	}
}

func TestJitterBufferReordersAndPaces(t *testing.T) {
	alloc := anchorPorts(t, 43000)
	c := &call{pa: newPhone(t), pb: newPhone(t)}
	// 120 ms: room for the sender's own scheduling delays on a loaded
	// machine (a packet later than its playout is dropped, by design).
	jb := &jitter.Config{Mode: jitter.Fixed, Target: 120 * time.Millisecond}
	for i, s := range []**Stream{&c.a, &c.b} {
		p, err := alloc.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		o := Options{}
		if i == 0 {
			o.Jitter = jb // A's uplink goes through the buffer
		}
		if *s, err = NewStream(p, o); err != nil {
			t.Fatal(err)
		}
		st := *s
		t.Cleanup(func() { st.Stop(); alloc.Release(p); st.Wait() })
	}
	c.a.SetEndpoint(c.pa.addr(), netip.AddrPort{})
	c.b.SetEndpoint(c.pb.addr(), netip.AddrPort{})
	c.a.SetPeer(c.b)
	c.b.SetPeer(c.a)
	c.a.Start()
	c.b.Start()

	// 30 packets 20 ms apart, each pair swapped (the first one too), and
	// one sent twice.
	order := []uint16{}
	for i := uint16(0); i < 30; i += 2 {
		order = append(order, i+1, i)
	}
	start := time.Now()
	received := make(chan []byte, 64)
	go func() {
		for {
			b, _, ok := c.pb.recv(2 * time.Second)
			if !ok {
				close(received)
				return
			}
			received <- b
		}
	}()
	for i, seq := range order {
		time.Sleep(time.Until(start.Add(time.Duration(i) * 20 * time.Millisecond)))
		c.pa.send(c.portA(), opusPacket(seq))
		if i == 9 {
			c.pa.send(c.portA(), opusPacket(seq))
		}
	}
	var got []uint16
	var first time.Time
	for b := range received {
		if first.IsZero() {
			first = time.Now()
		}
		var p rtp.Packet
		if err := p.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
		got = append(got, p.SequenceNumber)
	}
	for i := range got {
		if got[i] != uint16(i) {
			t.Fatalf("played %v, want 0..29 in order", got)
		}
	}
	if len(got) != 30 {
		t.Fatalf("played %d packets", len(got))
	}
	if d := first.Sub(start); d < 120*time.Millisecond {
		t.Fatalf("the first packet left after %v, before the 120 ms delay", d)
	}
	st, ok := c.a.JitterStats()
	if !ok || st.Duplicates != 1 || st.Reordered != 15 || st.Played != 30 {
		t.Fatalf("jitter buffer %+v", st)
	}
	if f := c.a.JitterFigures(); f.Nominal != 120*time.Millisecond || f.RXConfig != 0x20 {
		t.Fatalf("figures %+v", f)
	}
}

// Without media-handover, the stream follows the phone only to the address
// its own new SDP names (a re-offer after it moved networks); a stranger
// sending from elsewhere does not take it.
func TestHandoverTiedToTheSignalling(t *testing.T) {
	c := newCall(t, anchorPorts(t, 42200), Options{}, netip.AddrPort{})
	c.pa.send(c.portA(), opusPacket(1))
	c.pb.recv(time.Second)
	stranger, lte := newPhone(t), newPhone(t)
	stranger.send(c.portA(), opusPacket(2))
	c.pb.recv(time.Second)
	c.pb.send(c.portB(), opusPacket(3))
	if _, _, ok := c.pa.recv(time.Second); !ok {
		t.Fatal("a stranger took the stream")
	}
	// The phone's re-offer names its new address; its packets from there
	// re-latch the stream.
	c.a.SetEndpoint(lte.addr(), netip.AddrPortFrom(lte.addr().Addr(), lte.addr().Port()+1))
	lte.send(c.portA(), opusPacket(4))
	c.pb.recv(time.Second)
	c.pb.send(c.portB(), opusPacket(5))
	if got, _, ok := lte.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(5)) {
		t.Fatal("media did not follow the phone to the address its SDP named")
	}
	stranger.send(c.portA(), opusPacket(6))
	c.pb.recv(time.Second)
	if ep, _ := c.a.Endpoint(); ep != lte.addr() {
		t.Fatalf("endpoint %s after a stranger's packet, want %s", ep, lte.addr())
	}
}
