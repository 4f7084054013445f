// Command sori-anchor is the RTP anchor: it relays the media of the calls
// sori (or Kamailio's rtpengine module) sets up over the ng protocol.
//
//	sori-anchor -ng 127.0.0.1:22222 -rtp-ports 30000-39999 -listen 127.0.0.1 \
//	            -advertise 203.0.113.5 -http 127.0.0.1:9061 [-media-timeout 30s] [-rtcp-interval 5s]
//	            [-jitter-buffer off|fixed|adaptive] [-jb-delay 60ms] [-jb-min 0] [-jb-max 120ms]
//	            [-workers N] [-cpuprofile FILE] [-ice-sources CIDR,...] [-consent-timeout 30s]
//	            [-dtls-cert-lifetime 720h]
//	            [-redis URL [-redis-id ID] [-redis-every 5s]]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sori-voice/sori/media/anchor"
	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/relay"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sori-anchor:", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

type options struct {
	ng            netip.AddrPort
	minPort       int
	maxPort       int
	listen        netip.Addr
	advertise     []netip.Addr
	http          string
	mediaTimeout  time.Duration
	rtcpInterval  time.Duration
	jitter        jitter.Config
	logLevel      slog.Level
	pprof         bool
	workers       int
	sendRing      bool
	recvRing      bool
	kernelForward bool
	cpuProfile    string
	iceSources    []netip.Prefix
	redis         string // keeps the calls across a restart; "": not kept
	redisID       string
	redisEvery    time.Duration
	consent       time.Duration
	certLifetime  time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("sori-anchor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ngAddr := fs.String("ng", "127.0.0.1:22222", "ng control address (UDP)")
	portRange := fs.String("rtp-ports", "30000-39999", "RTP/RTCP port range")
	listen := fs.String("listen", "127.0.0.1", "address the RTP sockets bind")
	advertise := fs.String("advertise", "", "address written into SDP, or an IPv4 and an IPv6 one, comma separated (default: -listen)")
	httpAddr := fs.String("http", "127.0.0.1:9061", "/metrics and /healthz address (empty: none)")
	timeout := fs.Duration("media-timeout", 30*time.Second, "end an answered call whose media stopped this long (0: never)")
	rtcpInterval := fs.Duration("rtcp-interval", 5*time.Second, "the anchor's own RTCP receiver reports to each phone (0: none)")
	jbMode := fs.String("jitter-buffer", "adaptive", "off (relay at once), fixed (-jb-delay) or adaptive (within -jb-min..-jb-max)")
	jbDelay := fs.Duration("jb-delay", 60*time.Millisecond, "the fixed jitter buffer's delay")
	jbMin := fs.Duration("jb-min", 0, "the adaptive jitter buffer's smallest delay")
	jbMax := fs.Duration("jb-max", 120*time.Millisecond, "the adaptive jitter buffer's largest delay")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	pprofOn := fs.Bool("pprof", false, "serve /debug/pprof/ on -http")
	workers := fs.Int("workers", 0, "goroutines relaying RTP on Linux, each with its own epoll (0: one per CPU)")
	sendRing := fs.Bool("io-uring", true, "relay RTP through io_uring on Linux: multishot receives and one submit of sends per wake-up for many sockets (false: epoll, recvmmsg and a sendmmsg per socket)")
	recvRing := fs.Bool("io-uring-recv", true, "with -io-uring, receive through it too (false: epoll and recvmmsg, sends still through io_uring)")
	kernelForward := fs.Bool("kernel-forward", true, "on Linux, forward plain RTP streams that need no jitter buffer, SRTP or ICE in the kernel (an eBPF program on the -listen address's interface; needs root or CAP_BPF and CAP_NET_ADMIN, and Linux 6.6; without them the relay forwards everything)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	iceSources := fs.String("ice-sources", "", "comma-separated CIDRs a WebRTC peer's ICE checks are answered from; media of a WebRTC leg comes only from an address that passed one (empty: any)")
	redisURL := fs.String("redis", "", "keep every call's state in Redis and restore the calls on start, on the same ports (redis://, redis-sentinel://, redis-cluster://, as sori's store; empty: not kept)")
	redisID := fs.String("redis-id", "", "this anchor's name in Redis; anchors sharing a Redis each need their own (default: the first -advertise address and the -ng port)")
	redisEvery := fs.Duration("redis-every", 5*time.Second, "with -redis, how often every call's statistics are written again")
	consent := fs.Duration("consent-timeout", 30*time.Second, "stop sending a WebRTC leg media this long after its last ICE check (RFC 7675 consent)")
	certLifetime := fs.Duration("dtls-cert-lifetime", dtlssrtp.DefaultLifetime, "validity of each DTLS certificate of the WebRTC legs; new legs get a new one once half of it has passed, legs set up keep theirs")
	if err := fs.Parse(args); err != nil {
		return options{}, usageError{err}
	}
	if fs.NArg() > 0 {
		return options{}, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	var o options
	var errs []error
	bad := func(name, format string, a ...any) {
		errs = append(errs, fmt.Errorf("-%s: %s", name, fmt.Sprintf(format, a...)))
	}
	var err error
	if o.ng, err = netip.ParseAddrPort(*ngAddr); err != nil {
		bad("ng", "%q is not IP:PORT", *ngAddr)
	}
	lo, hi, ok := strings.Cut(*portRange, "-")
	o.minPort, _ = strconv.Atoi(lo)
	o.maxPort, _ = strconv.Atoi(hi)
	if !ok || o.minPort < 1024 || o.maxPort > 65535 || o.maxPort <= o.minPort {
		bad("rtp-ports", "%q is not a range like 30000-39999 within 1024-65535", *portRange)
	}
	if o.listen, err = netip.ParseAddr(*listen); err != nil {
		bad("listen", "%q is not an IP address", *listen)
	}
	o.advertise = []netip.Addr{o.listen}
	if *advertise != "" {
		o.advertise = nil
		for _, a := range strings.Split(*advertise, ",") {
			ip, err := netip.ParseAddr(strings.TrimSpace(a))
			if err != nil {
				bad("advertise", "%q is not an IP address", a)
				continue
			}
			o.advertise = append(o.advertise, ip)
		}
		if len(o.advertise) > 2 || len(o.advertise) == 2 && o.advertise[0].Is6() == o.advertise[1].Is6() {
			bad("advertise", "%q: give one address, or one IPv4 and one IPv6", *advertise)
		}
	}
	if o.listen.IsValid() && o.listen.IsUnspecified() && *advertise == "" {
		bad("advertise", "required when -listen is %s", o.listen)
	}
	o.http = *httpAddr
	o.pprof = *pprofOn
	if *workers < 0 {
		bad("workers", "must not be negative")
	}
	o.workers = *workers
	o.sendRing = *sendRing
	o.recvRing = *recvRing
	o.kernelForward = *kernelForward
	o.cpuProfile = *cpuProfile
	if *iceSources != "" {
		for _, c := range strings.Split(*iceSources, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(c))
			if err != nil {
				bad("ice-sources", "%q is not a CIDR prefix", c)
				continue
			}
			o.iceSources = append(o.iceSources, p.Masked())
		}
	}
	o.redis, o.redisID, o.redisEvery = *redisURL, *redisID, *redisEvery
	if o.redis != "" && !strings.Contains(o.redis, "://") {
		bad("redis", "%q is not a URL like redis://127.0.0.1:6379/0", o.redis)
	}
	if *redisEvery < 100*time.Millisecond {
		bad("redis-every", "%s: give at least 100ms", *redisEvery)
	}
	if o.redisID == "" && len(o.advertise) > 0 && o.ng.IsValid() {
		o.redisID = netip.AddrPortFrom(o.advertise[0], o.ng.Port()).String()
	}
	if *timeout < 0 {
		bad("media-timeout", "must not be negative")
	}
	o.mediaTimeout = *timeout
	if *consent < 100*time.Millisecond {
		bad("consent-timeout", "%s: give at least 100ms", *consent)
	}
	o.consent = *consent
	if *certLifetime < time.Hour || *certLifetime > 365*24*time.Hour {
		bad("dtls-cert-lifetime", "%s is outside 1h..8760h (365 days)", *certLifetime)
	}
	o.certLifetime = *certLifetime
	if *rtcpInterval < 0 || *rtcpInterval > 0 && *rtcpInterval < 100*time.Millisecond {
		bad("rtcp-interval", "%s: give 0 or at least 100ms", *rtcpInterval)
	}
	o.rtcpInterval = *rtcpInterval
	switch *jbMode {
	case "off":
		o.jitter.Mode = jitter.Off
	case "fixed":
		o.jitter = jitter.Config{Mode: jitter.Fixed, Target: *jbDelay}
	case "adaptive":
		o.jitter = jitter.Config{Mode: jitter.Adaptive, Min: *jbMin, Max: *jbMax}
	default:
		bad("jitter-buffer", "%q is not off, fixed or adaptive", *jbMode)
	}
	if *jbDelay < 0 || *jbDelay > time.Second {
		bad("jb-delay", "%s is outside 0..1s", *jbDelay)
	}
	if *jbMin < 0 || *jbMax <= 0 || *jbMax > time.Second || *jbMin > *jbMax {
		bad("jb-max", "-jb-min %s and -jb-max %s: want 0 <= min <= max <= 1s", *jbMin, *jbMax)
	}
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil {
		bad("log-level", "%q is not debug, info, warn or error", *level)
	}
	if len(errs) > 0 {
		return options{}, usageError{errors.Join(errs...)}
	}
	return o, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	relay.SetWorkers(o.workers)
	relay.SetSendRing(o.sendRing)
	if err := relay.CheckSendRing(); err != nil {
		log.Warn("RTP is sent without io_uring, with a sendmmsg per socket", "error", err)
	} else if o.sendRing {
		relay.SetRecvRing(o.recvRing)
		if err := relay.CheckRecvRing(); err != nil {
			log.Warn("RTP is received without io_uring, through epoll and recvmmsg", "error", err)
			relay.SetRecvRing(false)
		}
	}
	if n := o.workers; os.Getenv("GOMAXPROCS") == "" {
		// The workers sleep in system calls holding their Ps: one more P
		// stays idle for the rest (ng, reports, GC), so Go's sysmon does
		// not take the workers' Ps back every 20 µs, and the workers wait
		// in raw system calls that sysmon does not watch at all
		// (relay.DefaultWorkers, relay's maxWait).
		if n == 0 {
			n = relay.DefaultWorkers()
		}
		if n > 0 {
			runtime.GOMAXPROCS(n + 1)
		}
	}
	alloc, err := ports.New(o.listen, o.minPort, o.maxPort)
	if err != nil {
		return err
	}
	defer alloc.Close() // the parked pairs; after the calls' (deferred later)
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(o.ng))
	if err != nil {
		return fmt.Errorf("-ng %s: %w", o.ng, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The ng server first (it sends the anchor's notifications), then the
	// anchor with it; Serve hands the anchor the commands.
	var kept *keptState
	if o.redis != "" {
		if kept, err = openKept(o, log); err != nil {
			return err
		}
		defer kept.close()
	}
	// The DTLS certificate of new WebRTC legs: with -redis the one the
	// previous process kept, else one made now so that a failure stops
	// the start; the anchor renews it for new legs once half of its life
	// has passed (browsers check it against the SDP's fingerprint, not a
	// CA).
	var cert *dtlssrtp.Certificate
	if kept != nil {
		cert = kept.loadCert(ctx, log)
	}
	if cert == nil {
		if cert, err = dtlssrtp.NewCertificateAt(time.Now(), o.certLifetime); err != nil {
			return err
		}
	}
	srv := ng.NewServer(conn, log)
	acfg := anchor.Config{
		Advertise: o.advertise, Ports: alloc, MediaTimeout: o.mediaTimeout, RTCPInterval: o.rtcpInterval, Jitter: o.jitter, Log: log, Registerer: reg,
		Notify: srv, Certificate: cert, CertLifetime: o.certLifetime, ICESources: o.iceSources, KeepEvery: o.redisEvery, ConsentTimeout: o.consent,
	}
	if kept != nil {
		acfg.Keep = kept.keeper
		acfg.CertRenewed = kept.certRenewed(log)
	}
	mgr := anchor.New(acfg)
	// The kept one renewed now if it is due: new calls get what the
	// started log names.
	if cert, err = mgr.Certificate(); err != nil {
		return err
	}
	if kept != nil {
		kept.saveCert(ctx, cert, log)
		// Before the first command: the phones' packets find their ports.
		kept.restore(ctx, mgr, log)
	}

	var httpSrv *http.Server
	if o.http != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		if o.pprof {
			mux.HandleFunc("/debug/pprof/", httppprof.Index)
			mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		}
		ln, err := net.Listen("tcp", o.http)
		if err != nil {
			return fmt.Errorf("-http %s: %w", o.http, err)
		}
		httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = httpSrv.Serve(ln) }()
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if path := openFastPath(runCtx, o, reg, log); path != nil {
		defer path.Close() // after mgr.Close: no route is left
	}
	keepCtx, keepCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer keepCancel()
	keepDone := make(chan struct{})
	if kept != nil {
		go func() { kept.keeper.Run(keepCtx); close(keepDone) }()
		go mgr.RunKeep(runCtx)
	} else {
		close(keepDone)
	}
	go mgr.RunTimeouts(runCtx)
	go mgr.RunReports(runCtx)
	go mgr.RunConsent(runCtx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(runCtx, mgr) }()
	log.Info("sori-anchor started", "ng", o.ng, "rtp_ports", fmt.Sprintf("%d-%d", o.minPort, o.maxPort),
		"listen", o.listen, "advertise", o.advertise, "http", o.http, "media_timeout", o.mediaTimeout,
		"jitter_buffer", o.jitter.Mode, "rtcp_interval", o.rtcpInterval,
		"dtls_fingerprint", cert.Fingerprint().String(), "dtls_cert_lifetime", o.certLifetime)
	select {
	case <-ctx.Done():
	case err := <-done:
		if err != nil {
			return fmt.Errorf("ng: %w", err)
		}
	}
	// Stop taking commands, then let go of every call's ports.
	cancel()
	<-done
	mgr.Close()
	// The calls stay kept for the next start: the keeper writes what is
	// queued, and no delete.
	keepCancel()
	<-keepDone
	if httpSrv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = httpSrv.Shutdown(sctx)
	}
	log.Info("sori-anchor stopped")
	return nil
}
