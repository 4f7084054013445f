package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/registrar"
	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/registrar/store/memory"
	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/sip/abuse"
	"github.com/sori-voice/sori/sip/abuse/bans"
	"github.com/sori-voice/sori/sip/anchoring"
	"github.com/sori-voice/sori/sip/auth"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/call/redisdialogs"
	"github.com/sori-voice/sori/sip/callerauth"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/digest"
	"github.com/sori-voice/sori/sip/flows"
	"github.com/sori-voice/sori/sip/local"
	"github.com/sori-voice/sori/sip/methods"
	"github.com/sori-voice/sori/sip/natping"
	"github.com/sori-voice/sori/sip/networks"
	"github.com/sori-voice/sori/sip/nodes"
	"github.com/sori-voice/sori/sip/numbers"
	"github.com/sori-voice/sori/sip/options"
	"github.com/sori-voice/sori/sip/proxy"
	"github.com/sori-voice/sori/sip/sanity"
	"github.com/sori-voice/sori/sip/server"
	"github.com/sori-voice/sori/sip/timers"
	"github.com/sori-voice/sori/sip/transport"
	"github.com/sori-voice/sori/sip/trunks"
	"github.com/sori-voice/sori/sip/uac"
)

// Version is written into the Server header.
var Version = "0.1"

// supported lists the option tags sori implements (Supported, and Require checks).
var supported = []string{"path", "outbound"}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	o := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

func openStore(cfg *config.Config) (store.Store, error) {
	if cfg.Registrar.Store == "memory" {
		return memory.New(30 * time.Second), nil
	}
	s, err := redisstore.Open(cfg.Registrar.Store, redisstore.Options{Timeout: cfg.Registrar.StoreTimeout.D()})
	if err != nil {
		return nil, fmt.Errorf("registrar.store: %w", err)
	}
	return s, nil
}

// staticUsers hashes the configured users; their passwords are not kept.
func staticUsers(cfg *config.Config) map[string]store.Subscriber {
	m := make(map[string]store.Subscriber, len(cfg.Users))
	for _, u := range cfg.Users {
		var sub store.Subscriber
		if u.Password != "" {
			sub = auth.NewSubscriber(u.Name, cfg.SIP.Domain, u.Password)
		} else {
			sub = store.Subscriber{Name: u.Name, Realm: cfg.SIP.Domain, HA1MD5: strings.ToLower(u.HA1MD5), HA1SHA256: strings.ToLower(u.HA1SHA256)}
		}
		sub.Numbers, sub.Tags = u.Numbers, u.Tags
		m[u.Name] = sub
	}
	return m
}

func serve(ctx context.Context, configPath string, logOut io.Writer) error {
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, logOut)

	st, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	pctx, cancel := context.WithTimeout(ctx, cfg.Registrar.StoreTimeout.D()*4)
	if err := st.Ping(pctx); err != nil {
		// Not fatal: REGISTER answers 503 until the store is back.
		log.Warn("binding store not reachable at start", "store", cfg.Registrar.Store, "error", err)
	}
	cancel()

	secret := []byte(cfg.SIP.AuthSecret)
	if len(secret) == 0 {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
		if cfg.Registrar.Store != "memory" {
			log.Warn("sip.auth_secret is empty: nonces from other nodes will be re-challenged, and calls kept in Redis cannot be ended after a restart or on another node; set one shared secret on every node")
		}
	}
	dig, err := digest.New(cfg.SIP.Domain, cfg.SIP.AuthAlgorithms, secret, cfg.SIP.NonceTTL.D())
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var addrs []string
	for _, l := range cfg.Listeners() {
		addrs = append(addrs, l.Addr.String())
	}
	if cfg.SIP.Advertise != "" {
		addrs = append(addrs, cfg.SIP.Advertise)
	}
	addrs = append(addrs, cfg.SIP.Aliases...)
	if cfg.SIP.RecordRoute != "" {
		addrs = append(addrs, cfg.SIP.RecordRoute)
	}
	self := local.New(cfg.SIP.Domain, addrs...)
	guard, banList := abuseGuard(ctx, cfg, st, log, reg)
	// Failed digests are reported to the guard: it bans password guessers.
	authn := auth.New(dig, auth.Directory{Static: staticUsers(cfg), Store: st}, reg, auth.WithSelf(self), auth.WithFailures(guard))
	reg.MustRegister(bindingsGauge(st))

	// Built in dependency order: each part gets what it calls, and nothing
	// runs before all of it exists. The server comes first without its
	// chain (it is what everything sends with); Start gives it the chain.
	tlsConfig, own, err := listenerTLS(ctx, cfg, log)
	if err != nil {
		return err
	}
	toCarriers, err := carrierTLS(cfg)
	if err != nil {
		return err
	}
	toNodes, err := nodeTLS(cfg, own)
	if err != nil {
		return err
	}
	signer, err := nodeSigner(cfg, secret)
	if err != nil {
		return err
	}
	so := server.Options{
		Gate:       screen{guard},
		TLS:        tlsConfig,
		TLSClient:  eitherTLS(toCarriers, toNodes),
		Vouch:      own.nodeVouch(),
		Listeners:  listeners(cfg),
		Advertise:  cfg.SIP.Advertise,
		Product:    "Sori/" + Version,
		RetryAfter: cfg.Registrar.RetryAfter,
		TimerJ:     cfg.SIP.TimerJ.D(),
		ShedAfter:  cfg.SIP.ShedAfter.D(),
		Log:        log,
		Registerer: reg,
	}
	if signer != nil { // no typed nil in the interface
		so.Signer = signer
	}
	srv, err := server.New(so)
	if err != nil {
		return err
	}
	ua, err := uac.New(srv, cfg.SIP.Domain, log.With("component", "uac"))
	if err != nil {
		return err
	}
	flowTracker := flows.New(srv)
	reg.MustRegister(flowTracker)
	regOpts := []registrar.Option{registrar.WithObserver(flowTracker), registrar.WithPathFrom(edgeProxies(cfg))}
	// With sip.nodes, bindings name this node as their flow's holder and
	// bindings other nodes hold are reached through them (sip/nodes).
	others, err := nodeSet(ctx, cfg, st, srv, srv.Vouched, signer, secret, log, reg)
	if err != nil {
		return err
	}
	if others != nil {
		regOpts = append(regOpts, registrar.WithHolder(others))
	}
	var natKeeper *natping.Keeper
	if iv := cfg.SIP.NATPing.Interval.D(); iv > 0 {
		nc := natping.Config{Interval: iv, MaxMisses: cfg.SIP.NATPing.MaxMisses, Pinger: ua, Store: st,
			Log: log.With("component", "natping"), Registerer: reg}
		if cfg.SIP.NATPing.Method == "crlf" {
			nc.CRLF = srv
		}
		natKeeper = natping.New(nc)
		regOpts = append(regOpts, registrar.WithObserver(natKeeper))
	}
	waker, err := pushWaker(cfg, st, log, reg)
	if err != nil {
		return err
	}
	var pushPolicy registrar.PushPolicy
	if waker != nil {
		regOpts = append(regOpts, registrar.WithObserver(waker))
		for _, pc := range cfg.Push.Providers {
			pushPolicy.Providers = append(pushPolicy.Providers, strings.ToLower(pc.Name))
		}
		pushPolicy.RefreshBefore = cfg.Push.RefreshBefore.D()
	}
	rg := registrar.New(self, authn, st, registrar.Policy{
		MinExpires:     cfg.Registrar.MinExpires,
		MaxExpires:     cfg.Registrar.MaxExpires,
		DefaultExpires: cfg.Registrar.DefaultExpires,
		MaxContacts:    cfg.Registrar.MaxContacts,
		FlowTimer:      cfg.Registrar.FlowTimer.D(),
		Push:           pushPolicy,
	}, log.With("component", "registrar"), reg, regOpts...)

	qmap := newQualityMap(cfg, st, log, reg)
	records, closeSinks, err := callRecorder(cfg, st, log, reg, qmap)
	if err != nil {
		return err
	}
	defer closeSinks()
	media, err := mediaPool(cfg, log, reg)
	if err != nil {
		return err
	}
	tt := trunkTable(cfg)
	var timerSet timers.Set
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sori_timers_pending",
		Help: "Timers armed for calls and forks (call expiry, timer C, cancelled-branch waits) not yet fired or stopped.",
	}, func() float64 { return float64(timerSet.Pending()) }))
	ccfg := call.Config{Records: records, Slots: tt, Networks: networkClassifier(cfg), Hangup: ua,
		Tags:          userTags{auth.Directory{Static: staticUsers(cfg), Store: st}},
		DialogTimeout: cfg.SIP.DialogTimeout.D(), Timers: &timerSet, Log: log.With("component", "calls"), Registerer: reg}
	if tolls := tollGuard(cfg, st, reg); tolls != nil {
		ccfg.Tolls = tolls
	}
	owner := dialogOwner(cfg, log)
	if rs, ok := st.(*redisstore.Store); ok && cfg.SIP.KeepDialogs {
		// Answered calls survive a restart of this node: an in-dialog
		// request for one it does not hold loads it, and at start this
		// node adopts those it saved (sip/call).
		ccfg.Store = redisdialogs.New(rs.Client(), "", owner)
		if others != nil && others.Lease() != nil {
			// Cut off from Redis long enough for another node to adopt its
			// calls, this one steps back from them first (sip/call fence.go).
			ccfg.Fence = others.Lease()
		}
	}
	pcfg := proxy.Config{
		Self:         self,
		Users:        auth.Directory{Static: staticUsers(cfg), Store: st},
		Locations:    st,
		Trunks:       tt,
		Sender:       srv,
		UAC:          ua,
		TimerC:       cfg.SIP.TimerC.D(),
		Encryption:   cfg.Encryptions(),
		DialogSecret: secret,
		RecordRoute:  cfg.SIP.RecordRoute,
		Timers:       &timerSet,
		Log:          log.With("component", "proxy"),
		Registerer:   reg,
	}
	if media != nil {
		defer media.Close()
		ccfg.Media, pcfg.Media, ccfg.Reclaim = media, media, media
		if cfg.Media.FailoverAfter.D() > 0 {
			// A dead anchor's calls move to a live one (sip/call reanchor.go).
			ccfg.Reanchor, ccfg.Reinvite = media, ua
		}
	}
	if waker != nil {
		pcfg.Push = waker
	}
	cauth := callerauth.Plugin{Self: self, Auth: authn, Log: log.With("component", "callerauth"), Carrier: tt.Carrier}
	if others != nil {
		pcfg.Nodes = others
		cauth.Forwarded = others.Forwarded
	}
	table := call.New(ccfg)
	pcfg.Calls = table
	pcfg.Pool = srv.Pool()
	px := proxy.New(pcfg)

	// A request's path through sori: abuse checks (bans, rate limits,
	// scanners), sanity checks, OPTIONS to the server, REGISTER, hop limits
	// and loops, caller authentication, forwarding.
	allow := chain.Allow(options.Plugin{}, rg, px)
	opts := options.Plugin{Self: self, Allow: allow, Supported: strings.Join(supported, ", ")}
	handler := chain.Build(methods.NotAllowed{Allow: allow},
		guard,
		sanity.Plugin{Supported: supported, Self: self},
		opts,
		rg,
		proxy.Hops{Self: self},
		cauth,
		px,
	)
	if err := srv.Start(handler); err != nil {
		return err
	}
	// Once the server runs: an adopted call past its expiry is hung up at once.
	adoptCalls(ctx, table, []string{owner, legacyOwner(cfg, owner)}, cfg.Registrar.StoreTimeout.D()*4, log)
	if others != nil && ccfg.Store != nil {
		// The calls of a node that never comes back end too (one node adopts them).
		go adoptGone(ctx, table, others, cfg.Registrar.StoreTimeout.D()*4, log.With("component", "calls"))
		// Back after it stepped back: the calls another node took are let go of.
		go table.RunFence(ctx, cfg.Registrar.StoreTimeout.D()*4)
	}
	if media != nil {
		go media.Run(ctx, table) // pings, and media timeouts to the calls
	}
	if natKeeper != nil {
		go natKeeper.Run(ctx)
	}
	if waker != nil {
		go waker.Run(ctx) // refresh pushes, and woken apps registering on other nodes
	}
	if others != nil {
		go others.Run(ctx) // this node's heartbeat, removed at shutdown
	}
	if len(cfg.Trunks) > 0 {
		go tt.Monitor(ctx, cfg.SIP.TrunkPing.D(), ua)
		reg.MustRegister(trunkCollector{tt})
	}
	for _, t := range cfg.Trunks {
		if !t.Register {
			continue
		}
		l, _ := config.ParseListener(t.Gateways[0].Address)
		r := uac.Registration{Trunk: t.Name, Gateway: trunks.Gateway{Trunk: t.Name, Addr: l.Addr, Transport: strings.ToUpper(l.Transport)},
			Username: t.Auth.Username, Password: t.Auth.Password, Expires: 3600}
		go ua.Register(ctx, r, func(granted time.Duration, err error) {
			if err == nil {
				log.Info("registered to carrier", "trunk", r.Trunk, "gateway", r.Gateway.Addr, "for", granted)
			}
		})
	}

	var httpSrv *http.Server
	if cfg.HTTP.Listen != "" {
		httpSrv, err = startHTTP(cfg.HTTP, reg, st, tt, banList, qmap, others, log)
		if err != nil {
			_ = srv.Shutdown(context.Background())
			return err
		}
	}
	log.Info("sori started", "domain", cfg.SIP.Domain, "sip", srv.Addrs(), "http", cfg.HTTP.Listen, "store", storeName(cfg.Registrar.Store))

	<-ctx.Done()
	log.Info("shutting down: finishing in-flight transactions")
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	err = srv.Shutdown(sctx)
	if werr := table.Wait(sctx); werr != nil { // the last records reach their sinks before they close
		log.Warn("call endings still running at shutdown", "error", werr)
	}
	if httpSrv != nil {
		_ = httpSrv.Shutdown(sctx)
	}
	log.Info("sori stopped")
	return err
}

// screen is the abuse guard as the transport's gate: a source is screened
// before its packets are parsed.
type screen struct{ g *abuse.Guard }

func (s screen) Admit(src netip.Addr, vouched bool, now time.Time) transport.Verdict {
	switch s.g.Admit(src, vouched, now) {
	case abuse.Drop:
		return transport.Drop
	case abuse.Reject:
		return transport.Reject
	}
	return transport.Pass
}

// storeName hides credentials in a store URL for logs.
func storeName(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		rest = "***@" + rest[at+1:]
	}
	return scheme + "://" + rest
}

func startHTTP(c config.HTTP, reg *prometheus.Registry, st store.Store, tt *trunks.Table, bl *bans.List, qmap *qualityMap, others *nodes.Set, log *slog.Logger) (*http.Server, error) {
	addr := c.Listen
	mux := http.NewServeMux()
	if c.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := st.Ping(ctx); err != nil {
			http.Error(w, "store unavailable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /trunks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(tt.Status(time.Now()))
	})
	banRoutes(mux, bl)
	qmap.routes(mux)
	nodeRoutes(mux, others)
	hs := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w", addr, err)
	}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "error", err)
		}
	}()
	return hs, nil
}

// bindingsGauge reports live bindings; the count is cached for a few seconds
// because a Redis count scans keys.
func bindingsGauge(st store.Bindings) prometheus.Collector {
	var (
		mu    sync.Mutex
		at    time.Time
		value float64
	)
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sori_bindings",
		Help: "Current registered contacts in the binding store (refreshed at most every 10 s).",
	}, func() float64 {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) < 10*time.Second {
			return value
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if n, err := st.Count(ctx, time.Now()); err == nil {
			value, at = float64(n), time.Now()
		}
		return value
	})
}

// trunkCollector exports the gateways' state and the trunks' calls.
type trunkCollector struct{ t *trunks.Table }

var (
	gatewayUpDesc  = prometheus.NewDesc("sori_trunk_gateway_up", "1 while the carrier gateway answers OPTIONS and is not in a Retry-After.", []string{"trunk", "gateway"}, nil)
	trunkCallsDesc = prometheus.NewDesc("sori_trunk_calls", "Answered calls in progress on the trunk.", []string{"trunk"}, nil)
)

func (trunkCollector) Describe(ch chan<- *prometheus.Desc) { ch <- gatewayUpDesc; ch <- trunkCallsDesc }

func (c trunkCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	for _, s := range c.t.Status(time.Now()) {
		up := 0.0
		if s.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(gatewayUpDesc, prometheus.GaugeValue, up, s.Trunk, s.Gateway)
		if !seen[s.Trunk] {
			seen[s.Trunk] = true
			ch <- prometheus.MustNewConstMetric(trunkCallsDesc, prometheus.GaugeValue, float64(s.Calls), s.Trunk)
		}
	}
}

// trunkTable is the trunks:, routes:, numbering: sections and the users'
// numbers (validated by config).
func trunkTable(cfg *config.Config) *trunks.Table {
	plan := numbers.Plan{CountryCode: cfg.Numbering.CountryCode, NationalPrefix: cfg.Numbering.NationalPrefix,
		InternationalPrefix: cfg.Numbering.InternationalPrefix}
	var ts []trunks.Trunk
	for _, t := range cfg.Trunks {
		tr := trunks.Trunk{Name: t.Name, MaxCalls: t.MaxCalls}
		for _, a := range t.InboundACL {
			tr.InboundACL = append(tr.InboundACL, netip.MustParsePrefix(a))
		}
		for _, g := range t.Gateways {
			l, _ := config.ParseListener(g.Address)
			tr.Gateways = append(tr.Gateways, trunks.Gateway{Addr: l.Addr, Transport: l.Transport, Priority: g.Priority, Weight: g.Weight})
		}
		ts = append(ts, tr)
	}
	var rs []numbers.Route
	for _, r := range cfg.Routes {
		rs = append(rs, numbers.Route{Prefix: r.Prefix, Trunks: r.Trunks})
	}
	return trunks.New(plan, ts, rs)
}

// networkClassifier is the networks: section (validated by config).
func networkClassifier(cfg *config.Config) *networks.Classifier {
	var nets []networks.Network
	for _, n := range cfg.Networks {
		x := networks.Network{Name: n.Name, PLMNs: n.PLMNs}
		for _, p := range n.Prefixes {
			x.Prefixes = append(x.Prefixes, netip.MustParsePrefix(p))
		}
		nets = append(nets, x)
	}
	return networks.New(nets)
}

// mediaPool connects to the media anchors; nil when none is configured
// (media then flows end to end).
func mediaPool(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (*anchoring.Pool, error) {
	if len(cfg.Media.Anchors) == 0 {
		return nil, nil
	}
	var addrs []netip.AddrPort
	for _, a := range cfg.Media.Anchors {
		addrs = append(addrs, netip.MustParseAddrPort(a)) // validated by config
	}
	p, err := anchoring.New(anchoring.Config{
		Anchors: addrs, Timeout: cfg.Media.Timeout.D(), PingInterval: cfg.Media.PingInterval.D(), FailoverAfter: cfg.Media.FailoverAfter.D(),
		Log: log.With("component", "media"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// callRecorder opens the call record sinks: the JSON lines file and, with a
// Redis store, the stream.
func callRecorder(cfg *config.Config, st store.Store, log *slog.Logger, reg *prometheus.Registry, qmap *qualityMap) (*calls.Recorder, func(), error) {
	sinks := slices.Clone(qmap.sinks)
	closers := slices.Clone(qmap.closers)
	if cfg.CDR.File != "" {
		f, err := calls.OpenJSONFile(cfg.CDR.File)
		if err != nil {
			return nil, nil, err
		}
		sinks = append(sinks, f)
		closers = append(closers, func() { _ = f.Close() })
	}
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sori_cdr_dropped_total",
		Help: "Call records that could not be written to the Redis stream.",
	})
	reg.MustRegister(dropped)
	if rs, ok := st.(*redisstore.Store); ok && cfg.CDR.RedisStream != "" {
		a := calls.NewAsync(calls.RedisStream{Client: rs.Client(), Key: cfg.CDR.RedisStream, MaxLen: cfg.CDR.StreamMaxLen},
			4096, 2*time.Second, log.With("component", "cdr"), dropped.Inc)
		sinks = append(sinks, a)
		closers = append([]func(){a.Close}, closers...) // drain the queue before the store closes
	}
	t := calls.NewRecorder(log.With("component", "cdr"), reg, sinks...)
	return t, func() {
		for _, c := range closers {
			c()
		}
	}, nil
}

// listeners is sip.listen as the transport's listeners.
func listeners(cfg *config.Config) []transport.Listener {
	var out []transport.Listener
	for _, l := range cfg.Listeners() {
		out = append(out, transport.Listener{Transport: l.Transport, Addr: l.Addr})
	}
	return out
}

// listenerTLS is the tls listeners' configuration and certificate (nil
// without one); the certificate is read again on SIGHUP, without closing
// any connection.
func listenerTLS(ctx context.Context, cfg *config.Config, log *slog.Logger) (*tls.Config, *certs, error) {
	var ips []net.IP
	for _, l := range cfg.Listeners() {
		if l.Transport == "tls" || l.Transport == "wss" {
			ips = append(ips, l.Addr.Addr().AsSlice())
		}
	}
	if len(ips) == 0 {
		return nil, nil, nil
	}
	names := []string{cfg.SIP.Domain, "localhost"}
	if a := cfg.SIP.Advertise; a != "" {
		h := a
		if host, _, err := net.SplitHostPort(a); err == nil {
			h = host
		}
		if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, h)
		}
	}
	c, err := newCerts(cfg.SIP.TLS, newNodeCerts(cfg), names, ips)
	if err != nil {
		return nil, nil, err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := c.Reload(); err != nil {
					log.Error("TLS certificate not reloaded: the old one stays", "error", err)
					continue
				}
				log.Info("TLS certificate reloaded", "cert", cfg.SIP.TLS.Cert)
			}
		}
	}()
	return c.Config(), c, nil
}
