// Package transport owns sori's SIP sockets. It reads datagrams and
// streams, frames and checks every message with sip/wire before sipgo
// parses it (once), answers what it cannot accept with the error the fault
// deserves, and sends messages to a peer.
//
// Two rules hold for everything here, because the bytes come from anyone:
//   - no name is ever resolved: a destination is an IP address and port;
//   - nothing is dialled to deliver a response: a response leaves on the
//     socket or the connection its request came in on, to the address the
//     request came from (RFC 3261 §18.2.2 with RFC 3581's rport, always).
//
// Files: udp.go (datagram sockets), stream.go (TCP and TLS connections), ingress.go
// (what happens to each received message), badinput.go (counting and
// logging what is refused).
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sori-voice/sori/sip/transport/stamp"
)

// Conn is one peer as sori reaches it: a UDP socket and the peer's
// address, or a stream connection. It is the sip.Connection sipgo's
// transaction state machines write to, so every retransmission and every
// response of a transaction goes where its request came from.
type Conn interface {
	sip.Connection
	// Transport is "UDP", "TCP" or "TLS".
	Transport() string
	// Remote is the peer's address (a datagram's source, a connection's far end).
	Remote() netip.AddrPort
	// Write sends raw bytes (a reply built without parsing the request).
	Write(b []byte) error
	// Hold keeps a stream connection open until release is called, so the
	// answer to a request is not lost when the peer stops sending; for UDP
	// it does nothing.
	Hold() (release func())
}

// Arrived is a Conn that knows when the message it came with reached the
// host: a UDP datagram's kernel receive time (zero if not stamped).
type Arrived interface {
	Arrived() time.Time
}

// Handler receives every message that passed the checks, parsed.
type Handler interface {
	Request(req *sip.Request, c Conn)
	Response(res *sip.Response, c Conn)
}

// Verdict is what a Gate decides about a source before its message is read.
type Verdict uint8

// Gate verdicts.
const (
	Pass   Verdict = iota
	Drop           // no answer, nothing parsed
	Reject         // answered 503 with Retry-After, nothing else done
)

// Gate screens sources before their messages are parsed (bans, rate
// limits); nil passes everything. vouched: the message is vouched for as
// another node's, by its TLS connection's certificate (Options.Vouch) or
// by its signature (Options.Signer; such a message is parsed first).
type Gate interface {
	Admit(src netip.Addr, vouched bool, now time.Time) Verdict
}

// Options configure a Transport.
type Options struct {
	Listeners []Listener
	Handler   Handler
	Gate      Gate
	// Server is the Server header of the error answers the transport gives itself.
	Server     string
	RetryAfter int // seconds, in the 503 a Gate's Reject gets
	// IdleTimeout closes a stream connection that carried nothing for this
	// long (keepalives count); a connection that has not yet completed a
	// message gets StallTimeout instead.
	IdleTimeout  time.Duration
	StallTimeout time.Duration
	// MaxStreams caps open stream connections (accepted and dialled).
	MaxStreams int
	// TLS serves the tls listeners (its GetCertificate may change the
	// certificate while connections stay up); nil: no tls listener.
	TLS *tls.Config
	// TLSClient is how sori opens a TLS connection to dest (a carrier's
	// gateway or another node: its CA, sori's client certificate); nil, or
	// nil for dest: none is opened.
	TLSClient func(dest netip.AddrPort) *tls.Config
	// Vouch tells whether a TLS connection's peer certificate (a client's
	// of a tls listener, or the server's of a connection sori dialled)
	// vouches for the peer at remote; asked once per connection, after
	// its handshake (vouch.go). Nil: Vouched is always false.
	Vouch func(cs tls.ConnectionState, remote netip.AddrPort) bool
	// Signer signs the messages written to the other nodes and checks
	// those read from them when the nodes talk in the clear (sign.go);
	// nil: none is signed, and no message is vouched for by a signature.
	Signer Signer
	// Dial opens the stream connections sori needs to send requests on;
	// nil: a net.Dialer. Tests hook it to see that nothing is dialled on
	// a peer's say-so.
	Dial       func(ctx context.Context, network, address string) (net.Conn, error)
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
}

// Defaults for the zero Options values.
const (
	DefaultIdleTimeout  = time.Hour
	DefaultStallTimeout = 30 * time.Second
	DefaultMaxStreams   = 65536
	dialTimeout         = 5 * time.Second
	writeTimeout        = 10 * time.Second
)

// Transport is a running set of SIP sockets.
type Transport struct {
	opts   Options
	log    *slog.Logger
	parser *sip.Parser
	bad    *badInput
	closed atomic.Bool

	mu        sync.Mutex
	udp       []*udpSocket
	listeners []net.Listener
	local     map[string]netip.AddrPort // transport -> first bound address
	addrs     []string
	streams   map[streamKey]*stream    // by transport and remote address
	ws        map[streamKey]*wsConn    // WebSocket connections, the same way
	vouches   map[streamKey]vouchCount // open TLS connections by far end (vouch.go)
	nstreams  int
	// httpServers serve the ws and wss listeners.
	httpServers []*http.Server
	wg          sync.WaitGroup

	conns           *prometheus.GaugeVec   // open connections by transport
	handshakeFailed *prometheus.CounterVec // TLS handshakes that failed, in or out
	keepalives      *prometheus.CounterVec // keepalives answered, by transport and kind
}

// New prepares a transport; Start opens its sockets.
func New(o Options) *Transport {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	t := &Transport{
		opts:    o,
		log:     o.Log,
		parser:  newParser(),
		bad:     newBadInput(o.Log, o.Registerer),
		local:   map[string]netip.AddrPort{},
		streams: map[streamKey]*stream{},
		ws:      map[streamKey]*wsConn{},
		vouches: map[streamKey]vouchCount{},
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sori_sip_connections",
			Help: "Open SIP stream connections (accepted and dialled), by transport.",
		}, []string{"transport"}),
		handshakeFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_sip_tls_handshake_failures_total",
			Help: "TLS handshakes that failed: in (a client of sori's) or out (sori to a carrier or another node).",
		}, []string{"direction"}),
	}
	t.keepalives = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sori_sip_keepalives_total",
		Help: "Keepalives answered: a CRLF pong to a double-CRLF ping (TCP, TLS, WS) or a STUN binding response (UDP).",
	}, []string{"transport", "kind"})
	if o.Registerer != nil {
		o.Registerer.MustRegister(t.conns, t.handshakeFailed, t.keepalives)
	}
	return t
}

// Start opens every listener; an address already in use fails here, before
// anything is served.
func (t *Transport) Start() error {
	for _, l := range t.opts.Listeners {
		if err := t.listen(l); err != nil {
			_ = t.Close()
			return err
		}
	}
	return nil
}

func (t *Transport) listen(l Listener) error {
	switch l.Transport {
	case "udp":
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(l.Addr))
		if err != nil {
			return fmt.Errorf("sip listen %s: %w", l, err)
		}
		_ = c.SetReadBuffer(8 << 20) // absorb bursts; the kernel caps it at rmem_max
		_ = c.SetWriteBuffer(8 << 20)
		u := &udpSocket{t: t, conn: c, local: unmap(c.LocalAddr().(*net.UDPAddr).AddrPort()), stamped: stamp.On(c) == nil}
		t.mu.Lock()
		t.udp = append(t.udp, u)
		t.bound("udp", u.local)
		t.mu.Unlock()
		t.wg.Add(1)
		go func() { defer t.wg.Done(); u.serve() }()
	case "tcp", "tls":
		if l.Transport == "tls" && t.opts.TLS == nil {
			return fmt.Errorf("sip listen %s: no TLS certificate configured", l)
		}
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(l.Addr))
		if err != nil {
			return fmt.Errorf("sip listen %s: %w", l, err)
		}
		t.mu.Lock()
		t.listeners = append(t.listeners, ln)
		t.bound(l.Transport, unmap(ln.Addr().(*net.TCPAddr).AddrPort()))
		t.mu.Unlock()
		t.wg.Add(1)
		go func() { defer t.wg.Done(); t.accept(ln, strings.ToUpper(l.Transport)) }()
	case "ws", "wss":
		return t.listenWS(l)
	default:
		return fmt.Errorf("sip listen %s: unsupported transport %q", l, l.Transport)
	}
	return nil
}

// bound records a listening address; t.mu is held.
func (t *Transport) bound(transport string, ap netip.AddrPort) {
	if _, ok := t.local[transport]; !ok {
		t.local[transport] = ap
	}
	t.addrs = append(t.addrs, transport+":"+ap.String())
}

// Addrs returns the bound addresses as "transport:ip:port" (useful with port 0).
func (t *Transport) Addrs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.addrs...)
}

// Local returns the address of the first listener for transport ("udp", "tcp").
func (t *Transport) Local(transport string) (netip.AddrPort, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ap, ok := t.local[strings.ToLower(transport)]
	return ap, ok
}

// ErrFlowClosed: a request was to go down a connection its peer opened (a
// phone's flow), and that connection is closed. Nothing is dialled: the
// phone listens on no port of its own (RFC 5626 §5.3).
var ErrFlowClosed = errors.New("the connection the peer registered on is closed")

type existingOnlyKey struct{}

// ExistingOnly marks a request's context: it may only use a connection
// that is already open (a phone's flow), never a new one.
func ExistingOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, existingOnlyKey{}, true)
}

func existingOnly(ctx context.Context) bool {
	v, _ := ctx.Value(existingOnlyKey{}).(bool)
	return v
}

// Open reports whether a flow a peer opened to sori is still there:
// the connection from remote ("ip:port") over transport for TCP, TLS, WS
// and WSS; for UDP, whose flows have no connection, always.
func (t *Transport) Open(transport, remote string) bool {
	tr := strings.ToUpper(transport)
	if tr == "UDP" {
		return true
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	k := streamKey{tr, unmap(ap)}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch tr {
	case "TCP", "TLS":
		s := t.streams[k]
		return s != nil && !s.isClosed()
	case "WS", "WSS":
		w := t.ws[k]
		return w != nil && !w.isClosed()
	}
	return false
}

// ErrNotAddress is returned for a destination that is not an IP address
// and port: sori resolves no names on the SIP path.
var ErrNotAddress = errors.New("destination is not an IP address and port (sori resolves no names)")

// Conn returns how to reach dest ("ip:port") over transport: for UDP, our
// listening socket and dest; for TCP, the open connection to dest, or a new
// one. Only requests sori decided to send come here, never responses.
func (t *Transport) Conn(ctx context.Context, transport, dest string) (Conn, error) {
	ap, err := netip.ParseAddrPort(dest)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", dest, ErrNotAddress)
	}
	ap = unmap(ap)
	switch strings.ToUpper(transport) {
	case "UDP":
		u := t.udpFor(ap.Addr())
		if u == nil {
			return nil, fmt.Errorf("no UDP listener to send to %s from", ap)
		}
		return &udpPeer{sock: u, remote: ap}, nil
	case "TCP", "TLS":
		return t.streamTo(ctx, strings.ToUpper(transport), ap)
	case "WS", "WSS":
		return t.wsTo(strings.ToUpper(transport), ap)
	}
	return nil, fmt.Errorf("transport %s is not served", transport)
}

// udpFor picks the UDP socket to send to addr from: the first of its
// address family, so replies and NAT bindings use the port we listen on.
func (t *Transport) udpFor(addr netip.Addr) *udpSocket {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, u := range t.udp {
		if u.local.Addr().Is4() == addr.Is4() {
			return u
		}
	}
	if len(t.udp) > 0 {
		return t.udp[0]
	}
	return nil
}

// Close stops every listener and connection and waits for their loops.
func (t *Transport) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	t.mu.Lock()
	var errs []error
	for _, u := range t.udp {
		if err := u.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, ln := range t.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	streams := make([]*stream, 0, len(t.streams))
	for _, s := range t.streams {
		streams = append(streams, s)
	}
	wss := make([]*wsConn, 0, len(t.ws))
	for _, w := range t.ws {
		wss = append(wss, w)
	}
	servers := t.httpServers
	t.mu.Unlock()
	for _, s := range streams {
		s.close()
	}
	for _, w := range wss {
		w.close()
	}
	for _, hs := range servers {
		_ = hs.Close()
	}
	t.wg.Wait()
	return errors.Join(errs...)
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Listener is one socket sori listens on.
type Listener struct {
	Transport string // "udp", "tcp", "tls", "ws" or "wss"
	Addr      netip.AddrPort
}

func (l Listener) String() string { return l.Transport + ":" + l.Addr.String() }
