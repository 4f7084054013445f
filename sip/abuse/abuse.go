// Package abuse keeps scanners, floods and password guessers away from
// sori. Admit screens a packet's source before the transport parses it: a
// banned source is dropped (or answered 503, per configuration), so is one
// over its rate limit (which bans it). The chain link (the first of the
// chain) drops a known scanner's User-Agent without an answer. Failed
// digests reported by sip/auth ban their source after a threshold.
package abuse

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/sip/abuse/authfail"
	"github.com/sori-voice/sori/sip/abuse/bans"
	"github.com/sori-voice/sori/sip/abuse/ratelimit"
	"github.com/sori-voice/sori/sip/abuse/scanner"
	"github.com/sori-voice/sori/sip/chain"
)

// Config of a Guard. Nil parts are off.
type Config struct {
	// Exempt are sources no check applies to: trusted networks and the
	// carriers' inbound ACLs.
	Exempt     []netip.Prefix
	Reject     bool // answer 503 with Retry-After instead of dropping
	RetryAfter int  // seconds, with Reject
	// Node reports whether an address is another node's (sip.nodes). What
	// comes from there unvouched and is refused is dropped even with
	// Reject: the 503 would go to the node, on the word of whoever spoofed
	// its address, and could end one of its live transactions.
	Node        func(netip.Addr) bool
	Bans        *bans.List
	Limiter     *ratelimit.Limiter
	RateBanTime time.Duration
	Scanners    *scanner.Matcher
	AuthFails   *authfail.Counter
	AuthBanTime time.Duration
	Log         *slog.Logger
	Registerer  prometheus.Registerer // nil: no metrics
}

// Guard is the abuse checks.
type Guard struct {
	c       Config
	dropped *prometheus.CounterVec
	banned  *prometheus.CounterVec
	// the dropped counters by reason, looked up once
	dropBanned, dropRate, dropScanner prometheus.Counter
}

// New returns a Guard.
func New(c Config) *Guard {
	g := &Guard{c: c,
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_abuse_dropped_total",
			Help: "Requests dropped (or answered 503 with security.action reject) before the chain: banned source, over its rate limit, scanner User-Agent.",
		}, []string{"reason"}),
		banned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_abuse_bans_total",
			Help: "Sources this node banned, by reason: rate_limit, auth_failures.",
		}, []string{"reason"}),
	}
	g.dropBanned = g.dropped.WithLabelValues("banned")
	g.dropRate = g.dropped.WithLabelValues("rate_limit")
	g.dropScanner = g.dropped.WithLabelValues("scanner")
	g.banned.WithLabelValues("rate_limit")
	g.banned.WithLabelValues("auth_failures")
	if c.Registerer != nil {
		c.Registerer.MustRegister(g.dropped, g.banned)
		if c.Bans != nil {
			c.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "sori_abuse_bans",
				Help: "Banned sources in this node's copy of the ban list.",
			}, func() float64 { return float64(c.Bans.Len()) }))
		}
	}
	return g
}

// Exempt reports whether no check applies to src.
func (g *Guard) Exempt(src netip.Addr) bool {
	src = src.Unmap()
	for _, p := range g.c.Exempt {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// Banned reports whether src is banned (never when exempt).
func (g *Guard) Banned(src netip.Addr) bool {
	return g.c.Bans != nil && g.c.Bans.Banned(src) && !g.Exempt(src)
}

// Allow takes a request from src's rate limit at now; false when src is
// over it, and src is then banned for the rate limit's ban time. Exempt
// sources are always allowed.
func (g *Guard) Allow(src netip.Addr, now time.Time) bool {
	if g.c.Limiter == nil || g.c.Limiter.Allow(src, now) || g.Exempt(src) {
		return true
	}
	if g.c.Bans != nil && g.c.Bans.Post(bans.Ban{Address: src, Reason: "rate limit", Since: now, Until: now.Add(g.c.RateBanTime)}) {
		g.banned.WithLabelValues("rate_limit").Inc()
		g.c.Log.Warn("source banned: over the rate limit", "source", src, "for", g.c.RateBanTime)
	}
	return false
}

// AuthFailed is told of every failed digest (sip/auth's FailureReporter):
// past a threshold the source is banned.
func (g *Guard) AuthFailed(src netip.Addr, user string) {
	if g.c.AuthFails == nil || g.c.Bans == nil || g.Exempt(src) {
		return
	}
	now := time.Now()
	ban, reason := g.c.AuthFails.Failed(src, user, now)
	if !ban {
		return
	}
	if g.c.Bans.Post(bans.Ban{Address: src, Reason: reason, Since: now, Until: now.Add(g.c.AuthBanTime)}) {
		g.banned.WithLabelValues("auth_failures").Inc()
		g.c.Log.Warn("source banned: failed authentications", "source", src, "user", user, "reason", reason, "for", g.c.AuthBanTime)
	}
}

// Verdict is what Admit decides about a source.
type Verdict uint8

// Admit's verdicts.
const (
	Pass   Verdict = iota
	Drop           // no answer
	Reject         // 503 with Retry-After (security.action: reject)
)

// Admit screens a packet from src at now, before it is parsed: exempt
// sources pass, a banned source or one over its rate limit does not.
//
// vouched: the packet is vouched for as another node's (its TLS
// connection's node certificate, or its node signature; sip/nodes). It
// passes, and takes nothing from its address's rate limit: a node relays
// many phones' requests from one address, and each was screened where it
// entered the service. A node's address alone earns nothing: a packet
// from there that is not vouched for is anyone's (a spoofed datagram,
// another process on that host) and is screened as a phone's, and a ban
// of that address keeps out only what is not vouched for.
func (g *Guard) Admit(src netip.Addr, vouched bool, now time.Time) Verdict {
	var counter prometheus.Counter
	switch {
	case vouched, g.Exempt(src):
		return Pass
	case g.c.Bans != nil && g.c.Bans.Banned(src):
		counter = g.dropBanned
	case !g.Allow(src, now):
		counter = g.dropRate
	default:
		return Pass
	}
	counter.Inc()
	if g.c.Reject && (g.c.Node == nil || !g.c.Node(src)) {
		return Reject
	}
	return Drop
}

// Scanner reports whether ua is a known scanner's User-Agent.
func (g *Guard) Scanner(ua string) bool { return g.c.Scanners != nil && g.c.Scanners.Match(ua) }

// Methods implements chain.Plugin.
func (*Guard) Methods() []string { return nil }

// Handles implements chain.Plugin: with scanner patterns configured,
// every request. Sources were screened by Admit already.
func (g *Guard) Handles(*chain.Request) bool { return g.c.Scanners != nil }

// Serve implements chain.Plugin: a request from a known scanner's
// User-Agent is dropped without an answer (a scanner learns nothing).
func (g *Guard) Serve(ctx context.Context, w chain.ResponseWriter, r *chain.Request, next chain.Handler) chain.Result {
	if g.scannerUA(r.Request) {
		if ap, err := netip.ParseAddrPort(r.Source()); err != nil || !g.Exempt(ap.Addr()) {
			g.dropScanner.Inc()
			return chain.Done
		}
	}
	return next.ServeSIP(ctx, w, r)
}

func (g *Guard) scannerUA(req *sip.Request) bool {
	h := chain.Header(req, "User-Agent")
	return h != nil && g.c.Scanners.Match(h.Value())
}
