// Package relay forwards one call's RTP and RTCP between its two legs.
// Each leg's m= section has a Stream: the anchor's socket pair that leg's
// phone sends to, and the phone's address. A packet arriving on one leg's
// Stream leaves from the other leg's Stream, towards the other phone, so
// each phone sees the anchor's same address both ways (symmetric RTP).
package relay

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/rtpstats"
)

// Options of a Stream.
type Options struct {
	// StrictSource drops packets from any address but the learned one
	// (rtpengine's strict-source); otherwise they are forwarded too.
	StrictSource bool
	// Handover re-learns the phone's address whenever packets come from a
	// new one (rtpengine's media-handover: a phone moving from Wi-Fi to LTE).
	Handover bool
	// Jitter puts the phone's RTP through a jitter buffer before it is
	// forwarded; nil (or mode Off): relayed as it arrives.
	Jitter *jitter.Config
	// OpusPT is the payload type the SDP maps to Opus (-1: none): the
	// jitter buffer reads those packets' durations from their TOC byte.
	OpusPT int
}

// Counters are a stream's totals, as rtpengine reports them.
type Counters struct {
	Packets, Bytes, Errors uint64
}

// Stream is one leg's media section on the anchor.
type Stream struct {
	pair     *ports.Pair
	opts     Options
	rtpSock  *socket
	rtcpSock *socket

	peer     atomic.Pointer[Stream]
	expected atomic.Pointer[netip.AddrPort] // from SDP: where the phone said it receives RTP
	latched  atomic.Pointer[netip.AddrPort] // learned from its first packets
	rtcpDest atomic.Pointer[netip.AddrPort] // from SDP a=rtcp, or RTP+1; same as RTP with rtcp-mux
	rtcpSeen atomic.Pointer[netip.AddrPort]

	rtp, rtcp counters
	last      atomic.Int64 // unix nanoseconds of the last packet received
	mux       atomic.Bool  // the phone multiplexes RTCP on its RTP port (a=rtcp-mux)

	statsMu sync.Mutex
	stats   *rtpstats.Receiver // RFC 3550 statistics of the RTP the phone sends

	rtcpState rtcpState
	play      *playout // nil: no jitter buffer

	crypto   atomic.Pointer[legCrypto] // nil: plain RTP (srtp.go)
	cryptoMu sync.Mutex                // SetCrypto
	srtpMu   sync.Mutex                // the SRTP contexts' (legCrypto.mu)
	other    atomic.Pointer[OtherFunc] // an SRTP leg's STUN and DTLS (SetOther)
	ice      atomic.Pointer[iceGate]   // a WebRTC leg's ICE (SetICE); nil: none
	refused  atomic.Bool               // the peer withdrew its consent to receive (SetConsent)
	unkeyed  atomic.Uint64             // packets for the phone dropped before its SRTP keys (Unkeyed)
	bundle   atomic.Pointer[Bundle]    // the sections this stream is the transport of (SetBundle); nil: its own only
	fast     fastState                 // its route in the kernel's fast path (fast.go)

	wg sync.WaitGroup
	streamSys
}

type counters struct{ packets, bytes, errors atomic.Uint64 }

// bufSize is the largest datagram relayed: RTP over Ethernet fits;
// larger datagrams are truncated and dropped.
const bufSize = 2048

func (c *counters) get() Counters {
	return Counters{Packets: c.packets.Load(), Bytes: c.bytes.Load(), Errors: c.errors.Load()}
}

// NewStream wraps an allocated pair.
func NewStream(p *ports.Pair, o Options) (*Stream, error) {
	rtp, err := newSocket(p, false)
	if err != nil {
		return nil, err
	}
	rtcp, err := newSocket(p, true)
	if err != nil {
		rtp.close()
		return nil, err
	}
	s := &Stream{pair: p, opts: o, rtpSock: rtp, rtcpSock: rtcp, stats: rtpstats.New(clockRate)}
	rtp.s, rtcp.s, rtcp.rtcp = s, s, true
	if o.Jitter != nil && o.Jitter.Mode != jitter.Off {
		c := *o.Jitter
		c.ClockRate = clockRate
		s.play = &playout{buf: jitter.New(c), wake: make(chan struct{}, 1), stop: make(chan struct{}), mode: c.Mode, max: c.Max}
		if s.play.max == 0 {
			s.play.max = 120 * time.Millisecond
		}
	}
	s.platformInit()
	return s, nil
}

// clockRate of the RTP statistics: Opus (RFC 7587) and most wideband
// codecs use 48 kHz. Jitter of an 8 kHz codec reads 6 times too high.
const clockRate = 48000

// observe feeds one RTP packet from the phone to the statistics; called
// by the pump with statsMu held, once per batch.
func (s *Stream) observe(b []byte, now time.Time) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return
	}
	s.stats.Update(binary.BigEndian.Uint32(b[8:12]), binary.BigEndian.Uint16(b[2:4]), binary.BigEndian.Uint32(b[4:8]), now)
}

// ReceptionSnapshot is Reception without starting a new interval.
func (s *Stream) ReceptionSnapshot() rtpstats.Report {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats.Snapshot()
}

// Reception is the RFC 3550 statistics of the RTP received from the phone
// (the hop phone → anchor). It starts a new fraction-lost interval.
func (s *Stream) Reception() rtpstats.Report {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats.Report()
}

// Port is the anchor's RTP port for this stream (RTCP is Port+1).
func (s *Stream) Port() int { return s.pair.Port }

// Pair is the stream's sockets.
func (s *Stream) Pair() *ports.Pair { return s.pair }

// SetPeer links s to the stream its packets go out of.
func (s *Stream) SetPeer(p *Stream) {
	if s.peer.Swap(p) != p {
		s.fastChanged()
	}
}

// SetEndpoint records where the phone receives, from its SDP. An invalid
// address (a name, or 0.0.0.0 hold) leaves only latching to find it.
func (s *Stream) SetEndpoint(rtp, rtcp netip.AddrPort) {
	if rtp.IsValid() && !rtp.Addr().IsUnspecified() {
		if cur := s.expected.Load(); cur == nil || *cur != rtp {
			store(&s.expected, rtp)
			if s.latched.Load() == nil {
				s.fastChanged() // the peer's route sent to the old one
			}
		}
	}
	if rtcp.IsValid() && !rtcp.Addr().IsUnspecified() {
		store(&s.rtcpDest, rtcp)
	}
}

// SetMux records whether the phone multiplexes RTCP on its RTP port.
func (s *Stream) SetMux(on bool) { s.mux.Store(on) }

// Endpoint is where the phone's RTP is sent: the learned address once
// packets arrived, else the SDP one.
func (s *Stream) Endpoint() (netip.AddrPort, bool) {
	if a := s.latched.Load(); a != nil {
		return *a, true
	}
	if a := s.expected.Load(); a != nil {
		return *a, true
	}
	return netip.AddrPort{}, false
}

// rtcpEndpoint is where the phone's RTCP is sent.
func (s *Stream) rtcpEndpoint() (netip.AddrPort, bool) {
	if a := s.rtcpSeen.Load(); a != nil {
		return *a, true
	}
	if a := s.rtcpDest.Load(); a != nil {
		return *a, true
	}
	if a, ok := s.Endpoint(); ok {
		return netip.AddrPortFrom(a.Addr(), a.Port()+1), true
	}
	return netip.AddrPort{}, false
}

// accept applies latching to a packet from src on the RTP (rtcp false) or
// RTCP socket; it reports whether the packet is forwarded.
func (s *Stream) accept(src netip.AddrPort, rtcp bool) bool {
	learned := &s.latched
	if rtcp {
		learned = &s.rtcpSeen
	}
	cur := learned.Load()
	switch {
	case cur == nil:
		if s.opts.StrictSource && !rtcp {
			if e := s.expected.Load(); e != nil && *e != src {
				return false
			}
		}
		store(learned, src)
		if e := s.expected.Load(); !rtcp && (e == nil || *e != src) {
			s.fastChanged() // the peer's route sent to the SDP's address
		}
		return true
	case *cur == src:
		return true
	case s.opts.Handover, s.announced(src, rtcp):
		// media-handover follows any new source; without it, only the
		// address the phone's own signalling named (a re-offer after a
		// move from Wi-Fi to LTE): a stranger cannot take the stream.
		store(learned, src)
		if !rtcp {
			s.fastChanged()
		}
		return true
	default:
		return !s.opts.StrictSource
	}
}

// announced: src is where the phone's latest SDP says it is (RTP or RTCP),
// and not where the stream was latched before.
func (s *Stream) announced(src netip.AddrPort, rtcp bool) bool {
	e := s.expected.Load()
	if rtcp {
		e = s.rtcpDest.Load()
	}
	return e != nil && *e == src
}

// Stats returns the RTP and RTCP counters of packets received from the phone.
func (s *Stream) Stats() (rtp, rtcp Counters) { return s.rtp.get(), s.rtcp.get() }

// LastPacket is when the phone's last packet arrived (zero: never).
func (s *Stream) LastPacket() time.Time {
	if n := s.last.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// out returns the socket and destination a packet received on s leaves by.
func (s *Stream) out(rtcp bool) (*socket, netip.AddrPort, bool) {
	p := s.peer.Load()
	if p == nil {
		return nil, netip.AddrPort{}, false
	}
	if rtcp {
		dst, ok := p.rtcpEndpoint()
		ok = ok && !p.refused.Load()
		if p.mux.Load() {
			return p.rtpSock, dst, ok // a multiplexing phone hears RTCP from the RTP port too
		}
		return p.rtcpSock, dst, ok
	}
	dst, ok := p.Endpoint()
	return p.rtpSock, dst, ok && !p.refused.Load()
}

// store keeps a copy of a: only a change allocates, never a packet that
// matches what is stored.
func store(p *atomic.Pointer[netip.AddrPort], a netip.AddrPort) { p.Store(&a) }
