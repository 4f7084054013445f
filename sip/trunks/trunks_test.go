package trunks

import (
	"net/netip"
	"testing"

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
		[]numbers.Route{{Prefix: "+82", Trunks: []string{"a", "b"}}, {Prefix: "+1", Trunks: []string{"b"}}},
		map[string][]string{"alice": {"+821011112222", "+821033334444"}})
	var got []string
	for _, g := range tb.Outbound("+821099998888") {
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
	if g := tb.Outbound("+442079460958"); g != nil {
		t.Fatalf("no route, yet %v", g)
	}
	if u, ok := tb.Owner("+821033334444"); !ok || u != "alice" {
		t.Fatal("owner")
	}
	if n, ok := tb.NumberOf("alice"); !ok || n != "+821011112222" {
		t.Fatal("first number")
	}
	if g := tb.Outbound("+14155550100"); len(g) != 1 || g[0].Transport != "UDP" {
		t.Fatalf("%v", g)
	}
}
