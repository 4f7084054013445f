package phone

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// Leg is how one phone's media behaves in a call: what its access network
// does to the packets it sends (the uplink, phone → anchor) and to those
// it receives (the downlink, anchor → phone).
type Leg struct {
	// PANI is the P-Access-Network-Info the phone sends in its INVITE or
	// 2xx ("" none), e.g. "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=45006...".
	PANI string
	// UpLoss is the share of its packets lost before the anchor: they are
	// numbered but never sent. The first and the last never are, so the
	// anchor counts every packet of the call.
	UpLoss float64
	// DownLoss is the share of the packets reaching it that it loses; its
	// receiver reports count them lost, as a phone's do. The other side's
	// first and last packets are always kept.
	DownLoss float64
	// UpJitter delays each packet it sends by up to this (uniformly), so
	// the anchor measures jitter; keep it under 20 ms to keep the order.
	UpJitter time.Duration
	// DownJitter is added (uniformly, up to it) to each arrival time its
	// jitter figure is computed from: the delay variation of its downlink.
	DownJitter time.Duration
	// Seed is the source of its losses and delays.
	Seed uint64
}

// Side is what one phone did in a call.
type Side struct {
	SSRC uint32
	// Sent is the packets it numbered, first to last: what the anchor
	// expects. UpDropped of them were left out (its uplink loss).
	Sent, UpDropped int
	// Received is the other side's packets that reached it and it kept;
	// DownDropped the ones it dropped (its downlink loss).
	Received, DownDropped int
	// ReportedLost is the cumulative number lost of its last receiver
	// report (everything it did not get: the other side's uplink loss
	// and its own downlink loss), Jitter that report's jitter.
	ReportedLost int
	Jitter       time.Duration
	Reports      int // RTCP compound packets it sent
}

// Packet timing and size: Opus in 20 ms frames at 48 kHz, SILK wideband,
// about 24 kbit/s (60-80 bytes of payload, VBR).
const (
	ptime      = 20 * time.Millisecond
	clockRate  = 48000
	tsPerFrame = clockRate / 50
	opusPT     = 111
	opusTOC    = 9 << 3 // config 9: SILK WB 20 ms, mono, one frame
)

// media is one phone's RTP and RTCP sockets in one call.
type media struct {
	rtpConn, rtcpConn *net.UDPConn
	addr              netip.Addr
	cname             string

	leg      Leg
	packets  int // each side sends this many
	up, down *rand.Rand
	pay      *rand.Rand
	remote   netip.AddrPort // the anchor's RTP port for this phone
	epoch    time.Time

	mu sync.Mutex
	// sending
	ssrc         uint32
	seq0         uint16
	ts0          uint32
	sentPackets  int
	sentOctets   int
	upDropped    int
	lastTS       uint32
	lastSentAt   time.Time
	sendDone     bool
	reportsSent  int
	lastReported rtcp.ReceptionReport
	// receiving
	have                         bool
	peerSSRC                     uint32
	base                         uint16
	maxIdx                       int
	received, downDropped        int
	jitter                       float64 // RFC 3550 J, in timestamp units
	prevArrival                  float64
	prevTS                       uint32
	expectedPrior, receivedPrior int
	lastSR                       uint32
	lastSRAt                     time.Time

	wg sync.WaitGroup
}

// openMedia binds an RTP socket on an even port of addr and its RTCP
// socket on the port above.
func openMedia(addr netip.Addr, user string) (*media, error) {
	for range 200 {
		r, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
		if err != nil {
			return nil, err
		}
		port := r.LocalAddr().(*net.UDPAddr).Port
		if port%2 != 0 || port >= 65535 {
			r.Close()
			continue
		}
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port+1))))
		if err != nil {
			r.Close()
			continue
		}
		return &media{rtpConn: r, rtcpConn: c, addr: addr, cname: user + "@" + addr.String()}, nil
	}
	return nil, fmt.Errorf("no RTP/RTCP port pair free on %s", addr)
}

func (m *media) port() int { return m.rtpConn.LocalAddr().(*net.UDPAddr).Port }

// sdp is the phone's Opus offer or answer.
func (m *media) sdp(session int64) string {
	return fmt.Sprintf("v=0\r\no=- %d 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP %d 101\r\n"+
		"a=rtpmap:%d opus/48000/2\r\na=fmtp:%d minptime=10;useinbandfec=1\r\na=rtpmap:101 telephone-event/48000\r\na=ptime:20\r\na=sendrecv\r\n",
		session, m.addr, m.addr, m.port(), opusPT, opusPT, opusPT)
}

// mediaTarget reads where an SDP body wants audio sent.
func mediaTarget(body []byte) (netip.AddrPort, error) {
	var addr netip.Addr
	port := -1
	for _, line := range strings.Split(string(body), "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "c=IN IP4 "); ok {
			a, err := netip.ParseAddr(strings.TrimSpace(v))
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("SDP c= %q", v)
			}
			addr = a
		}
		if v, ok := strings.CutPrefix(line, "m=audio "); ok && port < 0 {
			f := strings.Fields(v)
			if len(f) == 0 {
				return netip.AddrPort{}, fmt.Errorf("SDP m= %q", v)
			}
			p, err := strconv.Atoi(f[0])
			if err != nil || p <= 0 || p >= 65535 {
				return netip.AddrPort{}, fmt.Errorf("SDP m= port %q", f[0])
			}
			port = p
		}
	}
	if !addr.IsValid() || port < 0 {
		return netip.AddrPort{}, fmt.Errorf("SDP without c= and m=audio:\n%s", body)
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// start begins receiving and sending: the first packet now, one every
// 20 ms, packets in all; reports every rtcpEvery. The readers stop when
// the sockets close.
func (m *media) start(ctx context.Context, remote netip.AddrPort, leg Leg, packets int, rtcpEvery time.Duration) {
	m.leg, m.packets, m.remote = leg, packets, remote
	m.up = rand.New(rand.NewPCG(leg.Seed, 1))
	m.down = rand.New(rand.NewPCG(leg.Seed, 2))
	m.pay = rand.New(rand.NewPCG(leg.Seed, 3))
	m.ssrc = m.pay.Uint32() | 1
	m.seq0 = uint16(m.pay.Uint32())
	m.ts0 = m.pay.Uint32()
	m.epoch = time.Now()
	m.wg.Add(3)
	go func() { defer m.wg.Done(); m.receiveRTP() }()
	go func() { defer m.wg.Done(); m.receiveRTCP() }()
	go func() { defer m.wg.Done(); m.send(ctx, rtcpEvery) }()
}

// send sends the packets, and an RTCP report every rtcpEvery meanwhile.
func (m *media) send(ctx context.Context, rtcpEvery time.Duration) {
	defer func() {
		m.mu.Lock()
		m.sendDone = true
		m.mu.Unlock()
	}()
	start := time.Now()
	nextReport := start.Add(rtcpEvery)
	payload := make([]byte, 100)
	for i := 0; i < m.packets; i++ {
		// Both draws every time, so the losses follow from the seed alone.
		delay := time.Duration(m.up.Int64N(int64(m.leg.UpJitter) + 1))
		drop := m.up.Float64() < m.leg.UpLoss && i != 0 && i != m.packets-1
		at := start.Add(time.Duration(i)*ptime + delay)
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		}
		if rtcpEvery > 0 && !time.Now().Before(nextReport) {
			m.report()
			nextReport = nextReport.Add(rtcpEvery)
		}
		ts := m.ts0 + uint32(i*tsPerFrame)
		if drop {
			m.mu.Lock()
			m.upDropped++
			m.mu.Unlock()
			continue
		}
		size := 60 + m.pay.IntN(21)
		payload[0] = opusTOC
		for j := 1; j < size; j++ {
			payload[j] = byte(m.pay.Uint32())
		}
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: opusPT, SequenceNumber: m.seq0 + uint16(i), Timestamp: ts, SSRC: m.ssrc}, Payload: payload[:size]}
		raw, err := pkt.Marshal()
		if err != nil {
			continue
		}
		if _, err := m.rtpConn.WriteToUDPAddrPort(raw, m.remote); err != nil {
			return
		}
		m.mu.Lock()
		m.sentPackets++
		m.sentOctets += size
		m.lastTS, m.lastSentAt = ts, time.Now()
		m.mu.Unlock()
	}
}

func (m *media) receiveRTP() {
	buf := make([]byte, 2048)
	for {
		n, from, err := m.rtpConn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if from != m.remote {
			continue // only the anchor sends to this port
		}
		var pkt rtp.Packet
		if pkt.Unmarshal(buf[:n]) != nil || pkt.PayloadType != opusPT {
			continue
		}
		m.onRTP(&pkt, time.Now())
	}
}

func (m *media) onRTP(pkt *rtp.Packet, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.have {
		m.have, m.peerSSRC, m.base = true, pkt.SSRC, pkt.SequenceNumber
	}
	if pkt.SSRC != m.peerSSRC {
		return
	}
	idx := int(pkt.SequenceNumber - m.base) // the other side's packet number
	if idx >= m.packets {
		return // older than the first one received (reordered): not counted
	}
	delay := time.Duration(m.down.Int64N(int64(m.leg.DownJitter) + 1))
	if m.down.Float64() < m.leg.DownLoss && idx != 0 && idx != m.packets-1 {
		m.downDropped++
		return
	}
	m.received++
	m.maxIdx = max(m.maxIdx, idx)
	arrival := float64(now.Sub(m.epoch)+delay) * clockRate / float64(time.Second)
	if m.received > 1 {
		d := (arrival - m.prevArrival) - float64(int32(pkt.Timestamp-m.prevTS))
		if d < 0 {
			d = -d
		}
		m.jitter += (d - m.jitter) / 16
	}
	m.prevArrival, m.prevTS = arrival, pkt.Timestamp
}

func (m *media) receiveRTCP() {
	buf := make([]byte, 1500)
	for {
		n, _, err := m.rtcpConn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		now := time.Now()
		for _, p := range pkts {
			// The other phone's sender report, relayed by the anchor: its
			// time goes back in our next report (LSR/DLSR).
			if sr, ok := p.(*rtcp.SenderReport); ok {
				m.mu.Lock()
				if sr.SSRC == m.peerSSRC || !m.have {
					m.lastSR, m.lastSRAt = uint32(sr.NTPTime>>16), now
				}
				m.mu.Unlock()
			}
		}
	}
}

// ntpTime is t as a 64-bit NTP timestamp.
func ntpTime(t time.Time) uint64 {
	const unixToNTP = 2208988800
	sec := uint64(t.Unix()) + unixToNTP
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return sec<<32 | frac
}

// report sends one RTCP compound packet to the anchor: a sender report
// (a receiver report before the phone sent anything) with a reception
// report block on the other side's stream once it has one, and its CNAME.
func (m *media) report() {
	now := time.Now()
	m.mu.Lock()
	var blocks []rtcp.ReceptionReport
	if m.have {
		expected := m.maxIdx + 1
		lost := max(expected-m.received, 0)
		expInt, recInt := expected-m.expectedPrior, m.received-m.receivedPrior
		m.expectedPrior, m.receivedPrior = expected, m.received
		var fraction uint8
		if lostInt := expInt - recInt; expInt > 0 && lostInt > 0 {
			fraction = uint8(min(lostInt*256/expInt, 255))
		}
		var dlsr uint32
		if !m.lastSRAt.IsZero() {
			dlsr = uint32(now.Sub(m.lastSRAt) * 65536 / time.Second)
		}
		b := rtcp.ReceptionReport{SSRC: m.peerSSRC, FractionLost: fraction, TotalLost: uint32(lost) & 0xffffff,
			LastSequenceNumber: uint32(m.base) + uint32(m.maxIdx), Jitter: uint32(m.jitter), LastSenderReport: m.lastSR, Delay: dlsr}
		blocks = append(blocks, b)
		m.lastReported = b
	}
	var first rtcp.Packet
	if m.sentPackets > 0 {
		rtpTime := m.lastTS + uint32(now.Sub(m.lastSentAt)*clockRate/time.Second)
		first = &rtcp.SenderReport{SSRC: m.ssrc, NTPTime: ntpTime(now), RTPTime: rtpTime,
			PacketCount: uint32(m.sentPackets), OctetCount: uint32(m.sentOctets), Reports: blocks}
	} else {
		first = &rtcp.ReceiverReport{SSRC: m.ssrc, Reports: blocks}
	}
	m.reportsSent++
	m.mu.Unlock()
	raw, err := rtcp.Marshal([]rtcp.Packet{first, rtcp.NewCNAMESourceDescription(m.ssrc, m.cname)})
	if err != nil {
		return
	}
	_, _ = m.rtcpConn.WriteToUDPAddrPort(raw, netip.AddrPortFrom(m.remote.Addr(), m.remote.Port()+1))
}

// side is what the phone did, so far.
func (m *media) side() Side {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Side{SSRC: m.ssrc, Sent: m.packets, UpDropped: m.upDropped, Received: m.received, DownDropped: m.downDropped,
		ReportedLost: int(m.lastReported.TotalLost), Jitter: time.Duration(m.lastReported.Jitter) * time.Second / clockRate,
		Reports: m.reportsSent}
}

// close closes the sockets and waits for the goroutines.
func (m *media) close() {
	m.rtpConn.Close()
	m.rtcpConn.Close()
	m.wg.Wait()
}
