package trunks

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/numbers"
)

func TestOutboundOrder(t *testing.T) {
	gw := func(a string, prio, weight int) Gateway {
		return Gateway{Addr: netip.MustParseAddrPort(a), Transport: "udp", Priority: prio, Weight: weight}
	}
	tb := New(numbers.Plan{CountryCode: "82", NationalPrefix: "0"},
		[]Trunk{
			{Name: "a", Gateways: []Gateway{gw("127.0.0.1:5072", 2, 1), gw("127.0.0.1:5070", 1, 1), gw("127.0.0.1:5071", 1, 5)}},
			{Name: "b", Gateways: []Gateway{gw("127.0.0.1:5080", 1, 1)}},
		},
		[]numbers.Route{{Prefix: "+82", Trunks: []string{"a", "b"}}, {Prefix: "+1", Trunks: []string{"b"}}})
	var got []string
	gws, _ := tb.Outbound("+821099998888")
	for _, g := range gws {
		got = append(got, g.Trunk+"@"+g.Addr.String())
	}
	want := []string{"a@127.0.0.1:5071", "a@127.0.0.1:5070", "a@127.0.0.1:5072", "b@127.0.0.1:5080"}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
	if g, routed := tb.Outbound("+442079460958"); g != nil || routed {
		t.Fatalf("no route, yet %v", g)
	}
	if g, _ := tb.Outbound("+14155550100"); len(g) != 1 || g[0].Transport != "UDP" {
		t.Fatalf("%v", g)
	}
}

func TestCarriersAndCallLimits(t *testing.T) {
	tb := New(numbers.Plan{}, []Trunk{
		{Name: "a", MaxCalls: 1, InboundACL: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
			Gateways: []Gateway{{Addr: netip.MustParseAddrPort("198.51.100.1:5060")}}},
		{Name: "b", Gateways: []Gateway{{Addr: netip.MustParseAddrPort("203.0.113.1:5060")}}},
	}, []numbers.Route{{Prefix: "+82", Trunks: []string{"a", "b"}}})
	if tr, ok := tb.Carrier(netip.MustParseAddr("::ffff:198.51.100.77")); !ok || tr != "a" {
		t.Fatal("a source in the ACL is not trunk a's")
	}
	if _, ok := tb.Carrier(netip.MustParseAddr("203.0.113.1")); ok {
		t.Fatal("a gateway address is not trusted without an ACL")
	}
	tb.Acquire("a") // once per call: sip/call holds the slot
	if !tb.Full("a") || tb.Calls("a") != 1 {
		t.Fatal("trunk a should be full")
	}
	if g, _ := tb.Outbound("+8221234567"); len(g) != 1 || g[0].Trunk != "b" {
		t.Fatalf("a full trunk was not skipped: %v", g)
	}
	tb.Release("a")
	tb.Release("a") // never below zero
	if tb.Full("a") || tb.Calls("a") != 0 {
		t.Fatal("the call did not end")
	}
	// A call whose BYE never comes lets its slot go at its dialog timeout:
	// sip/call's TestEveryEndingLeavesNothing.
}

func TestGatewayHealth(t *testing.T) {
	g1 := Gateway{Addr: netip.MustParseAddrPort("198.51.100.1:5060"), Transport: "udp", Priority: 1}
	g2 := Gateway{Addr: netip.MustParseAddrPort("198.51.100.2:5060"), Transport: "udp", Priority: 2}
	tb := New(numbers.Plan{}, []Trunk{{Name: "a", Gateways: []Gateway{g1, g2}}}, []numbers.Route{{Prefix: "+", Trunks: []string{"a"}}})
	gws, _ := tb.Outbound("+8221234567")
	first, second := gws[0], gws[1]
	now := time.Now()
	tb.Pinged(first, false)
	if g, _ := tb.Outbound("+8221234567"); len(g) != 1 || g[0] != second {
		t.Fatalf("a gateway that misses its ping is still used: %v", g)
	}
	tb.Pinged(first, true)
	if g, _ := tb.Outbound("+8221234567"); len(g) != 2 {
		t.Fatal("a gateway that answers again is not back")
	}
	tb.Unavailable(second, 30*time.Second, now)
	tb.Pinged(second, true) // pings do not end a Retry-After
	if !tb.Down(second, now.Add(10*time.Second)) || tb.Down(second, now.Add(31*time.Second)) {
		t.Fatal("Retry-After not honoured")
	}
	st := tb.Status(now)
	if len(st) != 2 || !st[0].Up || st[1].Up || st[0].Gateway != "UDP:198.51.100.1:5060" {
		t.Fatalf("status %+v", st)
	}
	if d, ok := RetryAfter("120 (maintenance);duration=3600"); !ok || d != 2*time.Minute {
		t.Fatalf("Retry-After %v %v", d, ok)
	}
	if _, ok := RetryAfter("soon"); ok {
		t.Fatal("bad Retry-After accepted")
	}
}
