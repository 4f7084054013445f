package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/wire"
)

// maxBuffered bounds what a connection may hold unframed: a message larger
// than wire allows is refused before this is reached.
const maxBuffered = 2 * 65536

// streamKey names a connection: its transport ("TCP", "TLS") and far end.
type streamKey struct {
	transport string
	remote    netip.AddrPort
}

// stream is one TCP or TLS connection, accepted or dialled. Its read loop frames
// messages; every transaction reading from it holds it open until answered,
// so a peer that closes its sending side, or sends garbage after a request,
// still gets the responses to what it sent before.
type stream struct {
	t         *Transport
	c         net.Conn // a *net.TCPConn, or a *tls.Conn over one
	transport string   // "TCP" or "TLS"
	remote    netip.AddrPort
	local     netip.AddrPort
	// handshake, for a TLS connection sori accepted, runs first in serve.
	handshake func() error
	// vouched: Options.Vouch vouched for the peer's certificate (set
	// under t.mu, read without it by each message's ingest); gone:
	// closed, and counted so (under t.mu; vouch.go).
	vouched atomic.Bool
	gone    bool

	wmu sync.Mutex // one message at a time on the wire

	lifetime // when it closes (lifetime.go)
}

// accept serves a TCP or TLS listener (transport "TCP" or "TLS"). A TLS
// handshake runs on the connection's own goroutine, so a slow or silent
// client never holds up the accept loop.
func (t *Transport) accept(ln *net.TCPListener, transport string) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if t.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			t.log.Warn("accept failed", "transport", transport, "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		var conn net.Conn = c
		var tc *tls.Conn
		if transport == "TLS" {
			tc = tls.Server(c, t.opts.TLS)
			conn = tc
		}
		s, err := t.addStream(conn, c, transport)
		if err != nil {
			t.log.Info("connection refused", "transport", transport, "remote", c.RemoteAddr().String(), "error", err)
			_ = c.Close()
			continue
		}
		if tc != nil {
			s.handshake = func() error {
				ctx, cancel := context.WithTimeout(context.Background(), t.opts.StallTimeout)
				defer cancel()
				if err := tc.HandshakeContext(ctx); err != nil {
					return err
				}
				t.vouchHandshake(s, tc.ConnectionState())
				return nil
			}
		}
		t.wg.Add(1)
		go s.serve()
	}
}

// addStream registers a new connection (conn, over the TCP connection
// tcp) under its transport and remote address.
func (t *Transport) addStream(conn net.Conn, tcp *net.TCPConn, transport string) (*stream, error) {
	s := &stream{t: t, c: conn, transport: transport,
		remote: unmap(tcp.RemoteAddr().(*net.TCPAddr).AddrPort()),
		local:  unmap(tcp.LocalAddr().(*net.TCPAddr).AddrPort())}
	s.lifetime = newLifetime(s.shut)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed.Load() {
		return nil, net.ErrClosed
	}
	if t.nstreams >= t.opts.MaxStreams {
		return nil, fmt.Errorf("%d connections open (the limit)", t.nstreams)
	}
	t.nstreams++
	t.conns.WithLabelValues(transport).Inc()
	t.vouchOpened(s)
	k := s.key()
	if old := t.streams[k]; old == nil || old.isClosed() {
		t.streams[k] = s
	}
	return s, nil
}

func (s *stream) key() streamKey { return streamKey{s.transport, s.remote} }

// streamTo returns the open connection to ap over transport ("TCP",
// "TLS"), or dials one. ap is always an address sori chose to send a
// request to.
func (t *Transport) streamTo(ctx context.Context, transport string, ap netip.AddrPort) (*stream, error) {
	t.mu.Lock()
	s := t.streams[streamKey{transport, ap}]
	t.mu.Unlock()
	if s != nil && !s.isClosed() {
		return s, nil
	}
	if existingOnly(ctx) {
		return nil, fmt.Errorf("%s %s: %w", strings.ToLower(transport), ap, ErrFlowClosed)
	}
	var tlsConfig *tls.Config
	if transport == "TLS" {
		if t.opts.TLSClient != nil {
			tlsConfig = t.opts.TLSClient(ap)
		}
		if tlsConfig == nil {
			return nil, fmt.Errorf("tls connect %s: no TLS configured for that destination (only carriers' gateways and other nodes are dialled)", ap)
		}
	}
	dial := t.opts.Dial
	if dial == nil {
		d := net.Dialer{Timeout: dialTimeout}
		if l, ok := t.Local(strings.ToLower(transport)); ok && !l.Addr().IsUnspecified() && l.Addr().Is4() == ap.Addr().Is4() {
			d.LocalAddr = &net.TCPAddr{IP: l.Addr().AsSlice()}
		}
		dial = d.DialContext
	}
	c, err := dial(ctx, "tcp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("%s connect %s: %w", strings.ToLower(transport), ap, err)
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		_ = c.Close()
		return nil, fmt.Errorf("%s connect %s: not a TCP connection", strings.ToLower(transport), ap)
	}
	var conn net.Conn = tc
	if transport == "TLS" {
		tlsc := tls.Client(tc, tlsConfig)
		if err := tlsc.HandshakeContext(ctx); err != nil {
			t.handshakeFailed.WithLabelValues("out").Inc()
			_ = c.Close()
			return nil, fmt.Errorf("tls connect %s: %w", ap, err)
		}
		conn = tlsc
	}
	s, err = t.addStream(conn, tc, transport)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	if tlsc, ok := conn.(*tls.Conn); ok {
		t.vouchHandshake(s, tlsc.ConnectionState()) // before anything is read from it
	}
	t.wg.Add(1)
	go s.serve()
	return s, nil
}

// serve reads and frames until the peer stops, the connection idles out, or
// the stream cannot be framed any more.
func (s *stream) serve() {
	defer s.t.wg.Done()
	defer s.readDone()
	if s.handshake != nil {
		if err := s.handshake(); err != nil {
			s.t.handshakeFailed.WithLabelValues("in").Inc()
			s.t.log.Debug("TLS handshake failed", "remote", s.remote, "error", err)
			return
		}
	}
	buf := make([]byte, 0, 8192)
	rd := make([]byte, 32768)
	crlf := 0
	for {
		timeout := s.t.opts.IdleTimeout
		if len(buf) > 0 {
			timeout = s.t.opts.StallTimeout // a message has begun: it must go on arriving
		}
		_ = s.c.SetReadDeadline(time.Now().Add(timeout))
		n, err := s.c.Read(rd)
		if n > 0 {
			var ok bool
			buf, ok = s.consume(append(buf, rd[:n]...), &crlf)
			if !ok {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// consume hands every complete message in buf to the transport and
// returns what is left (moved to the front of buf); false when the stream
// cannot go on (answered if possible).
func (s *stream) consume(buf []byte, crlf *int) ([]byte, bool) {
	off := 0
	for off < len(buf) {
		// CRLFs between messages are keepalives: a double CRLF is a ping
		// and gets a CRLF pong (RFC 5626 §4.4.1).
		for off < len(buf) && (buf[off] == '\r' || buf[off] == '\n') {
			off++
			if *crlf++; *crlf == 4 {
				*crlf = 0
				if err := s.Write([]byte("\r\n")); err != nil {
					return nil, false
				}
				s.t.keepalives.WithLabelValues(s.transport, "crlf").Inc()
			}
		}
		if off == len(buf) {
			break
		}
		*crlf = 0
		skip, n, err := wire.Frame(buf[off:])
		switch {
		case errors.Is(err, wire.ErrIncomplete):
			if len(buf)-off > maxBuffered {
				s.t.refuse(buf[off:], wire.Info{Kind: wire.Request}, 513, "Message Too Large", s)
				return nil, false
			}
			return buf[:copy(buf, buf[off:])], true
		case err != nil:
			var fe *wire.FramingError
			code, reason, head := 400, "Bad Message Framing", buf[off:]
			if errors.As(err, &fe) {
				code, reason = fe.Code, fe.Reason
				if fe.End > skip && fe.End <= len(head) {
					head = head[skip:fe.End]
				}
			}
			s.t.refuse(head, wire.Info{Kind: wire.Request}, code, reason, s)
			return nil, false
		}
		s.t.ingest(buf[off+skip:off+n], s)
		off += n
	}
	return buf[:copy(buf, buf[off:])], true
}

// shut closes the socket and forgets the connection (once, from lifetime).
func (s *stream) shut() {
	_ = s.c.Close()
	s.t.mu.Lock()
	s.t.vouchClosed(s)
	s.t.mu.Unlock()
	forget(s.t, s.t.streams, s.key(), s)
}

// forget is a closed connection's bookkeeping, for streams and WebSocket
// connections alike: out of its map (unless a newer one took its place),
// one fewer open, and the gauge.
func forget[C comparable](t *Transport, m map[streamKey]C, k streamKey, c C) {
	t.mu.Lock()
	if m[k] == c {
		delete(m, k)
	}
	t.nstreams--
	t.mu.Unlock()
	t.conns.WithLabelValues(k.transport).Dec()
}

func (s *stream) Transport() string      { return s.transport }
func (s *stream) Remote() netip.AddrPort { return s.remote }
func (s *stream) LocalAddr() net.Addr    { return s.c.LocalAddr() }
func (s *stream) String() string         { return strings.ToLower(s.transport) + ":" + s.remote.String() }

// Ref, TryClose and Close are sipgo's connection reference counting; a
// connection's life is the peer's and the idle timer's, and Hold's.
func (s *stream) Ref(int) int            { return 1 }
func (s *stream) TryClose() (int, error) { return 1, nil }
func (s *stream) Close() error           { return nil }

// Write implements Conn.
func (s *stream) Write(b []byte) error {
	if s.isClosed() {
		return fmt.Errorf("%s %s: %w", strings.ToLower(s.transport), s.remote, net.ErrClosed)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := s.c.Write(b); err != nil {
		go s.close() // a peer that does not read is gone
		return fmt.Errorf("%s send to %s: %w", strings.ToLower(s.transport), s.remote, err)
	}
	return nil
}

// WriteMsg implements sip.Connection.
func (s *stream) WriteMsg(m sip.Message) error {
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	m.StringWrite(buf)
	s.t.seal(buf, m, s.remote)
	return s.Write(buf.Bytes())
}
