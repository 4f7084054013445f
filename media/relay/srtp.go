package relay

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// A leg whose phone speaks SRTP (RFC 3711) has a Crypto: the anchor
// decrypts what the phone sends before anything else looks at it (the
// statistics, the jitter buffer, the RTCP reader, the other leg) and
// encrypts what goes to the phone, the relayed media and the anchor's own
// RTCP reports alike. A plain leg has none and takes the path it always
// took. The keys come from SDES (media/anchor, media/sdes) or from a
// DTLS-SRTP handshake, which may end after the stream started relaying:
// SetCrypto can be called at any time.

// Keys are one direction's SRTP master key and salt and its profile.
type Keys struct {
	Profile   srtp.ProtectionProfile
	Key, Salt []byte
	// Options are pion/srtp's context options: unencrypted or
	// unauthenticated SRTP, unencrypted SRTCP, an MKI.
	Options []srtp.ContextOption
	// ID tells keys apart when Options differ: SetCrypto keeps the
	// contexts (their rollover counters and replay windows) of keys equal
	// in everything, ID included.
	ID string
}

// Equal: the same keys.
func (k *Keys) Equal(o *Keys) bool {
	if k == nil || o == nil {
		return k == o
	}
	return k.Profile == o.Profile && bytes.Equal(k.Key, o.Key) && bytes.Equal(k.Salt, o.Salt) && k.ID == o.ID
}

// Crypto is a leg's SRTP: what the phone sends is SRTP and SRTCP under
// In, what the anchor sends it is encrypted under Out. A nil side is not
// keyed yet: its packets are dropped, never sent or taken in clear.
type Crypto struct {
	In, Out *Keys
}

// legCrypto is a leg's SRTP contexts. pion/srtp's contexts are not safe
// for concurrent use: mu guards all four; the worker takes it once per
// batch. It is the stream's srtpMu, shared by the legCrypto SetCrypto
// replaces and the one replacing it, which may share contexts.
type legCrypto struct {
	keys                           Crypto
	mu                             *sync.Mutex
	inRTP, inRTCP, outRTP, outRTCP *srtp.Context // nil: not keyed (dropped)
	rtpHdr                         rtp.Header
	rtcpHdr                        rtcp.Header
}

// SetCrypto makes the leg SRTP with c's keys, or plain RTP with nil. A
// direction whose keys did not change keeps its contexts.
func (s *Stream) SetCrypto(c *Crypto) error {
	s.cryptoMu.Lock()
	defer s.cryptoMu.Unlock()
	defer s.fastChanged()
	if c == nil {
		s.crypto.Store(nil)
		return nil
	}
	old := s.crypto.Load()
	lc := &legCrypto{keys: Crypto{In: c.In, Out: c.Out}, mu: &s.srtpMu}
	var err error
	if old != nil && old.keys.In.Equal(c.In) {
		lc.inRTP, lc.inRTCP = old.inRTP, old.inRTCP
	} else if c.In != nil {
		if lc.inRTP, lc.inRTCP, err = contexts(c.In); err != nil {
			return err
		}
	}
	if old != nil && old.keys.Out.Equal(c.Out) {
		lc.outRTP, lc.outRTCP = old.outRTP, old.outRTCP
	} else if c.Out != nil {
		if lc.outRTP, lc.outRTCP, err = contexts(c.Out); err != nil {
			return err
		}
	}
	s.crypto.Store(lc)
	return nil
}

// Encrypted: the leg speaks SRTP.
func (s *Stream) Encrypted() bool { return s.crypto.Load() != nil }

// Media relayed to a leg that speaks SRTP but has no keys to send with yet
// (an SDES leg between offer and answer; a WebRTC leg whose DTLS-SRTP
// handshake has not ended, as when the other side's early media, a 183's,
// flows before the browser's handshake) is dropped, counted by Unkeyed,
// and never sent in clear. That is what rtpengine does (its
// check_session_keys refuses the packet: "SRTP output wanted, but no
// crypto suite was negotiated") rather than buffering: what a buffer
// would release once the keys came is audio already late by the
// handshake's time, which the browser's jitter buffer would have to
// play late or discard; the media that follows the keys starts at once.
// Nothing of the session depends on the packets dropped: the SRTP
// contexts start with the first packet protected.

// awaitingKeys: s speaks SRTP without keys to send with yet. A legCrypto's
// contexts are set before it is stored and never change.
func (s *Stream) awaitingKeys() bool {
	lc := s.crypto.Load()
	return lc != nil && lc.outRTP == nil
}

// heldBack reports whether the n packets s is about to relay go to a peer
// awaiting its keys, and counts them dropped on that peer if so.
func (s *Stream) heldBack(n int) bool {
	p := s.peer.Load()
	if p == nil || !p.awaitingKeys() {
		return false
	}
	p.unkeyed.Add(uint64(n))
	return true
}

// Unkeyed is how many relayed packets (RTP and RTCP) for the phone were
// dropped because its leg had no SRTP keys yet.
func (s *Stream) Unkeyed() uint64 { return s.unkeyed.Load() }

// contexts are one context for SRTP and one for SRTCP, so that each
// keeps only its own state.
func contexts(k *Keys) (*srtp.Context, *srtp.Context, error) {
	opts := append([]srtp.ContextOption{srtp.SRTPReplayProtection(128), srtp.SRTCPReplayProtection(128)}, k.Options...)
	a, err := srtp.CreateContext(k.Key, k.Salt, k.Profile, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("relay: SRTP keys: %w", err)
	}
	b, err := srtp.CreateContext(k.Key, k.Salt, k.Profile, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("relay: SRTP keys: %w", err)
	}
	return a, b, nil
}

var errNotKeyed = errors.New("relay: SRTP direction not keyed")

// OtherFunc takes a datagram of an SRTP leg's RTP port that is neither
// RTP nor RTCP.
type OtherFunc func(b []byte, from netip.AddrPort)

// SetOther hands f the datagrams arriving on an SRTP leg's RTP port that
// are neither RTP nor RTCP by their first byte (RFC 7983: 0-3 STUN, 20-63
// DTLS), instead of dropping them: a DTLS-SRTP handshake and ICE
// connectivity checks share the port with the media. f runs on the
// relay's goroutine with a buffer that is reused once it returns: it must
// copy what it keeps and not block. nil: dropped. A plain leg relays such
// datagrams as before and never calls f.
func (s *Stream) SetOther(f OtherFunc) {
	if f == nil {
		s.other.Store(nil)
		return
	}
	s.other.Store(&f)
}

// SendOther sends a datagram of the anchor's own (STUN, DTLS) to the
// phone from the leg's RTP port, unencrypted.
func (s *Stream) SendOther(b []byte, to netip.AddrPort) error { return s.rtpSock.writeTo(b, to) }

// ICE says which source addresses passed a WebRTC leg's connectivity
// checks (media/webrtc.Leg, media/icelite.Agent).
type ICE interface {
	Validated(addr netip.AddrPort) bool
}

type iceGate struct{ ICE }

// SetICE makes the leg take RTP and RTCP only from addresses ice
// validated (RFC 8445 §7.3: media from anywhere else is not the peer's);
// nil: from any, as latching decides. It applies to an SRTP leg only,
// so a WebRTC leg is one with SetCrypto, SetOther and SetICE; the
// address media goes to follows Latch.
func (s *Stream) SetICE(ice ICE) {
	defer s.fastChanged()
	if ice == nil {
		s.ice.Store(nil)
		return
	}
	s.ice.Store(&iceGate{ice})
}

// iceAllows: media from src may be relayed (no ICE, or src validated).
func (s *Stream) iceAllows(src netip.AddrPort) bool {
	g := s.ice.Load()
	return g == nil || g.Validated(src)
}

// Latch points the leg's RTP and RTCP at a, as a first packet from it
// would: the path ICE selected. Storing only a change keeps repeated
// calls (every check) from allocating.
func (s *Stream) Latch(a netip.AddrPort) {
	if cur := s.latched.Load(); cur == nil || *cur != a {
		store(&s.latched, a)
		s.fastChanged()
	}
	if s.mux.Load() {
		if cur := s.rtcpSeen.Load(); cur == nil || *cur != a {
			store(&s.rtcpSeen, a)
		}
	}
}

// SetConsent says whether the phone consents to receive media (a WebRTC
// leg's ICE consent, RFC 7675): without it nothing relayed and none of the
// anchor's RTCP is sent to it, and each packet that would have been is
// counted as an error of the stream it came in on, as when the leg has no
// address. STUN and DTLS (SendOther) still go: answering the peer's
// checks is how consent comes back. A new Stream has consent.
func (s *Stream) SetConsent(granted bool) {
	if s.refused.Swap(!granted) != !granted {
		s.fastChanged()
	}
}

// notMedia: by its first byte, b is not RTP or RTCP (RFC 7983 §7).
func notMedia(b []byte) bool { return len(b) == 0 || b[0] < 128 || b[0] > 191 }

// takeOther gives a datagram that is not media to the leg's OtherFunc
// (true), on an SRTP leg only.
func (s *Stream) takeOther(b []byte, from netip.AddrPort) bool {
	if !notMedia(b) {
		return false
	}
	if f := s.other.Load(); f != nil {
		(*f)(b, from)
	}
	return true
}

// decrypt turns the phone's SRTP or SRTCP packet b into RTP or RTCP in
// place; lc.mu held.
func (lc *legCrypto) decrypt(b []byte, isRTCP bool) ([]byte, error) {
	if isRTCP {
		if lc.inRTCP == nil {
			return nil, errNotKeyed
		}
		return lc.inRTCP.DecryptRTCP(b, b, &lc.rtcpHdr)
	}
	if lc.inRTP == nil {
		return nil, errNotKeyed
	}
	return lc.inRTP.DecryptRTP(b, b, &lc.rtpHdr)
}

// encrypt writes RTP or RTCP packet b, encrypted for the phone, into dst
// (cap(dst) leaves room for the tag and trailer); lc.mu held.
func (lc *legCrypto) encrypt(dst, b []byte, isRTCP bool) ([]byte, error) {
	if isRTCP {
		if lc.outRTCP == nil {
			return nil, errNotKeyed
		}
		return lc.outRTCP.EncryptRTCP(dst, b, &lc.rtcpHdr)
	}
	if lc.outRTP == nil {
		return nil, errNotKeyed
	}
	return lc.outRTP.EncryptRTP(dst, b, &lc.rtpHdr)
}

// srtpRoom is what SRTP and SRTCP add at most: a 16-byte tag, the SRTCP
// index and an MKI.
const srtpRoom = 64

// protectOwn encrypts the anchor's own RTCP for the phone (a copy).
func (s *Stream) protectOwn(b []byte) ([]byte, bool) {
	lc := s.crypto.Load()
	if lc == nil {
		return b, true
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	out, err := lc.encrypt(make([]byte, 0, len(b)+srtpRoom), b, true)
	return out, err == nil
}
