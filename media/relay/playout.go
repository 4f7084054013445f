package relay

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/opus"
)

// With a jitter buffer, a stream's RTP from its phone is not forwarded as
// it arrives: the pump copies each packet into a pooled buffer and pushes
// it into the stream's jitter.Buffer, and a player goroutine sends each
// one out of the peer's socket at its playout time.

type playout struct {
	mu   sync.Mutex
	buf  *jitter.Buffer
	wake chan struct{}
	stop chan struct{}
	once sync.Once
	mode jitter.Mode
	max  time.Duration
}

// packetPool holds the copies of packets waiting in jitter buffers.
var packetPool = sync.Pool{New: func() any { b := make([]byte, 2048); return &b }}

// rtpPayload is the payload of an RTP packet: after the CSRCs and any
// header extension, before any padding (RFC 3550 §5.1).
func rtpPayload(b []byte) ([]byte, bool) {
	n := 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 { // extension
		if len(b) < n+4 {
			return nil, false
		}
		n += 4 + 4*int(binary.BigEndian.Uint16(b[n+2:n+4]))
	}
	end := len(b)
	if b[0]&0x20 != 0 && end > 0 { // padding
		end -= int(b[end-1])
	}
	if n > end {
		return nil, false
	}
	return b[n:end], true
}

// isRTP: version 2 with a full header; anything else on the RTP port
// (STUN, keepalives) is relayed as it comes.
func isRTP(b []byte) bool { return len(b) >= 12 && b[0]>>6 == 2 }

// enqueue puts one RTP packet from the phone into the jitter buffer; it
// reports false when the buffer refused it (late, duplicate).
func (s *Stream) enqueue(b []byte, now time.Time) bool {
	if len(b) < 12 {
		return false
	}
	p := packetPool.Get().(*[]byte)
	n := copy(*p, b)
	pkt := jitter.Packet{
		SSRC: binary.BigEndian.Uint32(b[8:12]), Seq: binary.BigEndian.Uint16(b[2:4]), TS: binary.BigEndian.Uint32(b[4:8]),
		Marker: b[1]&0x80 != 0, Payload: (*p)[:n],
	}
	if int(b[1]&0x7f) == s.opts.OpusPT {
		if payload, ok := rtpPayload(b); ok {
			pkt.Samples, _ = opus.Samples(payload)
		}
	}
	s.play.mu.Lock()
	r := s.play.buf.Push(pkt, now)
	s.play.mu.Unlock()
	if r != jitter.Queued {
		packetPool.Put(p)
		return false
	}
	select {
	case s.play.wake <- struct{}{}:
	default:
	}
	return true
}

// player sends what the jitter buffer releases, at its playout time.
func (s *Stream) player() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		s.play.mu.Lock()
		for {
			pkt, ok := s.play.buf.Pop(now)
			if !ok {
				break
			}
			s.play.mu.Unlock()
			s.sendPlayed(pkt.Payload)
			buf := pkt.Payload[:cap(pkt.Payload)]
			packetPool.Put(&buf)
			s.play.mu.Lock()
		}
		next, ok := s.play.buf.NextDeadline()
		s.play.mu.Unlock()
		wait := time.Hour
		if ok {
			wait = max(time.Until(next), 0)
		}
		t.Reset(wait)
		select {
		case <-s.play.stop:
			return
		case <-s.play.wake:
		case <-t.C:
		}
	}
}

func (s *Stream) sendPlayed(b []byte) {
	sock, dst, ok := s.out(false)
	if !ok {
		s.rtp.errors.Add(1)
		return
	}
	if _, err := sock.conn.WriteToUDPAddrPort(b, dst); err != nil {
		s.rtp.errors.Add(1)
	}
}

// Stop ends the stream's player; the pumps end when its sockets close.
func (s *Stream) Stop() {
	if s.play != nil {
		s.play.once.Do(func() { close(s.play.stop) })
	}
}

// JitterFigures returns the jitter buffer's part of the stream's report.
func (s *Stream) JitterFigures() JitterFigures {
	if s.play == nil {
		return JitterFigures{}
	}
	s.play.mu.Lock()
	st := s.play.buf.Stats()
	s.play.mu.Unlock()
	f := JitterFigures{Discarded: st.Late, Nominal: st.Delay, Maximum: st.MaxDelay, AbsMax: s.play.max, RXConfig: 2 << 4}
	if s.play.mode == jitter.Adaptive {
		f.RXConfig = 3 << 4 // RFC 3611 §4.7.6 JBA: adaptive
	}
	return f
}

// JitterStats returns the jitter buffer's counters (false: no buffer).
func (s *Stream) JitterStats() (jitter.Stats, bool) {
	if s.play == nil {
		return jitter.Stats{}, false
	}
	s.play.mu.Lock()
	defer s.play.mu.Unlock()
	return s.play.buf.Stats(), true
}
