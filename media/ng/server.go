package ng

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Handler answers one command. from is the control client's address.
type Handler interface {
	Handle(ctx context.Context, cmd string, req Dict, from netip.AddrPort) Dict
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, cmd string, req Dict, from netip.AddrPort) Dict

// Handle implements Handler.
func (f HandlerFunc) Handle(ctx context.Context, cmd string, req Dict, from netip.AddrPort) Dict {
	return f(ctx, cmd, req, from)
}

// Server answers ng requests on one UDP socket. A retransmitted request
// (same cookie from the same client) gets the first reply again instead
// of being run twice, as rtpengine does: an offer must not allocate twice.
type Server struct {
	conn *net.UDPConn
	log  *slog.Logger
	ttl  time.Duration

	mu      sync.Mutex
	replies map[replyKey]cachedReply
}

type replyKey struct {
	from   netip.AddrPort
	cookie string
}

type cachedReply struct {
	b    []byte
	at   time.Time
	done bool // false while the first copy is being handled
}

// NewServer is a server on conn; Serve gives it its handler. It can send
// (Notify) before it serves, so the handler can be built with it.
func NewServer(conn *net.UDPConn, log *slog.Logger) *Server {
	return &Server{conn: conn, log: log, ttl: 30 * time.Second, replies: map[replyKey]cachedReply{}}
}

// Addr is the address the server listens on.
func (s *Server) Addr() netip.AddrPort { return s.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Send writes an unsolicited message (a notification) to a control client.
func (s *Server) Send(to netip.AddrPort, cookie string, d Dict) error {
	b, err := Encode(cookie, d)
	if err != nil {
		return err
	}
	_, err = s.conn.WriteToUDPAddrPort(b, to)
	return err
}

// Notify sends a notification to a control client with a fresh cookie.
func (s *Server) Notify(to netip.AddrPort, d Dict) error {
	return s.Send(to, "notify-"+strconv.FormatInt(time.Now().UnixNano(), 36), d)
}

// Serve reads requests until ctx ends or the socket is closed. Each
// request runs in its own goroutine, so a slow one does not hold the rest.
func (s *Server) Serve(ctx context.Context, h Handler) error {
	go func() {
		<-ctx.Done()
		_ = s.conn.Close()
	}()
	go s.expire(ctx)
	buf := make([]byte, 65535)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		msg := append([]byte(nil), buf[:n]...)
		go s.serveOne(ctx, h, msg, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
	}
}

func (s *Server) serveOne(ctx context.Context, h Handler, msg []byte, from netip.AddrPort) {
	cookie, req, err := parseOwned(msg, false) // msg is this request's own copy
	if err != nil {
		s.log.Info("ng: bad request", "from", from, "error", err)
		if cookie != "" {
			s.reply(from, cookie, Error("Failed to decode bencode dictionary"))
		}
		return
	}
	key := replyKey{from, cookie}
	s.mu.Lock()
	if c, ok := s.replies[key]; ok {
		s.mu.Unlock()
		if c.done {
			_, _ = s.conn.WriteToUDPAddrPort(c.b, from)
		}
		return // the first copy is still running; its reply will answer
	}
	s.replies[key] = cachedReply{at: time.Now()}
	s.mu.Unlock()

	cmd := req.Str("command")
	var res Dict
	if cmd == "" {
		res = Error("No command given")
	} else {
		res = h.Handle(ctx, cmd, req, from)
	}
	b := s.encode(cookie, res)
	// Cached before it is sent: a retransmission that crosses the reply
	// finds it, instead of being taken for a copy still running.
	s.mu.Lock()
	s.replies[key] = cachedReply{b: b, at: time.Now(), done: true}
	s.mu.Unlock()
	s.send(from, b)
}

func (s *Server) reply(to netip.AddrPort, cookie string, res Dict) {
	s.send(to, s.encode(cookie, res))
}

func (s *Server) encode(cookie string, res Dict) []byte {
	b, err := Encode(cookie, res)
	if err != nil {
		s.log.Warn("ng: reply not encodable", "error", err)
		b, _ = Encode(cookie, Error("internal error"))
	}
	return b
}

func (s *Server) send(to netip.AddrPort, b []byte) {
	if _, err := s.conn.WriteToUDPAddrPort(b, to); err != nil {
		s.log.Debug("ng: reply not sent", "to", to, "error", err)
	}
}

func (s *Server) expire(ctx context.Context) {
	t := time.NewTicker(s.ttl / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.mu.Lock()
			for k, c := range s.replies {
				if now.Sub(c.at) > s.ttl {
					delete(s.replies, k)
				}
			}
			s.mu.Unlock()
		}
	}
}
