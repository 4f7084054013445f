// Package webrtc is the anchor's end of a WebRTC leg's transport: the
// datagrams on the leg's port that are not RTP. It tells them apart by
// their first byte (RFC 7983), answers ICE checks (icelite) and runs the
// DTLS-SRTP handshake (dtlssrtp) towards the address ICE validated,
// handing the SRTP keys back when it completes. The relay keeps the
// socket and the RTP: it calls Classify on each datagram's first byte and
// passes what is not RTP to Leg.Handle.
package webrtc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/media/icelite"
)

// Kind of a datagram on a WebRTC leg's port.
type Kind uint8

const (
	Unknown Kind = iota
	STUN         // first byte 0-3
	DTLS         // 20-63
	TURN         // 64-79: a TURN channel, never ours (the anchor is no TURN server)
	RTP          // 128-191: RTP or RTCP
)

// Classify reads RFC 7983 §7's first-byte ranges: the relay's hot path
// needs only this comparison to keep RTP for itself.
func Classify(first byte) Kind {
	switch {
	case first >= 128 && first <= 191:
		return RTP
	case first <= 3:
		return STUN
	case first >= 20 && first <= 63:
		return DTLS
	case first >= 64 && first <= 79:
		return TURN
	}
	return Unknown
}

// Config of a Leg.
type Config struct {
	// ICE is the anchor's credentials for this leg, as its SDP gives them.
	ICE icelite.Credentials
	// Certificate is the anchor's DTLS certificate for the leg.
	Certificate *dtlssrtp.Certificate
	// Send writes one datagram from the leg's port to. It must not keep b.
	Send func(b []byte, to netip.AddrPort) error
	// Keys is called once per handshake (one, but for a restored leg
	// whose peer starts another: Restore), from the DTLS goroutine, with
	// the SRTP keys or why the handshake failed.
	Keys func(dtlssrtp.Keys, error)
	// Selected is called, from Handle, when the peer nominates a path:
	// media goes there from then on. Nil: not reported.
	Selected func(netip.AddrPort)
	// ConsentTimeout is how long the peer's consent to receive lasts
	// after its last check on the media path (RFC 7675 §5.1); 0: 30 s.
	ConsentTimeout time.Duration
	Logger         *slog.Logger
}

// Peer is what the peer's SDP says, once it is known.
type Peer struct {
	Ufrag       string // a=ice-ufrag
	Fingerprint dtlssrtp.Fingerprint
	Role        dtlssrtp.Role // the anchor's: Server when the anchor's SDP says a=setup:passive
}

// Leg is the transport of one WebRTC leg.
type Leg struct {
	cfg   Config
	ice   *icelite.Agent
	ctx   context.Context
	quiet atomic.Bool // Abandon: nothing more is sent to the peer

	mu        sync.Mutex
	peer      *Peer              // nil until SetPeer
	dtls      *dtlssrtp.Endpoint // nil until the handshake can start
	hs        *handshake         // dtls's run
	early     [][]byte           // DTLS datagrams that came before SetPeer
	closed    bool
	nominated netip.AddrPort // last reported through Config.Selected
	// keys are the last finished handshake's, or a restored leg's (no
	// dtls then: Restore); nil: none finished.
	keys *dtlssrtp.Keys
}

// handshake is one DTLS endpoint's run, what it was fed and how it
// ended; under Leg.mu.
type handshake struct {
	hello   []byte // the random of the ClientHello that was its first datagram; nil: none was
	fed     bool   // it got a datagram
	keyed   bool   // its handshake finished
	failed  bool   // its handshake failed
	retired bool   // a new handshake replaced it: it sends and reports nothing more
}

// earlyMax bounds the DTLS datagrams kept until the peer's SDP arrives: a
// ClientHello, perhaps retransmitted.
const earlyMax = 4

// New starts a leg's transport: it answers ICE checks at once (a browser
// checks as soon as it has the anchor's SDP, before its own has reached
// the anchor), and holds DTLS until SetPeer. ctx bounds the DTLS
// association's life.
func New(ctx context.Context, cfg Config) (*Leg, error) {
	if cfg.Certificate == nil || cfg.Send == nil || cfg.Keys == nil {
		return nil, errors.New("webrtc: Config needs a Certificate, Send and Keys")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a, err := icelite.New(cfg.ICE)
	if err != nil {
		return nil, err
	}
	return &Leg{cfg: cfg, ice: a, ctx: ctx}, nil
}

// SetPeer gives the leg what the peer's SDP says. The handshake starts now
// as server, or as client once ICE has validated the peer's address.
// A second call with a different fingerprint or role is refused: a
// re-INVITE that changes them needs a new leg (RFC 5763 §6.7).
func (l *Leg) SetPeer(p Peer) error {
	if _, err := dtlssrtp.FingerprintOf(p.Fingerprint.Hash, nil); err != nil || p.Fingerprint.Value == "" {
		return fmt.Errorf("webrtc: the peer's fingerprint %q is unusable", p.Fingerprint)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("webrtc: leg closed")
	}
	if l.peer != nil {
		if l.peer.Fingerprint != p.Fingerprint || l.peer.Role != p.Role {
			return errors.New("webrtc: the peer's fingerprint or DTLS role changed; a new association is needed")
		}
		if p.Ufrag != l.peer.Ufrag {
			l.ice.SetRemoteUfrag(p.Ufrag) // an ICE restart keeps the DTLS association
			l.peer.Ufrag = p.Ufrag
			if l.peer.Role == dtlssrtp.Client && l.dtls != nil && !l.hs.keyed {
				// ... but not a handshake that has not finished (a peer
				// that reconnects to a restarted anchor whose ClientHello
				// it cannot take): the anchor's next one, once the new
				// path is checked (handleSTUN), starts afresh.
				old := l.dtls
				l.hs.retired = true
				l.dtls = nil
				go old.Close()
			}
		}
		return nil
	}
	cp := p
	l.peer = &cp
	l.ice.SetRemoteUfrag(p.Ufrag)
	if _, ok := l.ice.Selected(); p.Role == dtlssrtp.Client && !ok {
		return nil // started by the first valid check
	}
	if err := l.startLocked(); err != nil {
		l.peer = nil
		return err
	}
	return nil
}

// startLocked starts the DTLS endpoint; l.mu held.
func (l *Leg) startLocked() error {
	hs := &handshake{}
	e, err := dtlssrtp.Start(l.ctx, dtlssrtp.Config{
		Role:        l.peer.Role,
		Certificate: l.cfg.Certificate,
		Remote:      l.peer.Fingerprint,
		Send: func(b []byte) error {
			l.mu.Lock()
			retired := hs.retired
			l.mu.Unlock()
			if retired {
				return errRetired
			}
			return l.sendDTLS(b)
		},
		Done: func(k dtlssrtp.Keys, err error) {
			l.mu.Lock()
			if hs.retired {
				l.mu.Unlock()
				return // replaced by the peer's new handshake, whose end counts
			}
			if err == nil {
				l.keys, hs.keyed = &k, true
			} else {
				hs.failed = true
			}
			l.mu.Unlock()
			l.cfg.Keys(k, err)
		},
		// Only addresses that passed an ICE check reach it (Handle).
		NoCookie: true,
		Logger:   l.cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("webrtc: %w", err)
	}
	l.dtls, l.hs = e, hs
	for _, p := range l.early {
		hs.feed(p)
		e.Handle(p)
	}
	l.early = nil
	return nil
}

var errRetired = errors.New("webrtc: DTLS endpoint replaced by the peer's new handshake")

// feed notes that the run got pkt.
func (hs *handshake) feed(pkt []byte) {
	if !hs.fed {
		hs.fed = true
		hs.hello = helloRandom(pkt)
	}
}

// replacedBy: pkt, a ClientHello that begins a handshake, is not the one
// this run is answering, and the run has not finished: the peer has
// started again (a restarted anchor's run got the tail of a handshake the
// previous process had begun, or a run failed). A run that finished
// keeps its association (RFC 6347 §4.2.8 lets it go on until a new one
// completes; the peer's records go to it).
func (hs *handshake) replacedBy(pkt []byte) bool {
	r := helloRandom(pkt)
	switch {
	case r == nil || hs.keyed:
		return false
	case hs.failed:
		return true
	case !hs.fed:
		return false
	}
	return hs.hello == nil || !bytes.Equal(hs.hello, r)
}

// helloRandom is the client random of pkt when it is a ClientHello that
// begins a handshake: the first record a handshake record of epoch 0
// holding message 0 whole from its start (RFC 6347 §4.1, §4.2.2); else nil.
func helloRandom(pkt []byte) []byte {
	// Record header (13), handshake header (12), client_version (2), random (32).
	if len(pkt) < 59 || pkt[0] != 22 || pkt[3] != 0 || pkt[4] != 0 || pkt[13] != 1 ||
		pkt[17] != 0 || pkt[18] != 0 || pkt[19] != 0 || pkt[20] != 0 || pkt[21] != 0 {
		return nil
	}
	return append([]byte(nil), pkt[27:59]...)
}

// sendDTLS sends towards the path ICE selected.
func (l *Leg) sendDTLS(b []byte) error {
	if l.quiet.Load() {
		return errAbandoned
	}
	to, ok := l.ice.Selected()
	if !ok {
		return errors.New("webrtc: no validated path to the peer yet")
	}
	return l.cfg.Send(b, to)
}

// Handle takes a datagram that Classify did not call RTP, received from
// from. It does not keep pkt. Errors are the peer's (bad checks, DTLS from
// an unchecked address) and only worth a debug log.
func (l *Leg) Handle(pkt []byte, from netip.AddrPort) error {
	if len(pkt) == 0 {
		return errors.New("webrtc: empty datagram")
	}
	switch Classify(pkt[0]) {
	case STUN:
		return l.handleSTUN(pkt, from)
	case DTLS:
		if !l.ice.Validated(from) {
			return fmt.Errorf("webrtc: DTLS from %s, which passed no ICE check", from)
		}
		l.mu.Lock()
		switch {
		case l.dtls != nil && l.peer.Role == dtlssrtp.Server && l.hs.replacedBy(pkt):
			// The peer begins a new handshake: the run that cannot
			// complete (or failed) gives way, silently, to a new one.
			old, failed := l.dtls, l.hs.failed
			l.hs.retired = true
			if err := l.startLocked(); err != nil {
				l.dtls = nil
				l.mu.Unlock()
				go old.Close()
				return err
			}
			e := l.dtls
			l.hs.feed(pkt)
			l.mu.Unlock()
			go old.Close() // off the relay's goroutine: it waits for the old run's
			l.cfg.Logger.Info("WebRTC leg: the peer starts a new DTLS handshake, answered by a new endpoint", "from", from, "previous_failed", failed)
			e.Handle(pkt)
		case l.dtls != nil:
			e := l.dtls
			l.hs.feed(pkt)
			l.mu.Unlock()
			e.Handle(pkt)
		case l.keys != nil && !l.closed:
			// Restored with its keys: the association is the previous
			// process's. Only a new handshake the peer starts is taken.
			if l.peer.Role != dtlssrtp.Server || !clientHello(pkt) {
				l.mu.Unlock()
				return errors.New("webrtc: DTLS record of the association a previous process had, dropped")
			}
			if err := l.startLocked(); err != nil {
				l.mu.Unlock()
				return err
			}
			e := l.dtls
			l.hs.feed(pkt)
			l.mu.Unlock()
			l.cfg.Logger.Info("WebRTC leg restored: the peer starts a new DTLS handshake, answered with the leg's certificate", "from", from)
			e.Handle(pkt)
		case len(l.early) < earlyMax && !l.closed:
			l.early = append(l.early, append([]byte(nil), pkt...))
			l.mu.Unlock()
		default:
			l.mu.Unlock()
		}
		return nil
	}
	return fmt.Errorf("webrtc: datagram with first byte %d from %s is neither STUN nor DTLS", pkt[0], from)
}

func (l *Leg) handleSTUN(pkt []byte, from netip.AddrPort) error {
	res, err := l.ice.Handle(pkt, from)
	if res.Response != nil {
		if serr := l.cfg.Send(res.Response, from); serr != nil && err == nil {
			err = fmt.Errorf("webrtc: STUN response to %s: %w", from, serr)
		}
	}
	if !res.Valid {
		return err
	}
	l.mu.Lock()
	report := res.Nominated && from != l.nominated
	if report {
		l.nominated = from
	}
	var startErr error
	if l.dtls == nil && l.keys == nil && l.peer != nil && !l.closed && l.peer.Role == dtlssrtp.Client {
		startErr = l.startLocked()
	}
	l.mu.Unlock()
	if report && l.cfg.Selected != nil {
		l.cfg.Selected(from)
	}
	return errors.Join(err, startErr)
}

// Early is how many DTLS datagrams wait for SetPeer: a browser that is
// the DTLS client sends its ClientHello as soon as its ICE check passed,
// which may be before its SDP answer has reached the anchor. They are
// handed to the handshake when it starts; one that found the queue full
// is dropped, and its retransmission is answered.
func (l *Leg) Early() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.early)
}

// Selected is where the leg's media goes: the path the peer nominated, or
// the last that passed a check.
func (l *Leg) Selected() (netip.AddrPort, bool) { return l.ice.Selected() }

// Consent is, at now, whether the peer still consents to receive media
// on the selected path (RFC 7675): the caller stops sending it media when
// not Fresh, and starts again once a check renews it.
func (l *Leg) Consent(now time.Time) icelite.Consent {
	return l.ice.Consent(now, l.cfg.ConsentTimeout)
}

// Validated reports whether addr passed an ICE check: RTP from any other
// address is not the peer's.
func (l *Leg) Validated(addr netip.AddrPort) bool { return l.ice.Validated(addr) }

var errAbandoned = errors.New("webrtc: leg abandoned to the next process")

// Abandon is Close without ending the association on the peer's side: no
// close_notify is sent, so the peer keeps its keys and its media, for a
// process that stops while its successor restores the leg (Restore).
func (l *Leg) Abandon() error {
	l.quiet.Store(true)
	err := l.Close()
	if errors.Is(err, errAbandoned) {
		err = nil
	}
	return err
}

// Close ends the DTLS association; a second Close does nothing.
func (l *Leg) Close() error {
	l.mu.Lock()
	l.closed = true
	e := l.dtls
	l.dtls, l.early = nil, nil
	l.mu.Unlock()
	if e != nil {
		return e.Close()
	}
	return nil
}

// clientHello: pkt is a DTLS handshake record of epoch 0 that carries a
// ClientHello (RFC 6347 §4.1, §4.2.2): the start of a new handshake.
func clientHello(pkt []byte) bool {
	return len(pkt) > 13 && pkt[0] == 22 && pkt[3] == 0 && pkt[4] == 0 && pkt[13] == 1
}

// State is what a Leg established, for an anchor that keeps its WebRTC
// legs across a restart (media/anchorstate).
type State struct {
	Peer *Peer          // nil: SetPeer not called yet
	ICE  icelite.State  // the peer's ufrag, the addresses its checks validated, the nominated one
	Keys *dtlssrtp.Keys // the SRTP keys of the handshake that finished; nil: none did
}

// State is the leg's state now.
func (l *Leg) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := State{ICE: l.ice.State()}
	if l.peer != nil {
		p := *l.peer
		st.Peer = &p
	}
	if l.keys != nil {
		k := *l.keys
		st.Keys = &k
	}
	return st
}

// Restore makes a leg, as New does, that goes on in a new process from
// st, the State of a leg that had cfg's ICE credentials and Certificate:
// its agent answers the peer's checks as before and takes media from the
// same addresses. With st.Keys the handshake is taken as done: none
// starts, and the caller keys its SRTP with st.Keys itself (cfg.Keys is
// not called for them); the peer's records of that association are
// dropped, but a new handshake it starts (a ClientHello, to an anchor that
// is the DTLS server) is answered with cfg.Certificate, and its keys come
// through cfg.Keys. Without st.Keys the leg is a new one given st.Peer:
// its handshake starts again, as a server waiting for the peer's
// (retransmitted) ClientHello, as a client at once towards the selected
// path.
func Restore(ctx context.Context, cfg Config, st State) (*Leg, error) {
	l, err := New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	l.ice.Restore(st.ICE)
	l.nominated = st.ICE.Nominated
	if st.Peer == nil {
		return l, nil
	}
	if st.Keys == nil {
		if err := l.SetPeer(*st.Peer); err != nil {
			_ = l.Close()
			return nil, err
		}
		return l, nil
	}
	if _, err := dtlssrtp.FingerprintOf(st.Peer.Fingerprint.Hash, nil); err != nil || st.Peer.Fingerprint.Value == "" {
		return nil, fmt.Errorf("webrtc: the peer's fingerprint %q is unusable", st.Peer.Fingerprint)
	}
	p, k := *st.Peer, *st.Keys
	l.peer, l.keys = &p, &k
	l.ice.SetRemoteUfrag(p.Ufrag)
	return l, nil
}
