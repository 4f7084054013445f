package abuse

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/abuse/authfail"
	"github.com/sori-voice/sori/sip/abuse/bans"
	"github.com/sori-voice/sori/sip/abuse/ratelimit"
	"github.com/sori-voice/sori/sip/abuse/scanner"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/chain/chaintest"
)

func guard(reject bool) *Guard {
	return New(Config{
		Exempt:      []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Reject:      reject,
		RetryAfter:  7,
		Bans:        bans.New("test", nil, slog.Default()),
		Limiter:     ratelimit.New(ratelimit.Config{Rate: 1, Burst: 3}),
		RateBanTime: time.Minute,
		Scanners:    scanner.New(scanner.Default),
		AuthFails:   authfail.New(authfail.Config{PerSource: 2, Window: time.Minute}),
		AuthBanTime: time.Hour,
		Log:         slog.Default(),
	})
}

func request(t testing.TB, src string, extra ...string) *sip.Request {
	req := chaintest.Request(t, chaintest.Raw("OPTIONS", "sip:sori.test", extra...))
	req.SetSource(src)
	return req
}

func TestAdmitAndChainLink(t *testing.T) {
	type try struct {
		src      string
		ua       string
		wantPass bool
		wantCode int // 0: no answer
	}
	tests := []struct {
		name   string
		reject bool
		prep   func(g *Guard)
		tries  []try
	}{
		{"a normal request passes", false, nil, []try{{"192.0.2.1:5060", "Linphone/5.2", true, 0}}},
		{"a scanner is dropped without an answer", false, nil, []try{{"192.0.2.1:5060", "friendly-scanner", false, 0}}},
		{"a banned source is dropped", false, func(g *Guard) {
			g.c.Bans.Post(bans.Ban{Address: netip.MustParseAddr("192.0.2.1"), Until: time.Now().Add(time.Hour)})
		}, []try{{"192.0.2.1:5060", "", false, 0}, {"192.0.2.2:5060", "", true, 0}}},
		{"a banned source gets 503 with reject", true, func(g *Guard) {
			g.c.Bans.Post(bans.Ban{Address: netip.MustParseAddr("192.0.2.1"), Until: time.Now().Add(time.Hour)})
		}, []try{{"192.0.2.1:5060", "", false, 503}}},
		{"over the rate limit: dropped, then banned", false, nil, []try{
			{"192.0.2.1:5060", "", true, 0}, {"192.0.2.1:5061", "", true, 0}, {"192.0.2.1:5062", "", true, 0},
			{"192.0.2.1:5063", "", false, 0}, {"192.0.2.2:5060", "", true, 0},
		}},
		{"exempt sources: never limited, banned nor checked for scanners", false, func(g *Guard) {
			g.c.Bans.Post(bans.Ban{Address: netip.MustParseAddr("10.1.1.1"), Until: time.Now().Add(time.Hour)})
		}, []try{
			{"10.1.1.1:5060", "friendly-scanner", true, 0}, {"10.1.1.1:5060", "", true, 0}, {"10.1.1.1:5060", "", true, 0},
			{"10.1.1.1:5060", "", true, 0}, {"10.1.1.1:5060", "", true, 0},
		}},
		{"failed digests ban the source", false, func(g *Guard) {
			g.AuthFailed(netip.MustParseAddr("192.0.2.1"), "alice")
			g.AuthFailed(netip.MustParseAddr("192.0.2.1"), "alice")
			g.AuthFailed(netip.MustParseAddr("10.0.0.1"), "alice") // exempt
			g.AuthFailed(netip.MustParseAddr("10.0.0.1"), "alice")
		}, []try{{"192.0.2.1:5060", "", false, 0}, {"10.0.0.1:5060", "", true, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := guard(tt.reject)
			if tt.prep != nil {
				tt.prep(g)
			}
			for i, tr := range tt.tries {
				var extra []string
				if tr.ua != "" {
					extra = append(extra, "User-Agent: "+tr.ua)
				}
				// As in sori: the transport asks Admit, then the chain runs.
				var res *sip.Response
				passed, code := false, 0
				switch g.Admit(netip.MustParseAddrPort(tr.src).Addr(), false, time.Now()) {
				case Pass:
					res, passed = chaintest.Serve(t, g, request(t, tr.src, extra...))
					if res != nil {
						code = res.StatusCode
					}
				case Reject:
					code = 503
				}
				if passed != tr.wantPass || code != tr.wantCode {
					t.Fatalf("try %d from %s: passed %v, answer %d; want %v, %d", i, tr.src, passed, code, tr.wantPass, tr.wantCode)
				}
			}
		})
	}
	g := guard(false)
	for range 4 {
		g.Allow(netip.MustParseAddr("192.0.2.9"), time.Now())
	}
	if !g.Banned(netip.MustParseAddr("192.0.2.9")) {
		t.Fatal("a source over the rate limit is not in the ban list")
	}
	if bs := g.c.Bans.List(time.Now()); len(bs) != 1 || bs[0].Reason != "rate limit" || bs[0].Until.Sub(bs[0].Since) != time.Minute {
		t.Fatalf("ban list %+v", bs)
	}
}

// BenchmarkChainLink is the cost of screening a normal request: ban check
// and rate limit on its source, then the link's User-Agent check.
func BenchmarkChainLink(b *testing.B) {
	g := New(Config{
		Bans: bans.New("test", nil, slog.Default()), Limiter: ratelimit.New(ratelimit.Config{Rate: 1e9, Burst: 1e9}),
		Scanners: scanner.New(scanner.Default), Log: slog.Default(),
	})
	req := request(b, "192.0.2.1:5060", "User-Agent: Linphone/5.2.0 (belle-sip/5.2.0)")
	h := chain.Build(nopHandler{}, g)
	b.ReportAllocs()
	b.ResetTimer()
	src := netip.MustParseAddr("192.0.2.1")
	for i := 0; i < b.N; i++ {
		if g.Admit(src, false, time.Now()) == Pass {
			h.ServeSIP(b.Context(), nil, &chain.Request{Request: req})
		}
	}
}

// Another node's packets pass when they are vouched for (its certificate,
// its signature), not for the address they come from: from that address
// without it, a flood is limited and banned as a phone's is, and what is
// vouched for still passes, banned address or not, taking nothing from
// the address's rate limit.
func TestVouchedNode(t *testing.T) {
	node := netip.MustParseAddr("192.0.2.50") // a node's address, in no exempt network
	now := time.Now()
	g := guard(true)
	for i := range 10 {
		if v := g.Admit(node, true, now); v != Pass {
			t.Fatalf("vouched packet %d: %v", i, v)
		}
	}
	if g.Banned(node) {
		t.Fatal("vouched packets banned the node's address")
	}
	// The burst (3) is all there for what is not vouched for: the vouched
	// packets took none of it.
	var verdicts []Verdict
	for range 5 {
		verdicts = append(verdicts, g.Admit(node, false, now))
	}
	if want := []Verdict{Pass, Pass, Pass, Reject, Reject}; !slices.Equal(verdicts, want) {
		t.Fatalf("not vouched for, from the node's address: %v, want %v", verdicts, want)
	}
	if !g.Banned(node) {
		t.Fatal("a flood from the node's address, not vouched for, is not banned")
	}
	if v := g.Admit(node, true, now); v != Pass {
		t.Fatalf("vouched packet from the banned address: %v", v)
	}
	if v := g.Admit(node, false, now.Add(30*time.Second)); v != Reject {
		t.Fatalf("not vouched for, from the banned address: %v", v)
	}
}

// With security.action reject, what is refused from another node's
// address unvouched is still dropped: a 503 would go to the node on a
// spoofer's word. A phone over its limit gets its 503.
func TestNodeAddressRefusedWithoutAnAnswer(t *testing.T) {
	node, phone := netip.MustParseAddr("192.0.2.50"), netip.MustParseAddr("192.0.2.60")
	g := guard(true)
	g.c.Node = func(ip netip.Addr) bool { return ip == node }
	now := time.Now()
	for _, tc := range []struct {
		src  netip.Addr
		want []Verdict
	}{
		{node, []Verdict{Pass, Pass, Pass, Drop, Drop}},
		{phone, []Verdict{Pass, Pass, Pass, Reject, Reject}},
	} {
		var got []Verdict
		for range 5 {
			got = append(got, g.Admit(tc.src, false, now))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("from %s: %v, want %v", tc.src, got, tc.want)
		}
	}
	if v := g.Admit(node, true, now); v != Pass {
		t.Fatalf("vouched packet from the node: %v", v)
	}
}
