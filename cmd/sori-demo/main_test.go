package main

import (
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/sip/networks"
	"github.com/sori-voice/sori/sip/weather"
)

func demoConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load("../../testdata/demo/sori.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Every demo user is on a carrier, on an address of its own in that
// carrier's prefix; both plans are on every carrier.
func TestDemoUsers(t *testing.T) {
	cfg := demoConfig(t)
	users, err := demoUsers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 48 {
		t.Fatalf("%d demo users", len(users))
	}
	seen := map[netip.Addr]bool{}
	plans := map[string]map[string]bool{}
	tags := map[string]map[string]string{}
	for _, u := range cfg.Users {
		tags[u.Name] = u.Tags
	}
	for _, u := range users {
		if seen[u.addr] {
			t.Errorf("%s: address %s twice", u.name, u.addr)
		}
		seen[u.addr] = true
		i := map[string]int{"carrier-a": 0, "carrier-b": 1, "carrier-c": 2}[u.carrier.network]
		if n := cfg.Networks[i]; !netip.MustParsePrefix(n.Prefixes[0]).Contains(u.addr) || u.plmn != n.PLMNs[0] {
			t.Errorf("%s on %s at %s, PLMN %s", u.name, u.carrier.network, u.addr, u.plmn)
		}
		if plans[u.carrier.network] == nil {
			plans[u.carrier.network] = map[string]bool{}
		}
		plans[u.carrier.network][tags[u.name]["plan"]] = true
	}
	for _, c := range carriers {
		if !plans[c.network]["lte-62"] || !plans[c.network]["unlimited"] {
			t.Errorf("%s has plans %v", c.network, plans[c.network])
		}
	}
	if cfg.HTTP.Listen != "127.0.0.1:9060" {
		t.Errorf("the demo's page is not at http://127.0.0.1:9060/quality: http.listen %q", cfg.HTTP.Listen)
	}
	if a, err := udpListener(cfg); err != nil || a != netip.MustParseAddrPort("127.0.0.1:5060") {
		t.Errorf("SIP at %v %v", a, err)
	}
}

// The access networks the generator draws are the ones sori will see:
// its PANI values name the carrier (LTE: by PLMN) and the access type;
// Wi-Fi names no PLMN, and the phone's address names the carrier.
func TestDemoLegsClassify(t *testing.T) {
	cfg := demoConfig(t)
	users, err := demoUsers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var nets []networks.Network
	for _, n := range cfg.Networks {
		var ps []netip.Prefix
		for _, p := range n.Prefixes {
			ps = append(ps, netip.MustParsePrefix(p))
		}
		nets = append(nets, networks.Network{Name: n.Name, Prefixes: ps, PLMNs: n.PLMNs})
	}
	byPANI := networks.New(nets)
	g := &generator{o: options{minLen: 5 * time.Second, maxLen: 10 * time.Second}, users: users, busy: make([]bool, len(users)),
		rng: rand.New(rand.NewPCG(1, 0)), log: slog.New(slog.DiscardHandler)}
	wifi := map[string]int{}
	for range 20 {
		for _, u := range users {
			leg, access := g.leg(u)
			if got := weather.AccessType(leg.PANI); got != access {
				t.Fatalf("%s: PANI %q is %s, drawn as %s", u.name, leg.PANI, got, access)
			}
			if got := byPANI.Classify(u.addr, leg.PANI); got != u.carrier.network {
				t.Fatalf("%s: PANI %q from %s is on %q, want %s", u.name, leg.PANI, u.addr, got, u.carrier.network)
			}
			if access == "wifi" {
				wifi[u.carrier.network]++
				// Its address alone names the carrier: nothing else could.
				if got := byPANI.Classify(u.addr, ""); got != u.carrier.network {
					t.Fatalf("%s at %s is on %q", u.name, u.addr, got)
				}
			}
			want := u.carrier.lte
			if access == "wifi" {
				want = u.carrier.wifi
			}
			if leg.UpLoss != want.UpLoss || leg.DownLoss != want.DownLoss {
				t.Fatalf("%s on %s: %+v", u.name, access, leg)
			}
		}
	}
	if wifi["carrier-b"] != 0 || wifi["carrier-a"] == 0 || wifi["carrier-c"] == 0 {
		t.Errorf("Wi-Fi calls per carrier: %v", wifi)
	}
	// The calls drawn: two different idle phones, 5-10 s.
	a, b, spec, _, _, ok := g.pick()
	if !ok || a == b || spec.Packets < 250 || spec.Packets > 500 || !g.busy[a] || !g.busy[b] {
		t.Fatalf("pick: %d %d %+v %v", a, b, spec, ok)
	}
	g.release(a, b)
	if g.busy[a] || g.busy[b] {
		t.Fatal("not released")
	}
}

// The carriers' scripted losses are those README and the Makefile tell.
func TestDemoCarriers(t *testing.T) {
	want := map[string][4]float64{ // LTE up, down; Wi-Fi up, down
		"carrier-a": {0, 0, 0, 0},
		"carrier-b": {0, 0.03, 0, 0},
		"carrier-c": {0.05, 0, 0, 0},
	}
	for _, c := range carriers {
		if got := [4]float64{c.lte.UpLoss, c.lte.DownLoss, c.wifi.UpLoss, c.wifi.DownLoss}; got != want[c.network] {
			t.Errorf("%s: %v", c.network, got)
		}
		for _, l := range []time.Duration{c.lte.UpJitter, c.wifi.UpJitter} {
			if l >= 20*time.Millisecond {
				t.Errorf("%s: uplink jitter %v would reorder 20 ms packets", c.network, l)
			}
		}
		// Jitter on every downlink, so a clean one is still reported
		// (a phone's all-zero RTCP figures read as no RTCP at all).
		if c.lte.DownJitter == 0 || (c.wifiShare > 0 && c.wifi.DownJitter == 0) {
			t.Errorf("%s: a downlink without jitter", c.network)
		}
	}
}
