// Package server joins sori's transport (sip/transport) and transaction
// layer (sip/transaction) and hands every request to the handler chain. It
// owns what is the same for every request: the Server header, latency
// metrics, writing the answer a link of the chain decided (chain.Answer),
// the stateless path for REGISTER over UDP, and draining on shutdown (new
// requests get 503, in-flight ones finish). It is also what the proxy and
// sori's own requests (sip/uac) are sent with.
//
// A Server is built first (New), so that everything that sends can be
// given it; Start gives it the chain and opens the sockets.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/gopool"
	"github.com/sori-voice/sori/sip/methods"
	"github.com/sori-voice/sori/sip/overload"
	"github.com/sori-voice/sori/sip/transaction"
	"github.com/sori-voice/sori/sip/transport"
)

// Options configure a Server.
type Options struct {
	Listeners []transport.Listener
	// Advertise is the host[:port] written in Via and Record-Route
	// (SentBy); empty: the listener's own address.
	Advertise  string
	Product    string // Server header value, e.g. "Sori/0.1"
	RetryAfter int    // seconds, with every 503 sori answers
	// TimerJ is how long a finished non-INVITE server transaction absorbs
	// retransmissions, and a finished INVITE transaction (Timers L, M, D). RFC 3261 says 32 s on UDP; every such transaction holds
	// its request and response that long, which at 20 000 transactions/s is
	// gigabytes of live heap. Kamailio keeps them 5 s (tm wt_timer); a REGISTER
	// retransmitted later is re-applied, which is idempotent.
	TimerJ time.Duration
	// ShedAfter: a new UDP request that waited longer than this between
	// reaching the host and being read is answered 503 (sip/overload);
	// 0: none is.
	ShedAfter time.Duration
	// Gate screens sources before their messages are parsed; nil: none.
	Gate transport.Gate
	// TLS serves the tls listeners; nil: none may be configured.
	TLS *tls.Config
	// TLSClient is the TLS configuration for connections sori opens to
	// dest (carriers' gateways); nil: none.
	TLSClient func(dest netip.AddrPort) *tls.Config
	// Vouch tells whether a TLS connection's peer certificate vouches for
	// the peer at remote (transport.Options.Vouch); nil: none does.
	Vouch func(cs tls.ConnectionState, remote netip.AddrPort) bool
	// Signer signs and checks the nodes' messages in the clear
	// (transport.Options.Signer); nil: none.
	Signer     transport.Signer
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
}

// Server is a running set of SIP listeners.
type Server struct {
	opts     Options
	handler  chain.Handler
	tp       *transport.Transport
	tx       *transaction.Layer
	log      *slog.Logger
	latency  *prometheus.HistogramVec
	inflight atomic.Int64 // requests inside the chain; Shutdown waits for zero
	draining atomic.Bool
	server   sip.Header

	// pool runs every received message: the transaction layer's, and the
	// UDP REGISTERs served without one (sip/gopool says why).
	pool *gopool.Pool
	// base is every request's context; Shutdown ends it (chain.ErrShutdown)
	// when in-flight requests outlast its grace.
	base    context.Context
	endBase context.CancelCauseFunc

	retrans retransCache
	shed    *overload.Shedder
}

// shutdownGrace is how long Shutdown lets in-flight requests finish by
// themselves before it ends them.
const shutdownGrace = 2 * time.Second

// New prepares a server; Start opens the sockets.
func New(o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	sip.SetDefaultLogger(o.Log.With("component", "sip"))
	if o.TimerJ > 0 {
		// sipgo keeps these timers in package variables, so they are
		// process-wide. What each keeps a finished transaction for is the
		// same job as Timer J's, so it gets the same time, as Kamailio's
		// one wt_timer does for all: an INVITE's server and client
		// transactions after a 2xx (Timers L and M: absorbing a 2xx sent
		// again while its ACK is on its way) and a forwarded INVITE's after
		// a non-2xx (Timer D). At 64*T1 each, every call kept three
		// transactions 32 s, with their requests and responses: most of
		// sori's live heap under load (250 MB at 600 calls/s).
		sip.Timer_J, sip.Timer_L, sip.Timer_M, sip.Timer_D = o.TimerJ, o.TimerJ, o.TimerJ, o.TimerJ
	}
	s := &Server{
		opts: o, log: o.Log,
		server: sip.NewHeader("Server", o.Product),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sori_sip_request_duration_seconds",
			Help:    "Time from a request reaching the handler chain to its final response, by method.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method"}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(s.latency)
	}
	s.shed = overload.New(o.ShedAfter, o.Registerer, o.Log.With("component", "overload"))
	s.pool = gopool.New(poolKeep, poolMax, poolIdle)
	s.tx = transaction.New((*transactionUser)(s), s.pool, o.Log.With("component", "transaction"))
	s.tp = transport.New(transport.Options{
		Listeners: o.Listeners, Handler: (*received)(s), Gate: o.Gate, TLS: o.TLS, TLSClient: o.TLSClient, Vouch: o.Vouch, Signer: o.Signer, Server: o.Product, RetryAfter: o.RetryAfter,
		Log: o.Log.With("component", "transport"), Registerer: o.Registerer,
	})
	timerJ := o.TimerJ
	if timerJ <= 0 {
		timerJ = sip.Timer_J
	}
	s.retrans.init(timerJ)
	s.base, s.endBase = context.WithCancelCause(context.Background())
	return s, nil
}

// Pool is the server's pool of goroutines, for other per-message work
// (the proxy's branches).
func (s *Server) Pool() *gopool.Pool { return s.pool }

// The pool keeps poolKeep goroutines and grows to poolMax, those beyond
// poolKeep ending after poolIdle without work. Measured before the pool
// (then the server's own workers): 64 long-lived workers against a
// goroutine per message cut about a tenth of sori's CPU at 8000
// REGISTER/s; 256 did worse than 64 (newstack 10 %), their stacks
// shrinking at each GC because each ran too seldom (the pool now takes the
// most recently idle first, so the busy ones stay few).
const (
	poolKeep = 64
	poolMax  = 4096
	poolIdle = 2 * time.Second
)

type job struct {
	// a REGISTER over UDP answered without a transaction (stateless.go)
	req  *sip.Request
	peer transport.Conn
}

// Start serves requests with h and opens every listener; an address
// already in use fails here, before anything is served.
func (s *Server) Start(h chain.Handler) error {
	if s.handler != nil {
		return errors.New("sip server: already started")
	}
	s.handler = h
	return s.tp.Start()
}

// Addrs returns the bound addresses as "transport:ip:port" (useful with port 0).
func (s *Server) Addrs() []string { return s.tp.Addrs() }

// received is the Server as the transport's Handler: a REGISTER over UDP
// takes the stateless path, everything else the transaction layer.
type received Server

func (r *received) Request(req *sip.Request, c transport.Conn) {
	s := (*Server)(r)
	if a, ok := c.(transport.Arrived); ok && s.shed.Shed(req, a.Arrived(), time.Now()) {
		// Answered here, on the reading goroutine, with no transaction: the
		// cheapest answer there is, which is the point while behind.
		_ = chain.Answer(&serverHeader{next: connWriter{c}, header: s.server}, req, chain.Unavailable(""), s.opts.RetryAfter)
		return
	}
	if req.Method == sip.REGISTER && c.Transport() == "UDP" {
		s.stateless(req, c)
		return
	}
	s.tx.Request(req, c)
}

func (r *received) Response(res *sip.Response, c transport.Conn) { r.tx.Response(res, c) }

// transactionUser is the Server as the transaction layer's User.
type transactionUser Server

// Stray: a response matching no client transaction (a stray, or one for a
// branch already given up) is dropped (RFC 6026 §7.2).
func (u *transactionUser) Stray(res *sip.Response) {
	u.log.Debug("stray response dropped", "response", res.StartLine(), "source", res.Source())
}

// Request runs one request through the chain inside its transaction (nil
// for the ACK of a 2xx).
func (u *transactionUser) Request(req *sip.Request, tx *sip.ServerTx) {
	s := (*Server)(u)
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	ctx := s.base
	if req.IsInvite() && tx != nil {
		// A CANCEL matching this INVITE ends its context: the proxy cancels
		// its branches. The transaction layer has already answered 200 to
		// the CANCEL and the INVITE's state machine answers 487.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		tx.OnCancel(func(*sip.Request) { cancel(chain.ErrCanceled) })
	}
	s.serveTx(ctx, req, tx) // already on a goroutine of the pool (transaction.Layer)
}

// serveTx runs the chain for a request in its transaction. A request the
// chain leaves without a final answer is dropped on purpose (a scanner, a
// banned source): its transaction ends without a response.
func (s *Server) serveTx(ctx context.Context, req *sip.Request, tx *sip.ServerTx) {
	w := &txWriter{tx: tx}
	s.serveReq(ctx, req, &serverHeader{next: w, header: s.server})
	if tx != nil && !w.final.Load() {
		tx.Terminate()
	}
}

// serveReq runs the chain, or answers 503 while draining.
func (s *Server) serveReq(ctx context.Context, req *sip.Request, w chain.ResponseWriter) {
	if s.draining.Load() {
		_ = chain.Answer(w, req, chain.Unavailable(""), s.opts.RetryAfter)
		return
	}
	start := time.Now()
	result := s.handler.ServeSIP(ctx, w, &chain.Request{Request: req})
	if err := chain.Answer(w, req, result, s.opts.RetryAfter); err != nil {
		s.log.Debug("answer not sent", "call_id", req.CallID().Value(), "code", result.Code, "error", err)
	}
	if !req.IsAck() {
		s.latency.WithLabelValues(methods.Label(req.Method)).Observe(time.Since(start).Seconds())
	}
}

// Shutdown stops taking requests (they get 503 with Retry-After), waits for
// in-flight ones until ctx ends, then closes sockets and transactions.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	var err error
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	// Requests finishing by themselves get a grace (a call about to be
	// answered); those still waiting then (a call ringing, a push wait) are
	// ended: their branches cancelled, their callers answered.
	grace := time.NewTimer(shutdownGrace)
	defer grace.Stop()
	for s.inflight.Load() > 0 && err == nil {
		select {
		case <-tick.C:
		case <-grace.C:
			s.endBase(chain.ErrShutdown)
		case <-ctx.Done():
			err = fmt.Errorf("sip server: %d in-flight requests still running: %w", s.inflight.Load(), ctx.Err())
		}
	}
	s.endBase(chain.ErrShutdown)
	if err == nil {
		s.pool.Close() // nothing is in flight: its goroutines can go
	}
	s.tx.Close()
	if cerr := s.tp.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// serverHeader adds the Server header to every response.
type serverHeader struct {
	next   chain.ResponseWriter
	header sip.Header
}

func (w *serverHeader) Respond(res *sip.Response) error {
	if res.GetHeader("Server") == nil {
		res.AppendHeader(w.header)
	}
	return w.next.Respond(res)
}

func (w *serverHeader) OnCancel(f func()) { chain.OnCancel(w.next, f) }

// connWriter responds straight on the connection its request came on.
type connWriter struct{ c transport.Conn }

func (w connWriter) Respond(res *sip.Response) error { return w.c.WriteMsg(res) }

// txWriter responds within a server transaction; the transaction writes
// to the connection, or the socket and source address, its request came on.
type txWriter struct {
	tx    *sip.ServerTx
	final atomic.Bool // a handler may answer from another goroutine
}

func (w *txWriter) Respond(res *sip.Response) error {
	if w.tx == nil {
		return errors.New("sip server: no transaction to respond in")
	}
	if res.StatusCode >= 200 {
		w.final.Store(true)
	}
	return w.tx.Respond(res)
}

// OnCancel runs f in the transaction's CANCEL hook, before its 487.
func (w *txWriter) OnCancel(f func()) {
	if w.tx != nil {
		w.tx.OnCancel(func(*sip.Request) { f() })
	}
}

// Request sends req in a new client transaction, to its destination
// (an IP address and port) over its transport.
func (s *Server) Request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	c, err := s.tp.Conn(ctx, req.Transport(), req.Destination())
	if err != nil {
		return nil, err
	}
	return s.tx.Send(ctx, req, c)
}

// Write sends req without a transaction (an ACK for a 2xx). Over UDP,
// which dials nothing, it does without the 5 s context bounding a dial:
// its timer was 4 of the 16 allocations of BenchmarkWriteACK (648 → 376 B
// per ACK), and a timer set and stopped on the runtime's heap per call.
func (s *Server) Write(req *sip.Request) error {
	tp, ctx := req.Transport(), context.Background()
	if !strings.EqualFold(tp, "UDP") {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	c, err := s.tp.Conn(ctx, tp, req.Destination())
	if err != nil {
		return err
	}
	return c.WriteMsg(req)
}

// Open reports whether the flow from remote over transport is still open
// (sip/transport).
func (s *Server) Open(transport, remote string) bool { return s.tp.Open(transport, remote) }

// Vouched reports whether the TLS connection a message from remote came
// in on has a peer certificate Options.Vouch vouched for (and every other
// open one from there): transport.Transport.Vouched.
func (s *Server) Vouched(transport, remote string) bool { return s.tp.Vouched(transport, remote) }

// Keepalive sends a double CRLF (RFC 5626 §3.5.1) to dest over UDP from
// sori's socket: it refreshes a NAT's mapping towards sori, and nothing
// answers it.
func (s *Server) Keepalive(ctx context.Context, dest string) error {
	c, err := s.tp.Conn(ctx, "UDP", dest)
	if err != nil {
		return err
	}
	return c.Write([]byte("\r\n\r\n"))
}

// SentBy is the host and port sori writes in Via and Record-Route for
// transport ("UDP", "TCP"): sip.advertise, else the first listener's.
func (s *Server) SentBy(transport string) (string, int, error) {
	ap, ok := s.tp.Local(strings.ToLower(transport))
	if !ok {
		return "", 0, fmt.Errorf("no %s listener to send from", transport)
	}
	host, port := ap.Addr().String(), int(ap.Port())
	if ap.Addr().Is6() {
		host = "[" + host + "]"
	}
	if a := s.opts.Advertise; a != "" {
		if h, pt, err := net.SplitHostPort(a); err == nil {
			host = h
			if n, err := strconv.Atoi(pt); err == nil {
				port = n
			}
		} else {
			host = a
		}
	}
	return host, port, nil
}
