package relay

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/opus"
)

// With a jitter buffer, a stream's RTP from its phone is not forwarded as
// it arrives: the pump copies each packet into a pooled buffer and pushes
// it into the stream's jitter.Buffer, and each one is sent out of the
// peer's socket at its playout time: on Linux by the stream's worker,
// whose one scheduler serves all its streams (worker_linux.go), elsewhere
// by a player goroutine per stream (pump_other.go).

type playout struct {
	mu   sync.Mutex
	buf  *jitter.Buffer
	mode jitter.Mode
	max  time.Duration

	halted atomic.Bool // Stop was called
	once   sync.Once

	// Linux: when the worker's scheduler looks at the buffer next (unix
	// nanoseconds, 0: not scheduled); the worker goroutine's own.
	schedAt int64

	// Elsewhere: the player goroutine's signals.
	wake chan struct{}
	stop chan struct{}
}

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

// enqueue puts one RTP packet from the phone into the jitter buffer, as a
// copy in store (cap(store) >= len(b)), which the buffer then holds; it
// reports false when the buffer refused it (late, duplicate: store is the
// caller's again), and when the buffer's next packet is due (unix
// nanoseconds; 0: none).
func (s *Stream) enqueue(b []byte, now time.Time, store []byte) (due int64, ok bool) {
	if len(b) < 12 {
		return 0, false
	}
	pkt := jitter.Packet{
		SSRC: binary.BigEndian.Uint32(b[8:12]), Seq: binary.BigEndian.Uint16(b[2:4]), TS: binary.BigEndian.Uint32(b[4:8]),
		Marker: b[1]&0x80 != 0, Payload: store[:copy(store[:len(b)], b)],
	}
	if int(b[1]&0x7f) == s.opts.OpusPT {
		if payload, ok := rtpPayload(b); ok {
			pkt.Samples, _ = opus.Samples(payload)
		}
	}
	s.play.mu.Lock()
	r := s.play.buf.Push(pkt, now)
	if r == jitter.Queued {
		if d, ok := s.play.buf.NextDeadline(); ok {
			due = d.UnixNano()
		}
	}
	s.play.mu.Unlock()
	if r != jitter.Queued {
		return 0, false
	}
	return due, true
}

// Stop ends the stream's playout; the pumps end when its sockets close.
func (s *Stream) Stop() {
	if s.play != nil {
		s.play.halted.Store(true)
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
