package proxy

import (
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/chain/chaintest"
	"github.com/sori-voice/sori/sip/local"
	"github.com/sori-voice/sori/sip/siptest"
)

func TestGroupByQ(t *testing.T) {
	tests := []struct {
		name string
		qs   []int // -1: no q
		want [][]int
	}{
		{"one contact", []int{-1}, [][]int{{-1}}},
		{"equal q fork in parallel", []int{500, 500}, [][]int{{500, 500}}},
		{"no q counts as 1.0", []int{1000, -1, 700}, [][]int{{1000, -1}, {700}}},
		{"highest first, stable within a group", []int{100, 900, 500, 900}, [][]int{{900, 900}, {500}, {100}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ts []target
			for i, q := range tt.qs {
				ts = append(ts, target{q: q, dest: string(rune('a' + i))})
			}
			var got [][]int
			for _, g := range groupByQ(ts) {
				var qs []int
				for _, t := range g {
					qs = append(qs, t.q)
				}
				got = append(got, qs)
			}
			if !slices.EqualFunc(got, tt.want, slices.Equal) {
				t.Fatalf("groups %v, want %v", got, tt.want)
			}
		})
	}
	// Stability: the first 900 given is tried first.
	g := groupByQ([]target{{q: 100, dest: "x"}, {q: 900, dest: "first"}, {q: 900, dest: "second"}})
	if g[0][0].dest != "first" || g[0][1].dest != "second" {
		t.Fatalf("order within a group changed: %+v", g[0])
	}
}

func TestBindingTarget(t *testing.T) {
	tests := []struct {
		name          string
		b             store.Binding
		dest, transp  string
		routeFromPath bool
	}{
		{"behind NAT: the REGISTER's source", store.Binding{Contact: "sip:alice@192.168.1.20:5060", Source: "203.0.113.5:40000", NAT: true, Transport: "udp"}, "203.0.113.5:40000", "UDP", false},
		{"over TCP: its connection", store.Binding{Contact: "sip:alice@192.168.1.20:5060;transport=tcp", Source: "203.0.113.5:51000", NAT: true, Transport: "tcp"}, "203.0.113.5:51000", "TCP", false},
		{"not behind NAT: the Contact", store.Binding{Contact: "sip:alice@198.51.100.7:5062", Source: "198.51.100.9:5060", Transport: "udp"}, "", "", false},
		{"Path: through the edge proxy", store.Binding{Contact: "sip:alice@192.168.1.20", Source: "198.51.100.1:5060", NAT: true, Transport: "udp", Path: []string{"<sip:edge.example;lr>"}}, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bindingTarget(tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if got.dest != tt.dest || got.transport != tt.transp || got.uri.String() != tt.b.Contact || (len(got.path) > 0) != tt.routeFromPath {
				t.Fatalf("target %+v", got)
			}
		})
	}
	if _, err := bindingTarget(store.Binding{Contact: "not a uri"}); err == nil {
		t.Fatal("a broken contact gave a target")
	}
}

func TestPopRoutes(t *testing.T) {
	p := newTestProxy(t, "")
	tests := []struct {
		name   string
		ruri   string
		routes []string
		wantRU string
		want   []string // Route values left
		routed bool
	}{
		{"no route", "sip:bob@sori.test", nil, "sip:bob@sori.test", nil, false},
		{"our loose route popped", "sip:bob@198.51.100.7:5062", []string{"<sip:127.0.0.1:5060;lr>"}, "sip:bob@198.51.100.7:5062", nil, true},
		{"our route popped, the next kept", "sip:bob@198.51.100.7", []string{"<sip:127.0.0.1:5060;lr>", "<sip:edge.example;lr>"}, "sip:bob@198.51.100.7", []string{"<sip:edge.example;lr>"}, true},
		{"both of a double Record-Route popped", "sip:bob@198.51.100.7", []string{"<sip:127.0.0.1:5060;lr>", "<sip:127.0.0.1:5061;transport=tcp;lr>"}, "sip:bob@198.51.100.7", nil, true},
		{"someone else's route kept", "sip:bob@198.51.100.7", []string{"<sip:edge.example;lr>"}, "sip:bob@198.51.100.7", []string{"<sip:edge.example;lr>"}, false},
		{"a phone on our host but another port is not us", "sip:bob@198.51.100.7", []string{"<sip:127.0.0.1:5099;lr>"}, "sip:bob@198.51.100.7", []string{"<sip:127.0.0.1:5099;lr>"}, false},
		{"strict router before us: the last Route is the target", "sip:127.0.0.1:5060;lr", []string{"<sip:edge.example;lr>", "<sip:bob@198.51.100.7>"}, "sip:bob@198.51.100.7", []string{"<sip:edge.example;lr>"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var extra []string
			for _, r := range tt.routes {
				extra = append(extra, "Route: "+r)
			}
			req := chaintest.Request(t, chaintest.Raw("BYE", tt.ruri, extra...))
			routed, _ := p.popRoutes(req)
			if got := siptest.Values(req.GetHeaders("Route")); routed != tt.routed || req.Recipient.String() != tt.wantRU || !slices.Equal(got, tt.want) {
				t.Fatalf("routed %v, R-URI %s, Route %q", routed, req.Recipient.String(), got)
			}
		})
	}
}

func TestPrepare(t *testing.T) {
	invite := func(t *testing.T, extra ...string) *sip.Request {
		req := chaintest.Request(t, chaintest.Raw("INVITE", "sip:bob@sori.test", append([]string{"Contact: <sip:alice@192.168.1.20:5060>"}, extra...)...))
		req.SetSource("203.0.113.5:40000")
		return req
	}
	t.Run("initial INVITE to a NATed UDP contact", func(t *testing.T) {
		p := newTestProxy(t, "")
		in := invite(t)
		out, err := p.prepare(in, target{uri: siptest.URI(t, "sip:bob@10.0.0.9:5062"), dest: "198.51.100.7:41000", transport: "UDP"}, true, "loop1")
		if err != nil {
			t.Fatal(err)
		}
		vias := out.GetHeaders("Via")
		top := out.Via()
		branch, _ := top.Params.Get("branch")
		switch {
		case out.Recipient.String() != "sip:bob@10.0.0.9:5062":
			t.Fatalf("R-URI %s", out.Recipient.String())
		case out.Destination() != "198.51.100.7:41000" || out.Transport() != "UDP":
			t.Fatalf("sent to %s over %s", out.Destination(), out.Transport())
		case out.MaxForwards().Val() != 69:
			t.Fatalf("Max-Forwards %d", out.MaxForwards().Val())
		case len(vias) != 2 || top.Host != "127.0.0.1" || top.Port != 5060 || !strings.HasPrefix(branch, branchPrefix+"loop1.") || !top.Params.Has("rport"):
			t.Fatalf("Via %q", siptest.Values(vias))
		case !strings.Contains(vias[1].Value(), "received=203.0.113.5") || !strings.Contains(vias[1].Value(), "rport=40000"):
			t.Fatalf("the caller's Via did not learn its source: %s", vias[1].Value())
		case !slices.Equal(siptest.Values(out.GetHeaders("Record-Route")), []string{"<sip:127.0.0.1:5060;sd=" + p.dialogToken(in.CallID().Value()) + ";lr>"}):
			t.Fatalf("Record-Route %q", siptest.Values(out.GetHeaders("Record-Route")))
		case out.Contact().Address.String() != "sip:alice@192.168.1.20:5060;alias=203.0.113.5~40000~1;as="+p.aliasSeal(in.CallID().Value(), "203.0.113.5~40000~1"):
			t.Fatalf("Contact %s", out.Contact().Address.String())
		case in.MaxForwards().Val() != 70 || len(in.GetHeaders("Via")) != 1:
			t.Fatal("the incoming request was changed")
		}
	})
	t.Run("UDP in, TCP out: double Record-Route", func(t *testing.T) {
		p := newTestProxy(t, "")
		out, err := p.prepare(invite(t), target{uri: siptest.URI(t, "sip:bob@198.51.100.7:5062;transport=tcp")}, true, "l")
		if err != nil {
			t.Fatal(err)
		}
		rr := siptest.Values(out.GetHeaders("Record-Route"))
		tok := p.dialogToken(out.CallID().Value())
		if out.Transport() != "TCP" || out.Destination() != "198.51.100.7:5062" || !slices.Equal(rr, []string{"<sip:127.0.0.1:5061;transport=tcp;sd=" + tok + ";lr>", "<sip:127.0.0.1:5060;sd=" + tok + ";lr>"}) {
			t.Fatalf("%s to %s, Record-Route %q", out.Transport(), out.Destination(), rr)
		}
	})
	t.Run("advertised address in Via and Record-Route", func(t *testing.T) {
		p := newTestProxy(t, "203.0.113.1:5080")
		out, err := p.prepare(invite(t), target{uri: siptest.URI(t, "sip:bob@198.51.100.7")}, true, "l")
		if err != nil {
			t.Fatal(err)
		}
		if v := out.Via(); v.Host != "203.0.113.1" || v.Port != 5080 || out.RecordRoute().Value() != "<sip:203.0.113.1:5080;sd="+p.dialogToken(out.CallID().Value())+";lr>" || out.Destination() != "198.51.100.7:5060" {
			t.Fatalf("Via %s, Record-Route %s, to %s", v.Value(), out.RecordRoute().Value(), out.Destination())
		}
	})
	t.Run("the service's name in Record-Route, a flow's holder by its own", func(t *testing.T) {
		p := New(Config{
			Self:        local.New("sori.test", "127.0.0.1:5060", "127.0.0.1:5061", "sip.sori.test"),
			Sender:      sender{},
			RecordRoute: "sip.sori.test",
			Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		in := invite(t)
		tok := p.dialogToken(in.CallID().Value())
		for _, c := range []struct {
			name string
			t    target
			want []string
		}{
			{"double", target{uri: siptest.URI(t, "sip:bob@198.51.100.7:5062;transport=tcp")},
				[]string{"<sip:sip.sori.test;transport=tcp;sd=" + tok + ";lr>", "<sip:sip.sori.test;sd=" + tok + ";lr>"}},
			{"down a flow of this node's", target{uri: siptest.URI(t, "sip:bob@198.51.100.7:5062"), edge: "FLOW"},
				[]string{"<sip:FLOW@127.0.0.1:5060;sd=" + tok + ";lr>"}},
		} {
			out, err := p.prepare(in, c.t, true, "l")
			if err != nil {
				t.Fatal(err)
			}
			if rr := siptest.Values(out.GetHeaders("Record-Route")); !slices.Equal(rr, c.want) || out.Via().Host != "127.0.0.1" {
				t.Fatalf("%s: Record-Route %q, Via %s", c.name, rr, out.Via().Value())
			}
		}
		// A phone's BYE along that route, to any node: the route is ours.
		bye := chaintest.Request(t, chaintest.Raw("BYE", "sip:bob@198.51.100.7:5062", "Route: <sip:sip.sori.test;sd="+tok+";lr>"))
		if routed, popped := p.popRoutes(bye); !routed || len(popped) != 1 || bye.Route() != nil || !p.ourDialog(bye, popped) {
			t.Fatalf("routed %v, popped %v, Route left %v", routed, popped, bye.Route())
		}
	})
	t.Run("Path becomes Route", func(t *testing.T) {
		p := newTestProxy(t, "")
		out, err := p.prepare(invite(t), target{uri: siptest.URI(t, "sip:bob@10.0.0.9"), path: []string{"<sip:edge1.example;lr>, <sip:edge2.example;lr>"}}, true, "l")
		if err != nil {
			t.Fatal(err)
		}
		if r := siptest.Values(out.GetHeaders("Route")); !slices.Equal(r, []string{"<sip:edge1.example;lr>", "<sip:edge2.example;lr>"}) || out.Destination() != "edge1.example:5060" {
			t.Fatalf("Route %q, to %s", r, out.Destination())
		}
	})
	t.Run("strict router next: it gets the Request-URI", func(t *testing.T) {
		p := newTestProxy(t, "")
		in := chaintest.Request(t, chaintest.Raw("BYE", "sip:bob@10.0.0.9", "Route: <sip:strict.example>"))
		out, err := p.prepare(in, target{uri: in.Recipient}, false, "l")
		if err != nil {
			t.Fatal(err)
		}
		if out.Recipient.String() != "sip:strict.example" || !slices.Equal(siptest.Values(out.GetHeaders("Route")), []string{"<sip:bob@10.0.0.9>"}) || out.Destination() != "strict.example:5060" {
			t.Fatalf("R-URI %s, Route %q, to %s", out.Recipient.String(), siptest.Values(out.GetHeaders("Route")), out.Destination())
		}
	})
	t.Run("in-dialog alias is followed and removed", func(t *testing.T) {
		p := newTestProxy(t, "")
		in := chaintest.Request(t, chaintest.Raw("BYE", "sip:alice@192.168.1.20:5060;alias=203.0.113.5~40000~2"))
		out, err := p.prepare(in, target{uri: in.Recipient}, false, "l")
		if err != nil {
			t.Fatal(err)
		}
		if out.Recipient.String() != "sip:alice@192.168.1.20:5060" || out.Destination() != "203.0.113.5:40000" || out.Transport() != "TCP" || out.RecordRoute() != nil {
			t.Fatalf("R-URI %s to %s over %s", out.Recipient.String(), out.Destination(), out.Transport())
		}
	})
	t.Run("no Max-Forwards gets one", func(t *testing.T) {
		p := newTestProxy(t, "")
		in := invite(t)
		in.RemoveHeader("Max-Forwards")
		out, err := p.prepare(in, target{uri: siptest.URI(t, "sip:bob@198.51.100.7")}, false, "l")
		if err != nil || out.MaxForwards() == nil || out.MaxForwards().Val() != 70 {
			t.Fatalf("%v %v", out, err)
		}
	})
	t.Run("a transport sori does not serve", func(t *testing.T) {
		p := newTestProxy(t, "")
		if _, err := p.prepare(invite(t), target{uri: siptest.URI(t, "sip:bob@198.51.100.7;transport=sctp")}, false, "l"); err == nil {
			t.Fatal("SCTP accepted")
		}
	})
}

func TestSplitComma(t *testing.T) {
	got := splitComma(`<sip:a.example;lr>, "Doe, John" <sip:b.example>,<sip:c.example;x="1,2">`)
	want := []string{"<sip:a.example;lr>", ` "Doe, John" <sip:b.example>`, `<sip:c.example;x="1,2">`}
	if !slices.Equal(got, want) {
		t.Fatalf("%q", got)
	}
}

// Only an in-dialog request whose Route to sori carries its dialog's token
// is relayed: naming sori in a Route does not make it send anywhere.
func TestOurDialog(t *testing.T) {
	p := newTestProxy(t, "")
	other := newTestProxy(t, "") // another secret: another deployment
	callID := "test-call"        // chaintest's
	tok := p.dialogToken(callID)
	for _, c := range []struct {
		name   string
		routes []string
		want   bool
	}{
		{"our token", []string{"<sip:127.0.0.1:5060;sd=" + tok + ";lr>"}, true},
		{"our token on the second of a double Record-Route", []string{"<sip:127.0.0.1:5061;transport=tcp;lr>", "<sip:127.0.0.1:5060;sd=" + tok + ";lr>"}, true},
		{"no token", []string{"<sip:127.0.0.1:5060;lr>"}, false},
		{"another dialog's token", []string{"<sip:127.0.0.1:5060;sd=" + p.dialogToken("other-call") + ";lr>"}, false},
		{"another secret's token", []string{"<sip:127.0.0.1:5060;sd=" + other.dialogToken(callID) + ";lr>"}, false},
		{"the token on someone else's route", []string{"<sip:edge.example;sd=" + tok + ";lr>"}, false},
		{"no route", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var extra []string
			for _, r := range c.routes {
				extra = append(extra, "Route: "+r)
			}
			req := chaintest.Request(t, chaintest.Raw("BYE", "sip:bob@198.51.100.7", extra...))
			_, popped := p.popRoutes(req)
			if got := p.ourDialog(req, popped); got != c.want {
				t.Fatalf("ourDialog = %v", got)
			}
		})
	}
}

// One flow per device: the newest flow of an instance is forked to with
// the other contacts; its older flows follow alone, newest first, marked
// as fallbacks.
func TestForkGroupsOneFlowPerDevice(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	ts := []target{
		{uri: siptest.URI(t, "sip:a@192.0.2.1;flow=old"), q: -1, instance: "<urn:uuid:1>", updated: now.Add(-2 * time.Minute)},
		{uri: siptest.URI(t, "sip:a@192.0.2.2;flow=new"), q: -1, instance: "<urn:uuid:1>", updated: now},
		{uri: siptest.URI(t, "sip:a@192.0.2.3;flow=mid"), q: -1, instance: "<urn:uuid:1>", updated: now.Add(-time.Minute)},
		{uri: siptest.URI(t, "sip:desk@192.0.2.9"), q: -1},
		{uri: siptest.URI(t, "sip:b@192.0.2.4"), q: 500, instance: "<urn:uuid:2>", updated: now},
	}
	var got [][]string
	for _, g := range forkGroups(ts) {
		var names []string
		for _, x := range g {
			n := x.uri.Host
			if x.fallback {
				n += "(fallback)"
			}
			names = append(names, n)
		}
		got = append(got, names)
	}
	want := [][]string{{"192.0.2.2", "192.0.2.9"}, {"192.0.2.4"}, {"192.0.2.3(fallback)"}, {"192.0.2.1(fallback)"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("groups %v, want %v", got, want)
	}
}

func TestSecureOnly(t *testing.T) {
	for _, c := range []struct {
		name string
		b    store.Binding
		want bool
	}{
		{"registered over TLS", store.Binding{Contact: "sip:alice@10.0.0.2:5060;transport=tls", Source: "203.0.113.5:40000", NAT: true, Transport: "tls"}, true},
		{"registered over WSS", store.Binding{Contact: "sip:alice@df7jal23ls0d.invalid;transport=ws", Source: "203.0.113.5:40001", NAT: true, Transport: "wss"}, true},
		{"registered over UDP", store.Binding{Contact: "sip:alice@10.0.0.2:5060", Source: "203.0.113.5:40002", NAT: true, Transport: "udp"}, false},
		{"registered over WS", store.Binding{Contact: "sip:alice@x.invalid;transport=ws", Source: "203.0.113.5:40003", NAT: true, Transport: "ws"}, false},
		{"a sips: contact", store.Binding{Contact: "sips:alice@198.51.100.7", Source: "198.51.100.7:5061", Transport: "tls"}, true},
		{"a contact with transport=tls", store.Binding{Contact: "sip:alice@198.51.100.7:5061;transport=tls", Source: "198.51.100.7:5061", Transport: "tls"}, true},
		{"a plain contact, not behind NAT", store.Binding{Contact: "sip:alice@198.51.100.7", Source: "198.51.100.7:5060", Transport: "udp"}, false},
		{"through an edge proxy", store.Binding{Contact: "sip:alice@10.0.0.2", Path: []string{"<sip:edge.example;lr>"}, Transport: "tls", NAT: true}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			tg, err := bindingTarget(c.b)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(secureOnly([]target{tg})) == 1; got != c.want {
				t.Fatalf("secure = %v, want %v", got, c.want)
			}
		})
	}
}
