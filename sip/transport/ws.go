package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/coder/websocket"
	"github.com/emiago/sipgo/sip"
)

// SIP over WebSocket (RFC 7118): an HTTP listener (ws) or HTTPS one (wss)
// upgrades to WebSocket with the "sip" subprotocol; each WebSocket message
// is one SIP message, so no framing is needed. sori never opens a
// WebSocket itself: a browser or app reaches sori, and requests to it go
// down the connection it opened.

// listenWS starts a ws or wss listener.
func (t *Transport) listenWS(l Listener) error {
	if l.Transport == "wss" && t.opts.TLS == nil {
		return fmt.Errorf("sip listen %s: no TLS certificate configured", l)
	}
	tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(l.Addr))
	if err != nil {
		return fmt.Errorf("sip listen %s: %w", l, err)
	}
	var ln net.Listener = tcp
	if l.Transport == "wss" {
		ln = tls.NewListener(tcp, t.opts.TLS)
	}
	transport := strings.ToUpper(l.Transport)
	hs := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.upgrade(w, r, transport) }),
		ReadHeaderTimeout: t.opts.StallTimeout,
	}
	t.mu.Lock()
	t.listeners = append(t.listeners, ln)
	t.httpServers = append(t.httpServers, hs)
	t.bound(l.Transport, unmap(tcp.Addr().(*net.TCPAddr).AddrPort()))
	t.mu.Unlock()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !t.closed.Load() {
			t.log.Warn("websocket listener stopped", "listener", l.String(), "error", err)
		}
	}()
	return nil
}

// upgrade accepts one WebSocket connection that speaks SIP.
func (t *Transport) upgrade(w http.ResponseWriter, r *http.Request, transport string) {
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		http.Error(w, "bad remote address", http.StatusBadRequest)
		return
	}
	// Web apps calling through sori are served from other origins: any
	// origin may connect (a SIP client authenticates in SIP, as over UDP).
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"sip"}, InsecureSkipVerify: true})
	if err != nil {
		return // Accept answered the HTTP request
	}
	if c.Subprotocol() != "sip" {
		_ = c.Close(websocket.StatusPolicyViolation, "the sip subprotocol is required (RFC 7118)")
		return
	}
	c.SetReadLimit(maxBuffered)
	local, _ := netip.ParseAddrPort(r.Context().Value(http.LocalAddrContextKey).(net.Addr).String())
	ws := &wsConn{t: t, c: c, transport: transport, remote: unmap(remote), local: unmap(local)}
	ws.lifetime = newLifetime(ws.shut)
	t.mu.Lock()
	if t.closed.Load() || t.nstreams >= t.opts.MaxStreams {
		t.mu.Unlock()
		_ = c.Close(websocket.StatusTryAgainLater, "too many connections")
		return
	}
	t.nstreams++
	t.ws[ws.key()] = ws
	t.mu.Unlock()
	t.conns.WithLabelValues(transport).Inc()
	ws.serve() // on the HTTP server's goroutine for this connection
}

// wsConn is one WebSocket connection.
type wsConn struct {
	t         *Transport
	c         *websocket.Conn
	transport string // "WS" or "WSS"
	remote    netip.AddrPort
	local     netip.AddrPort

	lifetime // when it closes (lifetime.go)
}

func (w *wsConn) key() streamKey { return streamKey{w.transport, w.remote} }

// serve reads messages until the peer closes or the connection idles out.
func (w *wsConn) serve() {
	defer w.readDone()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), w.t.opts.IdleTimeout)
		_, data, err := w.c.Read(ctx)
		cancel()
		if err != nil {
			return
		}
		// A double CRLF is a keepalive ping; it gets a CRLF pong (RFC 5626
		// §4.4.1, as on the other connection-oriented transports).
		if len(bytes.Trim(data, "\r\n")) == 0 {
			if bytes.Count(data, []byte("\r\n")) >= 2 {
				if w.Write([]byte("\r\n")) == nil {
					w.t.keepalives.WithLabelValues(w.transport, "crlf").Inc()
				}
			}
			continue
		}
		w.t.ingest(data, w)
	}
}

// shut closes the socket and forgets the connection (once, from
// lifetime). After the peer stopped (its read failed) or at shutdown there
// is no closing handshake to wait for: the socket is closed at once.
func (w *wsConn) shut() {
	_ = w.c.CloseNow()
	forget(w.t, w.t.ws, w.key(), w)
}

func (w *wsConn) Transport() string      { return w.transport }
func (w *wsConn) Remote() netip.AddrPort { return w.remote }
func (w *wsConn) LocalAddr() net.Addr    { return net.TCPAddrFromAddrPort(w.local) }
func (w *wsConn) String() string         { return strings.ToLower(w.transport) + ":" + w.remote.String() }
func (w *wsConn) Ref(int) int            { return 1 }
func (w *wsConn) TryClose() (int, error) { return 1, nil }
func (w *wsConn) Close() error           { return nil }

// Write implements Conn: one SIP message, one text message.
func (w *wsConn) Write(b []byte) error {
	if w.isClosed() {
		return fmt.Errorf("%s %s: %w", strings.ToLower(w.transport), w.remote, net.ErrClosed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, b); err != nil {
		go w.close()
		return fmt.Errorf("%s send to %s: %w", strings.ToLower(w.transport), w.remote, err)
	}
	return nil
}

// WriteMsg implements sip.Connection.
func (w *wsConn) WriteMsg(m sip.Message) error {
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	m.StringWrite(buf)
	w.t.seal(buf, m, w.remote)
	return w.Write(buf.Bytes())
}

// wsTo is the open WebSocket connection to ap (sori never dials one).
func (t *Transport) wsTo(transport string, ap netip.AddrPort) (Conn, error) {
	t.mu.Lock()
	w := t.ws[streamKey{transport, ap}]
	t.mu.Unlock()
	if w == nil || w.isClosed() {
		return nil, fmt.Errorf("%s %s: %w", strings.ToLower(transport), ap, ErrFlowClosed)
	}
	return w, nil
}
