package nodes

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/registrar/store"
)

var secret = []byte("shared-secret-0123456789")

func addr(t *testing.T, s string) Address {
	t.Helper()
	a, err := ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// beats is Beats in memory, with expiry on a clock the test moves.
type beats struct {
	mu     sync.Mutex
	now    time.Time
	m      map[string]beat
	seen   map[string]time.Time // when each node beat last
	err    error                // every call fails with it when set
	left   []string
	beaten chan string // gets the id of each Beat, if set
}

type beat struct {
	addr string
	exp  time.Time
}

func newBeats() *beats {
	return &beats{now: time.Unix(1_800_000_000, 0), m: map[string]beat{}, seen: map[string]time.Time{}}
}

func (b *beats) live(id string) string {
	if x, ok := b.m[id]; ok && b.now.Before(x.exp) {
		return x.addr
	}
	return ""
}

func (b *beats) Claim(_ context.Context, id, address string, ttl time.Duration) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return "", b.err
	}
	if v := b.live(id); v != "" && v != address {
		return v, nil
	}
	b.m[id] = beat{address, b.now.Add(ttl)}
	return address, nil
}

func (b *beats) Beat(_ context.Context, id, address string, ttl time.Duration) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return "", b.err
	}
	prev := b.live(id)
	b.m[id] = beat{address, b.now.Add(ttl)}
	b.seen[id] = b.now
	if b.beaten != nil {
		select {
		case b.beaten <- id:
		default:
		}
	}
	return prev, nil
}

func (b *beats) Address(_ context.Context, id string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return "", b.err
	}
	return b.live(id), nil
}

func (b *beats) Leave(_ context.Context, id, address string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left = append(b.left, id)
	if b.live(id) == address {
		delete(b.m, id)
	}
	return nil
}

func (b *beats) Gone(_ context.Context, after time.Duration) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	var out []string
	for id, at := range b.seen {
		if b.now.Sub(at) > after && b.live(id) == "" {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (b *beats) advance(d time.Duration) {
	b.mu.Lock()
	b.now = b.now.Add(d)
	b.mu.Unlock()
}

func (b *beats) clock() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.now
}

type conns map[string]bool

func (c conns) Open(transport, remote string) bool { return c[transport+" "+remote] }

// three nodes; the Set is node a's.
func threeNodes(t *testing.T, bs Beats, cs Conns) *Set {
	t.Helper()
	s := New(Config{ID: "a", Self: addr(t, "tcp:10.0.0.1:5060"), Secret: secret, Beats: bs, Conns: cs,
		Peers: []Address{addr(t, "tcp:10.0.0.1:5060"), addr(t, "tcp:10.0.0.2:5060"), addr(t, "tcp:10.0.0.3:5070")}})
	if b, ok := bs.(*beats); ok {
		s.now = b.clock
	}
	return s
}

func TestRouteDecision(t *testing.T) {
	bs := newBeats()
	a := threeNodes(t, bs, nil)
	ctx := context.Background()
	for id, ad := range map[string]string{"b": "tcp:10.0.0.2:5060", "c": "tcp:10.0.0.3:5070", "x": "tcp:192.0.2.66:5060"} {
		if _, err := bs.Beat(ctx, id, ad, BeatTTL); err != nil {
			t.Fatal(err)
		}
	}
	_, tokB := New(Config{ID: "b", Secret: secret}).Holder("tcp", "198.51.100.7:40112")
	flow := store.Binding{Contact: "sip:bob@192.168.1.20:5060;transport=tcp", NAT: true, Transport: "tcp", Source: "198.51.100.7:40112", Node: "b", Flow: tokB}
	with := func(f func(*store.Binding)) store.Binding { b := flow; f(&b); return b }
	tests := []struct {
		name  string
		b     store.Binding
		want  Decision
		route string
	}{
		{"held by another node", flow, Remote, "sip:" + tokB + "@10.0.0.2:5060;transport=tcp;lr;ob"},
		{"held here", with(func(b *store.Binding) { b.Node = "a" }), Local, ""},
		{"one node (no holder)", with(func(b *store.Binding) { b.Node, b.Flow = "", "" }), Local, ""},
		{"over UDP, reached at its Contact from anywhere", with(func(b *store.Binding) { b.NAT, b.Transport = false, "udp" }), Local, ""},
		{"over UDP behind NAT: the holder's mapping", with(func(b *store.Binding) { b.Transport = "udp" }), Remote, ""},
		{"a connection, even not behind NAT", with(func(b *store.Binding) { b.NAT = false }), Remote, ""},
		{"through an edge proxy's Path", with(func(b *store.Binding) { b.Path = []string{"<sip:edge.example;lr>"} }), Local, ""},
		{"holder down: no heartbeat", with(func(b *store.Binding) { b.Node = "gone" }), Down, ""},
		{"heartbeat naming an address not in sip.nodes", with(func(b *store.Binding) { b.Node = "x" }), Down, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, d := a.Route(ctx, tt.b)
			if d != tt.want {
				t.Fatalf("decision %v, want %v", d, tt.want)
			}
			if tt.route != "" && u.String() != tt.route {
				t.Fatalf("route %s, want %s", u.String(), tt.route)
			}
		})
	}
}

// Nodes over TLS (sip.node_transport tls): the Route to a node says
// transport=tls, and a heartbeat naming a node's address with another
// transport (a downgrade to tcp written into Redis) is not believed.
func TestRouteOverTLS(t *testing.T) {
	bs := newBeats()
	ctx := context.Background()
	a := New(Config{ID: "a", Self: addr(t, "tls:10.0.0.1:5061"), Secret: secret, Beats: bs,
		Peers: []Address{addr(t, "tls:10.0.0.1:5061"), addr(t, "tls:10.0.0.2:5061"), addr(t, "tls:10.0.0.3:5061")}})
	a.now = bs.clock
	for id, ad := range map[string]string{"b": "tls:10.0.0.2:5061", "c": "tcp:10.0.0.3:5061"} {
		if _, err := bs.Beat(ctx, id, ad, BeatTTL); err != nil {
			t.Fatal(err)
		}
	}
	_, tokB := New(Config{ID: "b", Secret: secret}).Holder("tcp", "198.51.100.7:40112")
	b := store.Binding{Contact: "sip:bob@192.168.1.20:5060;transport=tcp", NAT: true, Transport: "tcp", Source: "198.51.100.7:40112", Node: "b", Flow: tokB}
	if u, d := a.Route(ctx, b); d != Remote || u.String() != "sip:"+tokB+"@10.0.0.2:5061;transport=tls;lr;ob" {
		t.Fatalf("to node b: %v %s", d, u.String())
	}
	b.Node = "c"
	if _, d := a.Route(ctx, b); d != Down {
		t.Fatalf("node c's heartbeat says tcp, sip.nodes tls: %v, want down", d)
	}
	if !a.IsNode(sip.Uri{Host: "10.0.0.2", UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}) {
		t.Fatal("a tls URI without a port names the node on 5061")
	}
}

// A node whose heartbeat expires is down for the others within BeatTTL
// and the cache; one that beats again is up again.
func TestLiveness(t *testing.T) {
	bs := newBeats()
	a := threeNodes(t, bs, nil)
	ctx := context.Background()
	_, _ = bs.Beat(ctx, "b", "tcp:10.0.0.2:5060", BeatTTL)
	if _, up := a.address(ctx, "b"); !up {
		t.Fatal("b down while its heartbeat is there")
	}
	bs.advance(BeatTTL) // b stopped beating: its key expired
	if _, up := a.address(ctx, "b"); up {
		t.Fatal("b still up after its heartbeat expired")
	}
	_, _ = bs.Beat(ctx, "b", "tcp:10.0.0.2:5060", BeatTTL)
	if _, up := a.address(ctx, "b"); up {
		t.Fatal("the cache was not used: down is believed for cacheFor")
	}
	bs.advance(cacheFor)
	if got, up := a.address(ctx, "b"); !up || got.String() != "tcp:10.0.0.2:5060" {
		t.Fatalf("b after beating again: %v %v", got, up)
	}
	// Redis unreachable: what was known last stands.
	bs.advance(cacheFor)
	bs.err = errors.New("connection refused")
	if _, up := a.address(ctx, "b"); !up {
		t.Fatal("b taken for down because Redis failed")
	}
	if _, up := a.address(ctx, "c"); up {
		t.Fatal("a node never seen taken for up while Redis fails")
	}
}

func TestJoin(t *testing.T) {
	bs := newBeats()
	ctx := context.Background()
	a := threeNodes(t, bs, nil)
	if err := a.Join(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Join(ctx); err != nil {
		t.Fatalf("the same node joining again (a restart): %v", err)
	}
	twin := New(Config{ID: "a", Self: addr(t, "tcp:10.0.0.2:5060"), Secret: secret, Beats: bs})
	if err := twin.Join(ctx); !errors.Is(err, ErrIDInUse) {
		t.Fatalf("a second node with id a: %v, want ErrIDInUse", err)
	}
	bs.advance(BeatTTL)
	if err := twin.Join(ctx); err != nil {
		t.Fatalf("the id once its node is gone: %v", err)
	}
}

// Run beats until its context ends, then removes the heartbeat.
func TestRunBeatsAndLeaves(t *testing.T) {
	bs := newBeats()
	bs.beaten = make(chan string, 1)
	a := threeNodes(t, bs, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	if id := <-bs.beaten; id != "a" { // Run's first beat is at once
		t.Fatalf("beat for %q", id)
	}
	if v, _ := bs.Address(context.Background(), "a"); v != "tcp:10.0.0.1:5060" {
		t.Fatalf("heartbeat %q", v)
	}
	cancel()
	<-done
	if v, _ := bs.Address(context.Background(), "a"); v != "" || len(bs.left) != 1 {
		t.Fatalf("after Run: heartbeat %q, left %v", v, bs.left)
	}
}

func TestTrust(t *testing.T) {
	tokA := NewTokens(secret).Mint("a", Flow{"TCP", "198.51.100.7:40112"})
	a := threeNodes(t, nil, conns{"TCP 198.51.100.7:40112": true})
	// b signs what it sends, as node b's transport does (sign.go).
	b := NewSigner(secret, addr(t, "tcp:10.0.0.2:5060"), []Address{addr(t, "tcp:10.0.0.1:5060"), addr(t, "tcp:10.0.0.2:5060")})
	unsigned := func(src, route string) *sip.Request {
		r := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "bob", Host: "192.168.1.20"})
		if route != "" {
			var u sip.Uri
			if err := sip.ParseUri(route, &u); err != nil {
				t.Fatal(err)
			}
			r.AppendHeader(&sip.RouteHeader{Address: u})
		}
		r.AppendHeader(sip.NewHeader("Call-ID", "call-1"))
		r.SetSource(src)
		r.SetTransport("TCP")
		return r
	}
	// req is signed as node b's transport writes it, and checked as node
	// a's transport reads it (taking the signature's nonce).
	req := func(src, route string) *sip.Request {
		raw := seal(b, unsigned(src, route).String())
		if !a.signer.Verify(raw) {
			t.Fatalf("node b's signature does not hold:\n%s", raw)
		}
		r := parse(t, string(raw)).(*sip.Request)
		r.SetSource(src)
		r.SetTransport("TCP")
		return r
	}
	// notTaken carries node b's signature, which a's transport never took.
	notTaken := func(src, route string) *sip.Request {
		r := parse(t, string(seal(b, unsigned(src, route).String()))).(*sip.Request)
		r.SetSource(src)
		r.SetTransport("TCP")
		return r
	}
	for _, c := range []struct {
		name  string
		req   *sip.Request
		trust bool
	}{
		{"another node down one of our flows", req("10.0.0.2:41000", "sip:"+tokA+"@10.0.0.1:5060;transport=tcp;lr;ob"), true},
		{"another node, no token", req("10.0.0.2:41000", "sip:10.0.0.1:5060;lr"), false},
		{"another node, no Route", req("10.0.0.3:5070", ""), false},
		{"a phone with our token", req("198.51.100.7:40112", "sip:"+tokA+"@10.0.0.1:5060;transport=tcp;lr;ob"), false},
		{"our own address is not another node", req("10.0.0.1:5060", "sip:"+tokA+"@10.0.0.1:5060;lr"), false},
		{"a token of node b's", req("10.0.0.2:41000", "sip:"+NewTokens(secret).Mint("b", Flow{"TCP", "198.51.100.7:40112"})+"@10.0.0.1:5060;lr"), false},
		// A node's address alone is nothing: anyone can send from it.
		{"node b's address, not signed", unsigned("10.0.0.2:41000", "sip:"+tokA+"@10.0.0.1:5060;transport=tcp;lr;ob"), false},
		// A signature counts once the transport took it (and only once).
		{"node b's signature, not taken by the transport", notTaken("10.0.0.2:41000", "sip:"+tokA+"@10.0.0.1:5060;transport=tcp;lr;ob"), false},
	} {
		if got := a.Forwarded(c.req); got != c.trust {
			t.Errorf("%s: Forwarded %v, want %v", c.name, got, c.trust)
		}
	}
	if f, ok := a.Flow(sip.Uri{User: tokA, Host: "10.0.0.1"}); !ok || !a.Open(f) || a.Open(Flow{"TCP", "198.51.100.7:40999"}) {
		t.Fatalf("flow %+v %v", f, ok)
	}
	for _, c := range []struct {
		u    sip.Uri
		want bool
	}{
		{sip.Uri{Host: "10.0.0.2", Port: 5060}, true},
		{sip.Uri{Host: "10.0.0.2"}, true}, // 5060 by default
		{sip.Uri{Host: "10.0.0.3", Port: 5060}, false},
		{sip.Uri{Host: "10.0.0.3", Port: 5070}, true},
		{sip.Uri{Host: "10.0.0.1", Port: 5060}, false}, // ourselves
		{sip.Uri{Host: "198.51.100.7", Port: 5060}, false},
		{sip.Uri{Host: "node-b.example", Port: 5060}, false},
	} {
		if got := a.IsNode(c.u); got != c.want {
			t.Errorf("IsNode(%s:%d) = %v", c.u.Host, c.u.Port, got)
		}
	}
}

// With TLS between the nodes, a node's address is trusted only on a
// connection Config.Vouched vouches for (its certificate names the node):
// the same request from the same address on a connection without one is
// not a node's.
func TestTrustOverTLS(t *testing.T) {
	vouched := map[string]bool{"TLS 10.0.0.2:41000": true}
	var asked []string
	a := New(Config{ID: "a", Self: addr(t, "tls:10.0.0.1:5061"), Secret: secret,
		Peers: []Address{addr(t, "tls:10.0.0.1:5061"), addr(t, "tls:10.0.0.2:5061")},
		Vouched: func(transport, src string) bool {
			asked = append(asked, transport+" "+src)
			return vouched[transport+" "+src]
		}})
	tokA := NewTokens(secret).Mint("a", Flow{"TCP", "198.51.100.7:40112"})
	for _, c := range []struct {
		name, transport, src string
		trust                bool
		asked                bool // Vouched was asked
	}{
		{"node b, its certificate vouched for", "TLS", "10.0.0.2:41000", true, true},
		{"node b's address, another connection without one", "TLS", "10.0.0.2:41001", false, true},
		{"node b's address over TCP", "TCP", "10.0.0.2:41000", false, true},
		{"node b's address over UDP", "UDP", "10.0.0.2:41000", false, true},
		{"a phone's address is never asked about", "TLS", "198.51.100.7:40112", false, false},
		{"our own address", "TLS", "10.0.0.1:5061", false, false},
		{"not an address", "TLS", "node-b:5061", false, false},
	} {
		asked = nil
		r := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "bob", Host: "192.168.1.20"})
		r.AppendHeader(&sip.RouteHeader{Address: sip.Uri{Scheme: "sip", User: tokA, Host: "10.0.0.1", Port: 5061, UriParams: sip.HeaderParams{{K: "lr", V: ""}}}})
		r.SetSource(c.src)
		r.SetTransport(c.transport)
		if got := a.Trusted(r); got != c.trust {
			t.Errorf("%s: Trusted %v, want %v", c.name, got, c.trust)
		}
		if (len(asked) > 0) != c.asked {
			t.Errorf("%s: Vouched asked %v", c.name, asked)
		}
		if got := a.Forwarded(r); got != c.trust {
			t.Errorf("%s: Forwarded %v, want %v", c.name, got, c.trust)
		}
	}
}

func TestParseAddress(t *testing.T) {
	for s, ok := range map[string]bool{
		"tcp:10.0.0.2:5060": true, "udp:[2001:db8::2]:5060": true, "TCP:10.0.0.2:5060": true,
		"tls:10.0.0.2:5061": true, "ws:10.0.0.2:80": false, "tcp:0.0.0.0:5060": false, "tcp:10.0.0.2": false, "10.0.0.2:5060": false, "tcp:node-b:5060": false,
	} {
		if _, err := ParseAddress(s); (err == nil) != ok {
			t.Errorf("%s: %v", s, err)
		}
	}
	if a := addr(t, "TCP:10.0.0.2:5060"); a.String() != "tcp:10.0.0.2:5060" || a.Addr != netip.MustParseAddrPort("10.0.0.2:5060") {
		t.Fatalf("%v", a)
	}
}

// A node is gone for good once its heartbeat has been gone for GoneAfter:
// not while it only lapsed (a restart), never this node itself, and not
// once it beats again.
func TestGone(t *testing.T) {
	bs := newBeats()
	a := threeNodes(t, bs, nil)
	ctx := context.Background()
	for id, ad := range map[string]string{"a": "tcp:10.0.0.1:5060", "b": "tcp:10.0.0.2:5060", "c": "tcp:10.0.0.3:5070"} {
		if _, err := bs.Beat(ctx, id, ad, BeatTTL); err != nil {
			t.Fatal(err)
		}
	}
	gone := func() []string {
		t.Helper()
		ids, err := a.Gone(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if ids := gone(); len(ids) != 0 {
		t.Fatalf("gone while all beat: %q", ids)
	}
	// b and c stop; a beats on; c is back after a restart of a few seconds.
	for elapsed := time.Duration(0); elapsed <= GoneAfter; elapsed += BeatEvery {
		bs.advance(BeatEvery)
		if _, err := bs.Beat(ctx, "a", "tcp:10.0.0.1:5060", BeatTTL); err != nil {
			t.Fatal(err)
		}
		if elapsed == 4*BeatEvery {
			if _, err := bs.Beat(ctx, "c", "tcp:10.0.0.3:5070", BeatTTL); err != nil {
				t.Fatal(err)
			}
		}
		if ids := gone(); elapsed < GoneAfter-BeatEvery && len(ids) != 0 {
			t.Fatalf("%v after b's last beat, gone: %q (GoneAfter %v)", elapsed+BeatEvery, ids, GoneAfter)
		}
	}
	if ids := gone(); !slices.Equal(ids, []string{"b"}) {
		t.Fatalf("gone: %q, want b only", ids)
	}
	if _, err := bs.Beat(ctx, "b", "tcp:10.0.0.2:5060", BeatTTL); err != nil {
		t.Fatal(err)
	}
	if ids := gone(); len(ids) != 0 {
		t.Fatalf("gone after b came back: %q", ids)
	}
	bs.err = errors.New("redis down")
	if _, err := a.Gone(ctx); !errors.Is(err, bs.err) {
		t.Fatalf("Gone with Redis down: %v", err)
	}
	if ids, err := New(Config{ID: "a"}).Gone(ctx); ids != nil || err != nil {
		t.Fatalf("without heartbeats: %q %v", ids, err)
	}
}

func TestReach(t *testing.T) {
	bs := newBeats()
	a := threeNodes(t, bs, nil)
	ctx := context.Background()
	_, _ = bs.Beat(ctx, "b", "tcp:10.0.0.2:5060", BeatTTL)
	_, _ = bs.Beat(ctx, "x", "tcp:10.0.0.9:5060", BeatTTL) // not in sip.nodes
	for _, tc := range []struct {
		id   string
		want Decision
		addr string
	}{
		{"a", Local, "tcp:10.0.0.1:5060"},
		{"b", Remote, "tcp:10.0.0.2:5060"},
		{"c", Down, ""}, // no heartbeat
		{"x", Down, ""}, // its address is no node's
	} {
		t.Run(tc.id, func(t *testing.T) {
			got, d := a.Reach(ctx, tc.id)
			if d != tc.want || (tc.addr != "" && got.String() != tc.addr) {
				t.Fatalf("Reach(%s) %v %v, want %v %s", tc.id, got, d, tc.want, tc.addr)
			}
		})
	}
}
