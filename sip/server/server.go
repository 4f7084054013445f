// Package server binds sori's sockets to sipgo's transport and transaction
// layers and hands every request to the handler chain. It owns what is the
// same for every request: the Server header, latency metrics, and draining on
// shutdown (new requests get 503, in-flight ones finish).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/sip/chain"
)

// Options configure a Server.
type Options struct {
	Listeners  []config.Listener
	Product    string // Server header value, e.g. "Sori/0.1"
	RetryAfter int    // seconds, in 503 while draining
	// TimerJ is how long a finished non-INVITE server transaction absorbs
	// retransmissions. RFC 3261 says 32 s on UDP; every such transaction holds
	// its request and response that long, which at 20 000 transactions/s is
	// gigabytes of live heap. Kamailio keeps them 5 s (tm wt_timer); a REGISTER
	// retransmitted later is re-applied, which is idempotent.
	TimerJ     time.Duration
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
}

// Server is a running set of SIP listeners.
type Server struct {
	opts     Options
	handler  chain.Handler
	ua       *sipgo.UserAgent
	srv      *sipgo.Server
	client   *sipgo.Client
	log      *slog.Logger
	latency  *prometheus.HistogramVec
	inflight atomic.Int64 // requests inside the chain; Shutdown waits for zero
	draining atomic.Bool
	server   sip.Header

	jobs  chan job // unbuffered: a send succeeds only when a worker is idle
	stop  chan struct{}
	dones sync.Pool

	retrans retransCache

	mu      sync.Mutex
	udp     map[string]*net.UDPConn   // local address -> socket, for stateless replies
	local   map[string]netip.AddrPort // transport -> first bound address
	closers []func() error
	serving sync.WaitGroup
	addrs   []string
}

// New prepares a server; Start opens the sockets.
func New(h chain.Handler, o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	sip.SetDefaultLogger(o.Log.With("component", "sipgo"))
	if o.TimerJ > 0 {
		// sipgo keeps Timer J in a package variable, so it is process-wide.
		sip.Timer_J = o.TimerJ
	}
	s := &Server{}
	// A proxy forwards INVITEs with large SDP and many headers; sipgo refuses
	// UDP messages over 1300 bytes by default (RFC 3261 §18.1.1 would switch
	// to TCP, which phones behind NAT cannot accept). Like Kamailio, send
	// them over UDP and let IP fragment them.
	sip.UDPMTUSize = 65535
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(o.Product),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerReadFilter(s.readFilter)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerUnhandledResponseHandler(func(r *sip.Response) {
			// A response matching no client transaction (a stray, or one for a
			// branch already given up) is dropped (RFC 6026 §7.2).
			o.Log.Debug("stray response dropped", "response", r.StartLine(), "source", r.Source())
		})))
	if err != nil {
		return nil, fmt.Errorf("sip server: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(o.Log.With("component", "sipgo")))
	if err != nil {
		return nil, fmt.Errorf("sip server: %w", err)
	}
	*s = Server{
		opts: o, handler: h, ua: ua, srv: srv, log: o.Log, udp: map[string]*net.UDPConn{}, local: map[string]netip.AddrPort{},
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
	srv.OnNoRoute(s.dispatch) // every method goes through the chain
	s.client, err = sipgo.NewClient(ua, sipgo.WithClientLogger(o.Log.With("component", "sipgo")))
	if err != nil {
		return nil, fmt.Errorf("sip server: %w", err)
	}
	timerJ := o.TimerJ
	if timerJ <= 0 {
		timerJ = sip.Timer_J
	}
	s.retrans.init(timerJ)
	s.jobs = make(chan job)
	s.stop = make(chan struct{})
	s.dones.New = func() any { return make(chan struct{}, 1) }
	for range workers {
		go s.worker()
	}
	return s, nil
}

// workers is the size of the pool of long-lived goroutines requests run on.
// sipgo starts a fresh goroutine per message; running the chain on one whose
// stack has already grown avoids copying stacks on every request (measured:
// about a tenth of the CPU at 8000 REGISTER/s). When every worker is busy
// (a slow store), the request runs on sipgo's goroutine instead, so a stall
// never queues requests behind each other.
const workers = 64

type job struct {
	// a request inside a sipgo transaction: the dispatching goroutine waits on done
	ctx  context.Context
	req  *sip.Request
	tx   sip.ServerTransaction
	done chan struct{}
	// a REGISTER over UDP answered without a transaction (stateless.go)
	stateless bool
	conn      *net.UDPConn
	src       netip.AddrPort
}

func (s *Server) worker() {
	for {
		select {
		case <-s.stop:
			return
		case j := <-s.jobs:
			if j.stateless {
				s.runStateless(j)
				continue
			}
			s.serveReq(j.ctx, j.req, &serverHeader{next: &txWriter{tx: j.tx, req: j.req}, header: s.server})
			j.done <- struct{}{}
		}
	}
}

// Start opens every listener; an address already in use fails here, before
// anything is served.
func (s *Server) Start() error {
	for _, l := range s.opts.Listeners {
		if err := s.listen(l); err != nil {
			_ = s.closeListeners()
			return err
		}
	}
	return nil
}

// Addrs returns the bound addresses as "transport:ip:port" (useful with port 0).
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.addrs...)
}

func (s *Server) listen(l config.Listener) error {
	addr := l.Addr.String()
	switch l.Transport {
	case "udp":
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(l.Addr))
		if err != nil {
			return fmt.Errorf("sip listen %s: %w", l, err)
		}
		_ = conn.SetReadBuffer(8 << 20) // absorb bursts; the kernel caps it at rmem_max
		_ = conn.SetWriteBuffer(8 << 20)
		s.track(conn.Close, "udp:"+conn.LocalAddr().String())
		s.mu.Lock()
		s.udp[conn.LocalAddr().String()] = conn
		if _, ok := s.local["udp"]; !ok {
			s.local["udp"] = unmap(conn.LocalAddr().(*net.UDPAddr).AddrPort())
		}
		s.mu.Unlock()
		s.serve(func() error { return s.srv.ServeUDP(conn) }, l)
	case "tcp":
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(l.Addr))
		if err != nil {
			return fmt.Errorf("sip listen %s: %w", l, err)
		}
		s.track(ln.Close, "tcp:"+ln.Addr().String())
		s.mu.Lock()
		if _, ok := s.local["tcp"]; !ok {
			s.local["tcp"] = unmap(ln.Addr().(*net.TCPAddr).AddrPort())
		}
		s.mu.Unlock()
		s.serve(func() error { return s.srv.ServeTCP(ln) }, l)
	default:
		return fmt.Errorf("sip listen %s: unsupported transport %q", addr, l.Transport)
	}
	return nil
}

func (s *Server) track(closer func() error, addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closers = append(s.closers, closer)
	s.addrs = append(s.addrs, addr)
}

func (s *Server) serve(fn func() error, l config.Listener) {
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := fn(); err != nil && !errors.Is(err, net.ErrClosed) && !s.draining.Load() {
			s.log.Error("sip listener stopped", "listener", l.String(), "error", err)
		}
	}()
}

// dispatch runs one request through the chain inside its transaction, on
// an idle worker if there is one. It returns when the chain is done, as sipgo
// expects.
func (s *Server) dispatch(req *sip.Request, tx sip.ServerTransaction) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	ctx := context.Background()
	if req.IsInvite() && tx != nil {
		// A CANCEL matching this INVITE ends its context: the proxy cancels
		// its branches. sipgo has already answered 200 to the CANCEL and
		// will answer 487 to the INVITE.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		tx.OnCancel(func(*sip.Request) { cancel(chain.ErrCanceled) })
	}
	done := s.dones.Get().(chan struct{})
	select {
	case s.jobs <- job{ctx: ctx, req: req, tx: tx, done: done}:
		<-done
	default:
		s.serveReq(ctx, req, &serverHeader{next: &txWriter{tx: tx, req: req}, header: s.server})
	}
	s.dones.Put(done)
}

// serveReq runs the chain, or answers 503 while draining.
func (s *Server) serveReq(ctx context.Context, req *sip.Request, w chain.ResponseWriter) {
	if s.draining.Load() {
		if !req.IsAck() {
			res := sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil)
			res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(s.opts.RetryAfter)))
			_ = w.Respond(res)
		}
		return
	}
	start := time.Now()
	s.handler.ServeSIP(ctx, w, req)
	if !req.IsAck() {
		s.latency.WithLabelValues(string(req.Method)).Observe(time.Since(start).Seconds())
	}
}

// Shutdown stops taking requests (they get 503 with Retry-After), waits for
// in-flight ones until ctx ends, then closes sockets and transactions.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	var err error
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.inflight.Load() > 0 && err == nil {
		select {
		case <-tick.C:
		case <-ctx.Done():
			err = fmt.Errorf("sip server: %d in-flight requests still running: %w", s.inflight.Load(), ctx.Err())
		}
	}
	if err == nil {
		close(s.stop) // nothing is in flight: the workers can go
	}
	if cerr := s.closeListeners(); cerr != nil && err == nil {
		err = cerr
	}
	s.serving.Wait()
	_ = s.ua.Close()
	return err
}

func (s *Server) closeListeners() error {
	s.mu.Lock()
	closers := s.closers
	s.closers = nil
	s.mu.Unlock()
	var errs []error
	for _, c := range closers {
		if err := c(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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

// txWriter responds within a sipgo server transaction.
type txWriter struct {
	tx  sip.ServerTransaction
	req *sip.Request
}

func (w *txWriter) Respond(res *sip.Response) error {
	if w.tx == nil {
		return errors.New("sip server: no transaction to respond in")
	}
	if w.req != nil && w.req.Transport() == "UDP" {
		// Answer to the address the request came from even without rport
		// (Kamailio's force_rport): the Via port is usually wrong behind NAT,
		// and a reply must never go to an address the packet did not come from.
		if src := w.req.Source(); src != "" {
			res.SetDestination(src)
		}
	}
	return w.tx.Respond(res)
}

// udpConn returns our UDP socket bound to addr.
func (s *Server) udpConn(addr net.Addr) *net.UDPConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.udp[addr.String()]
}

// noBuild makes sipgo send a request exactly as the proxy built it.
func noBuild(*sipgo.Client, *sip.Request) error { return nil }

// bindLocal makes a UDP request leave from our listening socket (so replies
// and NAT bindings use the advertised port); TCP reuses the connection the
// peer opened, or dials one.
func (s *Server) bindLocal(req *sip.Request) {
	if !strings.EqualFold(req.Transport(), "UDP") {
		return
	}
	if ap, ok := s.Local("udp"); ok {
		req.Laddr = sip.Addr{IP: net.IP(ap.Addr().AsSlice()), Port: int(ap.Port())}
	}
}

// Request sends req in a new client transaction.
func (s *Server) Request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	s.bindLocal(req)
	return s.client.TransactionRequest(ctx, req, noBuild)
}

// Write sends req without a transaction (an ACK for a 2xx).
func (s *Server) Write(req *sip.Request) error {
	s.bindLocal(req)
	return s.client.WriteRequest(req, noBuild)
}

// Local returns the address of our first listener for transport ("udp", "tcp").
func (s *Server) Local(transport string) (netip.AddrPort, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ap, ok := s.local[strings.ToLower(transport)]
	return ap, ok
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
