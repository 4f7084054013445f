// Package dtlssrtp is the anchor's DTLS endpoint on a WebRTC leg (RFC
// 5763, RFC 5764): it runs the handshake with pion/dtls in the role the
// SDP's a=setup gives, checks the peer's certificate against the SDP's
// a=fingerprint, and exports the SRTP master keys and salts. It owns no
// socket: the caller hands it each DTLS datagram (first byte 20-63, RFC
// 7983) and gives it a function that sends one towards the peer.
package dtlssrtp

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
)

// Role is the anchor's side of the handshake.
type Role int

const (
	// Server waits for the peer's ClientHello: the anchor answered
	// a=setup:passive (the peer said actpass or active).
	Server Role = iota
	// Client sends the ClientHello: the anchor is a=setup:active (the
	// peer said passive).
	Client
)

func (r Role) String() string {
	if r == Client {
		return "client"
	}
	return "server"
}

// Profile is an SRTP protection profile, by its IANA number (the same as
// pion/srtp's ProtectionProfile).
type Profile uint16

// The profiles browsers offer.
const (
	AES128CMHMACSHA180 Profile = 0x0001
	AES128CMHMACSHA132 Profile = 0x0002
	AEADAES128GCM      Profile = 0x0007
	AEADAES256GCM      Profile = 0x0008
)

// DefaultProfiles are offered in this order; a server picks from the
// client's list by its own preference. AES_CM_128_HMAC_SHA1_80 first: it
// is what every SDES phone has, so both legs of a bridge match.
var DefaultProfiles = []Profile{AES128CMHMACSHA180, AEADAES128GCM, AEADAES256GCM, AES128CMHMACSHA132}

// KeyLen and SaltLen are the master key and salt sizes in bytes.
func (p Profile) KeyLen() int {
	if p == AEADAES256GCM {
		return 32
	}
	return 16
}

func (p Profile) SaltLen() int {
	if p == AEADAES128GCM || p == AEADAES256GCM {
		return 12
	}
	return 14
}

// Suite is the profile's name as SDES a=crypto writes it (RFC 4568,
// RFC 7714).
func (p Profile) Suite() string {
	switch p {
	case AES128CMHMACSHA180:
		return "AES_CM_128_HMAC_SHA1_80"
	case AES128CMHMACSHA132:
		return "AES_CM_128_HMAC_SHA1_32"
	case AEADAES128GCM:
		return "AEAD_AES_128_GCM"
	case AEADAES256GCM:
		return "AEAD_AES_256_GCM"
	}
	return fmt.Sprintf("profile-%#04x", uint16(p))
}

func (p Profile) String() string { return p.Suite() }

// Keys are the SRTP keying material of one leg (RFC 5764 §4.2), split by
// direction: Local protects what the anchor sends to the peer, Remote
// unprotects what the peer sends. They serve RTP and RTCP alike.
type Keys struct {
	Profile               Profile
	LocalKey, LocalSalt   []byte
	RemoteKey, RemoteSalt []byte
}

// srtpLabel is RFC 5764 §4.2's exporter label.
const srtpLabel = "EXTRACTOR-dtls_srtp"

// Config of an Endpoint.
type Config struct {
	Role        Role
	Certificate *Certificate
	// Remote is the peer's a=fingerprint; its certificate must match.
	Remote Fingerprint
	// Send writes one datagram towards the peer. It must not keep b.
	Send func(b []byte) error
	// Profiles offered (client) or accepted (server); nil: DefaultProfiles.
	Profiles []Profile
	// Done is called once, from the endpoint's goroutine: with the keys
	// when the handshake completes, or with why it failed.
	Done func(Keys, error)
	// Timeout of the handshake; 0: 30 s, a browser's ICE consent
	// lifetime.
	Timeout time.Duration
	// NoCookie: as Server, answer the ClientHello at once, without the
	// HelloVerifyRequest cookie exchange (RFC 6347 §4.2.1 lets a server
	// skip it). For a caller that takes DTLS only from an address whose
	// ICE check passed (media/webrtc), the check has proved the address
	// already; the cookie would only add a round trip, and a state that a
	// restarted anchor does not have: a peer that got the old process's
	// cookie retransmits a ClientHello (message 1) no new endpoint takes.
	NoCookie bool
	Logger   *slog.Logger
}

// Endpoint is the DTLS association of one leg.
type Endpoint struct {
	cfg    Config
	pipe   *pipe
	cancel context.CancelFunc
	done   chan struct{}
	conn   *dtls.Conn
}

// queueLen bounds the datagrams waiting for the handshake goroutine: a
// handshake flight is a few records; more is a flood and is dropped.
const queueLen = 64

// Start begins the handshake in the background; for Role Client it sends
// the ClientHello at once, so the caller starts it once the peer's address
// is known (after ICE validated it).
func Start(ctx context.Context, cfg Config) (*Endpoint, error) {
	if cfg.Certificate == nil || cfg.Send == nil || cfg.Done == nil {
		return nil, errors.New("dtlssrtp: Config needs a Certificate, Send and Done")
	}
	if _, err := newHash(cfg.Remote.Hash); err != nil || cfg.Remote.Value == "" {
		return nil, fmt.Errorf("dtlssrtp: the peer's fingerprint %q: unusable", cfg.Remote)
	}
	if cfg.Profiles == nil {
		cfg.Profiles = DefaultProfiles
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	e := &Endpoint{cfg: cfg, pipe: newPipe(cfg.Send), cancel: cancel, done: make(chan struct{})}
	profiles := make([]dtls.SRTPProtectionProfile, len(cfg.Profiles))
	for i, p := range cfg.Profiles {
		profiles[i] = dtls.SRTPProtectionProfile(p)
	}
	want := cfg.Remote
	common := []dtls.Option{
		dtls.WithCertificates(cfg.Certificate.tls),
		dtls.WithSRTPProtectionProfiles(profiles...),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		// Self-signed on both sides: trust comes from the SDP fingerprint.
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error { return verify(want, raw) }),
	}
	var conn *dtls.Conn
	var err error
	if cfg.Role == Client {
		opts := make([]dtls.ClientOption, 0, len(common))
		for _, o := range common {
			opts = append(opts, o)
		}
		conn, err = dtls.ClientWithOptions(e.pipe, peerAddr{}, opts...)
	} else {
		opts := make([]dtls.ServerOption, 0, len(common)+1)
		for _, o := range common {
			opts = append(opts, o)
		}
		opts = append(opts, dtls.WithClientAuth(dtls.RequireAnyClientCert))
		if cfg.NoCookie {
			opts = append(opts, dtls.WithInsecureSkipVerifyHello(true))
		}
		conn, err = dtls.ServerWithOptions(e.pipe, peerAddr{}, opts...)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("dtlssrtp: %s: %w", cfg.Role, err)
	}
	e.conn = conn
	go e.run(ctx, conn)
	return e, nil
}

// run does the handshake, reports it, then keeps reading so that the
// peer's retransmitted last flight and its alerts are answered.
func (e *Endpoint) run(ctx context.Context, conn *dtls.Conn) {
	defer close(e.done)
	hctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	err := conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		e.cfg.Done(Keys{}, fmt.Errorf("dtlssrtp: %s handshake: %w", e.cfg.Role, err))
		_ = conn.Close()
		return
	}
	keys, err := e.keys(conn)
	e.cfg.Done(keys, err)
	if err != nil {
		_ = conn.Close()
		return
	}
	e.cfg.Logger.Debug("dtls handshake done", "role", e.cfg.Role, "profile", keys.Profile)
	buf := make([]byte, 1500)
	for {
		if _, err := conn.Read(buf); err != nil {
			// Application data is none of ours (no data channels):
			// reading only drives the record layer until close_notify
			// or Close.
			return
		}
	}
}

func (e *Endpoint) keys(conn *dtls.Conn) (Keys, error) {
	sp, ok := conn.SelectedSRTPProtectionProfile()
	if !ok {
		return Keys{}, errors.New("dtlssrtp: the peer agreed no SRTP profile (use_srtp)")
	}
	p := Profile(sp)
	state, ok := conn.ConnectionState()
	if !ok {
		return Keys{}, errors.New("dtlssrtp: no connection state after the handshake")
	}
	kl, sl := p.KeyLen(), p.SaltLen()
	m, err := state.ExportKeyingMaterial(srtpLabel, nil, 2*(kl+sl))
	if err != nil {
		return Keys{}, fmt.Errorf("dtlssrtp: export keying material: %w", err)
	}
	// RFC 5764 §4.2: client key, server key, client salt, server salt.
	clientKey, serverKey := m[:kl], m[kl:2*kl]
	clientSalt, serverSalt := m[2*kl:2*kl+sl], m[2*kl+sl:]
	k := Keys{Profile: p, LocalKey: serverKey, LocalSalt: serverSalt, RemoteKey: clientKey, RemoteSalt: clientSalt}
	if e.cfg.Role == Client {
		k.LocalKey, k.LocalSalt, k.RemoteKey, k.RemoteSalt = clientKey, clientSalt, serverKey, serverSalt
	}
	return k, nil
}

// Handle takes one DTLS datagram from the peer; it copies pkt. A full
// queue drops it, as a full socket buffer would.
func (e *Endpoint) Handle(pkt []byte) {
	e.pipe.push(pkt)
}

// Close ends the association (with close_notify when it was up) and waits
// for its goroutine.
func (e *Endpoint) Close() error {
	e.cancel()
	err := e.conn.Close()
	e.pipe.Close()
	<-e.done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// pipe is the net.PacketConn pion/dtls runs over: datagrams pushed by
// Handle, written through Send.
type pipe struct {
	in     chan []byte
	send   func([]byte) error
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{} // closed when the read deadline changes
}

func newPipe(send func([]byte) error) *pipe {
	return &pipe{in: make(chan []byte, queueLen), send: send, closed: make(chan struct{}), changed: make(chan struct{})}
}

func (p *pipe) push(b []byte) {
	select {
	case <-p.closed:
	case p.in <- append([]byte(nil), b...):
	default:
	}
}

func (p *pipe) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		p.mu.Lock()
		d, changed := p.deadline, p.changed
		p.mu.Unlock()
		var expired <-chan time.Time
		var t *time.Timer
		if !d.IsZero() {
			wait := time.Until(d)
			if wait <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t = time.NewTimer(wait)
			expired = t.C
		}
		select {
		case pkt := <-p.in:
			stop(t)
			return copy(b, pkt), peerAddr{}, nil
		case <-p.closed:
			stop(t)
			return 0, nil, net.ErrClosed
		case <-expired:
			return 0, nil, os.ErrDeadlineExceeded
		case <-changed:
			stop(t)
		}
	}
}

func stop(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

func (p *pipe) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-p.closed:
		return 0, net.ErrClosed
	default:
	}
	if err := p.send(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (p *pipe) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *pipe) LocalAddr() net.Addr { return peerAddr{} }

func (p *pipe) SetDeadline(t time.Time) error { return p.SetReadDeadline(t) }

func (p *pipe) SetReadDeadline(t time.Time) error {
	p.mu.Lock()
	p.deadline = t
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	return nil
}

// SetWriteDeadline: Send does not block on the network (a UDP write).
func (p *pipe) SetWriteDeadline(time.Time) error { return nil }

// peerAddr stands for the peer: the caller decides where Send goes.
type peerAddr struct{}

func (peerAddr) Network() string { return "dtls" }
func (peerAddr) String() string  { return "peer" }
