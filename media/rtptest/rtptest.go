// Package rtptest is a phone's RTP for tests: a stream of 20 ms Opus
// packets sent from a UDP socket on 127.0.0.1 to a target (an anchor's
// port, mostly), paced as a phone talks, and a record of the RTP that
// socket receives.
package rtptest

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
)

const (
	// Frame is the audio one packet carries, and so the time between two.
	Frame = 20 * time.Millisecond
	// OpusPT is the payload type the streams send and keep.
	OpusPT = 111
	// samplesPerFrame is a frame's RTP timestamp step at 48 kHz.
	samplesPerFrame = 960
)

// Pace calls send once a frame, from another goroutine, until stop is
// called; stop returns once send has returned for the last time, and
// may be called again.
func Pace(send func()) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(Frame)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				send()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

// OpusPacket is an RTP packet of payload type OpusPT: sequence number
// seq, timestamp seq frames on, 80 bytes of an Opus TOC (a 20 ms CELT
// frame) and filler.
func OpusPacket(seq uint16, ssrc uint32) rtp.Packet {
	payload := make([]byte, 80)
	payload[0] = 0xfc
	for i := 1; i < len(payload); i++ {
		payload[i] = byte(seq)
	}
	return rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: OpusPT, SequenceNumber: seq, Timestamp: uint32(seq) * samplesPerFrame, SSRC: ssrc}, Payload: payload}
}

// Opus is OpusPacket on the wire.
func Opus(seq uint16, ssrc uint32) []byte {
	p := OpusPacket(seq, ssrc)
	b, _ := p.Marshal()
	return b
}

// Arrival is one RTP packet a Stream received.
type Arrival struct {
	At   time.Time
	From netip.AddrPort // an IPv4 address as such, not mapped
	SSRC uint32
	Seq  uint16
}

// Stream is one phone's media: Send sends its next packet to the
// target, and every packet of payload type OpusPT that comes in is kept
// (anything else, such as an anchor's RTCP, is passed over).
type Stream struct {
	SSRC uint32
	conn *net.UDPConn

	mu       sync.Mutex
	target   netip.AddrPort
	seq      uint16 // the last one sent
	arrivals []Arrival
	news     chan struct{} // closed, and made anew, at each arrival
}

// New opens a stream's socket on 127.0.0.1 and starts receiving; the
// socket closes when the test ends.
func New(t testing.TB, ssrc uint32) *Stream {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &Stream{SSRC: ssrc, conn: c, news: make(chan struct{})}
	go s.receive()
	return s
}

// Addr is the stream's own address, where its peer sends.
func (s *Stream) Addr() netip.AddrPort { return s.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Port is Addr's port, as an SDP's m= line has it.
func (s *Stream) Port() int { return int(s.Addr().Port()) }

// SetTarget is where Send sends from now on.
func (s *Stream) SetTarget(a netip.AddrPort) {
	s.mu.Lock()
	s.target = a
	s.mu.Unlock()
}

// Target is where Send sends.
func (s *Stream) Target() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.target
}

// Send sends the next packet, numbered from 1, to the target; with no
// target yet it sends nothing.
func (s *Stream) Send() error {
	s.mu.Lock()
	to := s.target
	if !to.IsValid() {
		s.mu.Unlock()
		return nil
	}
	s.seq++
	seq := s.seq
	s.mu.Unlock()
	_, err := s.conn.WriteToUDPAddrPort(Opus(seq, s.SSRC), to)
	return err
}

// Sent is the sequence number of the last packet sent, 0 before the first.
func (s *Stream) Sent() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// Arrivals is what came in so far, in order.
func (s *Stream) Arrivals() []Arrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Arrival(nil), s.arrivals...)
}

// Last is the latest arrival, and false before the first.
func (s *Stream) Last() (Arrival, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.arrivals) == 0 {
		return Arrival{}, false
	}
	return s.arrivals[len(s.arrivals)-1], true
}

// Await is the first arrival, past or to come within d, that match
// accepts; false if none came in time.
func (s *Stream) Await(d time.Duration, match func(Arrival) bool) (Arrival, bool) {
	timeout := time.After(d)
	for seen := 0; ; {
		s.mu.Lock()
		for ; seen < len(s.arrivals); seen++ {
			if a := s.arrivals[seen]; match(a) {
				s.mu.Unlock()
				return a, true
			}
		}
		news := s.news
		s.mu.Unlock()
		select {
		case <-news:
		case <-timeout:
			return Arrival{}, false
		}
	}
}

func (s *Stream) receive() {
	buf := make([]byte, 2048)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed at the end of the test
		}
		var p rtp.Packet
		if p.Unmarshal(buf[:n]) != nil || p.PayloadType != OpusPT {
			continue
		}
		a := Arrival{At: time.Now(), From: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), SSRC: p.SSRC, Seq: p.SequenceNumber}
		s.mu.Lock()
		s.arrivals = append(s.arrivals, a)
		close(s.news)
		s.news = make(chan struct{})
		s.mu.Unlock()
	}
}
