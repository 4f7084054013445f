package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/chain/chaintest"
	"github.com/sori-voice/sori/sip/local"
	"github.com/sori-voice/sori/sip/nodes"
	"github.com/sori-voice/sori/sip/siptest"
)

// fakeNodes is this node (127.0.0.1) with another one at 10.0.0.2:5060.
type fakeNodes struct {
	decision nodes.Decision
	route    sip.Uri
	flows    map[string]nodes.Flow // by token
	open     bool
	id       string                    // this node's id ("": "a")
	reach    map[string]nodes.Decision // by node id; b is at tcp:10.0.0.2:5060
}

func (f fakeNodes) Route(context.Context, store.Binding) (sip.Uri, nodes.Decision) {
	return f.route, f.decision
}
func (f fakeNodes) Flow(u sip.Uri) (nodes.Flow, bool) { fl, ok := f.flows[u.User]; return fl, ok }
func (f fakeNodes) Open(nodes.Flow) bool              { return f.open }
func (f fakeNodes) Trusted(m sip.Message) bool        { return strings.HasPrefix(m.Source(), "10.0.0.2:") }
func (f fakeNodes) ID() string {
	if f.id == "" {
		return "a"
	}
	return f.id
}
func (f fakeNodes) Reach(_ context.Context, id string) (nodes.Address, nodes.Decision) {
	if id == f.ID() {
		return nodes.Address{}, nodes.Local
	}
	d, ok := f.reach[id]
	if !ok || d != nodes.Remote {
		return nodes.Address{}, nodes.Down
	}
	a, _ := nodes.ParseAddress("tcp:10.0.0.2:5060")
	return a, nodes.Remote
}
func (f fakeNodes) IsNode(u sip.Uri) bool {
	return u.Host == "10.0.0.2" && (u.Port == 5060 || u.Port == 0)
}

// writes is a sender that keeps what is written without a transaction.
type writes struct {
	sender
	out []*sip.Request
}

func (w *writes) Write(r *sip.Request) error { w.out = append(w.out, r); return nil }

func nodesProxy(t *testing.T, n fakeNodes, s Sender) *Proxy {
	t.Helper()
	if s == nil {
		s = sender{}
	}
	return New(Config{
		Self:   local.New("sori.test", "127.0.0.1:5060", "127.0.0.1:5061"),
		Sender: s, Nodes: n,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

const bobFlow = "f1bobsflow"

// raw is chaintest.Raw whose To is replaced by an extra To line.
func raw(method, ruri string, extra ...string) string {
	r := chaintest.Raw(method, ruri, extra...)
	for _, e := range extra {
		if strings.HasPrefix(e, "To:") {
			r = strings.Replace(r, "To: <sip:bob@sori.test>\n", "", 1)
		}
	}
	return r
}

func TestReachThroughTheHoldingNode(t *testing.T) {
	route := siptest.URI(t, "sip:"+bobFlow+"@10.0.0.2:5060;transport=tcp;lr;ob")
	b := store.Binding{Contact: "sip:bob@192.168.1.20:5060;transport=tcp", NAT: true, Transport: "tcp", Source: "198.51.100.7:40112", Node: "b", Flow: bobFlow}
	for _, c := range []struct {
		name     string
		decision nodes.Decision
		skip     bool
		dest     string
		path     []string
	}{
		{"held here: its connection", nodes.Local, false, "198.51.100.7:40112", nil},
		{"held by node b: through b", nodes.Remote, false, "", []string{"<" + route.String() + ">"}},
		{"node b down: skipped", nodes.Down, true, "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := nodesProxy(t, fakeNodes{decision: c.decision, route: route}, nil)
			got, skip, err := p.reach(context.Background(), b)
			if err != nil || skip != c.skip {
				t.Fatalf("skip %v, err %v", skip, err)
			}
			if skip {
				return
			}
			if got.dest != c.dest || strings.Join(got.path, ",") != strings.Join(c.path, ",") || got.flow != (c.dest != "") || got.uri.String() != b.Contact {
				t.Fatalf("target %+v", got)
			}
		})
	}
	t.Run("then sent to b with the token in a Route", func(t *testing.T) {
		p := nodesProxy(t, fakeNodes{decision: nodes.Remote, route: route}, nil)
		tg, _, _ := p.reach(context.Background(), b)
		in := chaintest.Request(t, raw("INVITE", "sip:bob@sori.test", "Contact: <sip:alice@192.168.1.30:5060>"))
		in.SetSource("203.0.113.5:40000")
		out, err := p.prepare(in, tg, true, "l")
		if err != nil {
			t.Fatal(err)
		}
		if r := out.Route(); r == nil || r.Address.User != bobFlow || out.Destination() != "10.0.0.2:5060" || out.Transport() != "TCP" ||
			out.Recipient.String() != b.Contact {
			t.Fatalf("Route %v, to %s over %s, R-URI %s", out.Route(), out.Destination(), out.Transport(), out.Recipient.String())
		}
		if c := out.Contact(); !strings.Contains(c.Value(), "alias=203.0.113.5~40000~1") {
			t.Fatalf("the caller's Contact %s: this node marks its own phone's", c.Value())
		}
	})
}

func TestPrepareAcrossNodes(t *testing.T) {
	flow := nodes.Flow{Transport: "TCP", Addr: "198.51.100.7:40112"}
	t.Run("in a dialog, a request going on to another node keeps the alias for it", func(t *testing.T) {
		p := nodesProxy(t, fakeNodes{}, nil)
		in := chaintest.Request(t, raw("BYE", "sip:bob@192.168.1.20:5060;alias=198.51.100.7~40112~2;as=seal",
			"Route: <sip:"+bobFlow+"@10.0.0.2:5060;transport=tcp;lr>", "To: <sip:bob@sori.test>;tag=b"))
		out, err := p.prepare(in, target{uri: in.Recipient}, false, "l")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.Recipient.String(), "alias=198.51.100.7~40112~2") || out.Destination() != "10.0.0.2:5060" || out.Transport() != "TCP" {
			t.Fatalf("R-URI %s, to %s over %s", out.Recipient.String(), out.Destination(), out.Transport())
		}
	})
	t.Run("toward a proxy that is not a node, the alias is followed as before", func(t *testing.T) {
		p := nodesProxy(t, fakeNodes{}, nil)
		in := chaintest.Request(t, raw("BYE", "sip:bob@192.168.1.20:5060;alias=198.51.100.7~40112~2", "Route: <sip:edge.example;lr>"))
		out, err := p.prepare(in, target{uri: in.Recipient}, false, "l")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.Recipient.String(), "alias") || out.Destination() != "198.51.100.7:40112" {
			t.Fatalf("R-URI %s, to %s", out.Recipient.String(), out.Destination())
		}
	})
	t.Run("down a flow for another node: token in our Record-Route, the caller's Contact left as that node marked it", func(t *testing.T) {
		p := nodesProxy(t, fakeNodes{}, nil)
		in := chaintest.Request(t, raw("INVITE", "sip:bob@192.168.1.20:5060;transport=tcp",
			"Contact: <sip:alice@192.168.1.30:5060;alias=203.0.113.5~40000~1;as=seal>"))
		in.SetSource("10.0.0.2:41000")
		in.SetTransport("TCP")
		out, err := p.prepare(in, target{uri: in.Recipient, dest: flow.Addr, transport: flow.Transport, flow: true, edge: bobFlow}, true, "l")
		if err != nil {
			t.Fatal(err)
		}
		rr := out.RecordRoute()
		if rr == nil || rr.Address.User != bobFlow || len(out.GetHeaders("Record-Route")) != 1 || out.Destination() != flow.Addr {
			t.Fatalf("Record-Route %v, to %s", siptest.Values(out.GetHeaders("Record-Route")), out.Destination())
		}
		if c := out.Contact().Value(); !strings.Contains(c, "alias=203.0.113.5~40000~1;as=seal") {
			t.Fatalf("Contact %s: the other node's alias replaced", c)
		}
	})
}

func TestEdge(t *testing.T) {
	flow := nodes.Flow{Transport: "TCP", Addr: "198.51.100.7:40112"}
	fromNode := func(r *sip.Request) *sip.Request { r.SetSource("10.0.0.2:41000"); r.SetTransport("TCP"); return r }
	fromFlow := func(r *sip.Request) *sip.Request { r.SetSource(flow.Addr); r.SetTransport("TCP"); return r }
	ruri := "sip:bob@192.168.1.20:5060;transport=tcp"
	toNode := "Route: <sip:10.0.0.2:5060;transport=tcp;sd=x;lr>"
	inDialog := "To: <sip:bob@sori.test>;tag=b"
	for _, c := range []struct {
		name string
		req  *sip.Request
		open bool
		code int
	}{
		{"from a phone that is not the flow", chaintest.Request(t, raw("INVITE", ruri)), true, 403},
		{"from a node, the flow closed: 430", fromNode(chaintest.Request(t, raw("INVITE", ruri))), false, 430},
		{"from the flow, going nowhere", fromFlow(chaintest.Request(t, raw("BYE", ruri, inDialog))), true, 403},
		{"from the flow, to a proxy that is not a node", fromFlow(chaintest.Request(t, raw("BYE", ruri, inDialog, "Route: <sip:203.0.113.9;lr>"))), true, 403},
		{"from the flow, outside a dialog", fromFlow(chaintest.Request(t, raw("INVITE", ruri, toNode))), true, 403},
		{"a CANCEL matching nothing", fromNode(chaintest.Request(t, raw("CANCEL", ruri))), true, 481},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := nodesProxy(t, fakeNodes{open: c.open}, nil)
			res := p.edge(context.Background(), &chaintest.Recorder{}, &chain.Request{Request: c.req}, flow, bobFlow)
			if res.Code != c.code {
				t.Fatalf("got %d %s, want %d", res.Code, res.Reason, c.code)
			}
		})
	}
	t.Run("an ACK from a node goes down the flow, its alias gone", func(t *testing.T) {
		w := &writes{}
		p := nodesProxy(t, fakeNodes{open: true}, w)
		ack := fromNode(chaintest.Request(t, raw("ACK", ruri+";alias=198.51.100.7~40112~2;as=seal", inDialog)))
		if res := p.edge(context.Background(), &chaintest.Recorder{}, &chain.Request{Request: ack}, flow, bobFlow); res.Code != 0 || len(w.out) != 1 {
			t.Fatalf("result %d, %d written", res.Code, len(w.out))
		}
		if out := w.out[0]; out.Destination() != flow.Addr || out.Transport() != "TCP" || out.Recipient.String() != ruri {
			t.Fatalf("ACK to %s over %s, R-URI %s", out.Destination(), out.Transport(), out.Recipient.String())
		}
	})
	t.Run("an ACK for a closed flow is dropped", func(t *testing.T) {
		w := &writes{}
		p := nodesProxy(t, fakeNodes{open: false}, w)
		ack := fromNode(chaintest.Request(t, raw("ACK", ruri, inDialog)))
		if res := p.edge(context.Background(), &chaintest.Recorder{}, &chain.Request{Request: ack}, flow, bobFlow); res.Code != 0 || len(w.out) != 0 {
			t.Fatalf("result %d, %d written", res.Code, len(w.out))
		}
	})
	t.Run("a popped Route with this node's token is an edge request", func(t *testing.T) {
		p := nodesProxy(t, fakeNodes{flows: map[string]nodes.Flow{bobFlow: flow}}, nil)
		req := chaintest.Request(t, raw("INVITE", ruri, "Route: <sip:"+bobFlow+"@127.0.0.1:5061;transport=tcp;lr;ob>"))
		_, popped := p.popRoutes(req)
		if f, tok, ok := p.edgeFlow(popped); !ok || f != flow || tok != bobFlow {
			t.Fatalf("edgeFlow %+v %q %v", f, tok, ok)
		}
		other := chaintest.Request(t, raw("INVITE", ruri, "Route: <sip:127.0.0.1:5061;transport=tcp;lr>"))
		_, popped = p.popRoutes(other)
		if _, _, ok := p.edgeFlow(popped); ok {
			t.Fatal("a Route without a token taken for a flow")
		}
	})
}

// A browser is known from its binding, not from the next hop: one whose
// WSS flow node b holds is reached from here over the node link (TCP),
// and still offered WebRTC by this node, the call's anchor.
func TestBrowserOnAnotherNodeIsOfferedWebRTC(t *testing.T) {
	route := siptest.URI(t, "sip:"+bobFlow+"@10.0.0.2:5060;transport=tcp;lr;ob")
	policy := func(user, trunk string) string { return "rtp" }
	for _, c := range []struct {
		name     string
		b        store.Binding
		decision nodes.Decision
		want     string
	}{
		{"registered over WSS on node b", store.Binding{Contact: "sip:x7@df7jal23ls0d.invalid;transport=ws", NAT: true, Transport: "wss", Source: "198.51.100.7:40112", Node: "b", Flow: bobFlow}, nodes.Remote, "webrtc"},
		{"registered over WS on node b", store.Binding{Contact: "sip:x7@df7jal23ls0d.invalid", NAT: true, Transport: "ws", Source: "198.51.100.7:40112", Node: "b", Flow: bobFlow}, nodes.Remote, "webrtc"},
		{"a ws Contact through an edge proxy", store.Binding{Contact: "sip:x7@df7jal23ls0d.invalid;transport=ws", Transport: "udp", Source: "192.0.2.9:5060", Path: []string{"<sip:192.0.2.9;lr>"}}, nodes.Local, "webrtc"},
		{"registered over WSS here", store.Binding{Contact: "sip:x7@df7jal23ls0d.invalid;transport=ws", NAT: true, Transport: "wss", Source: "198.51.100.7:40112"}, nodes.Local, "webrtc"},
		{"a phone over TLS on node b", store.Binding{Contact: "sip:bob@192.168.1.20:5061;transport=tls", NAT: true, Transport: "tls", Source: "198.51.100.7:40112", Node: "b", Flow: bobFlow}, nodes.Remote, "rtp"},
		{"a phone over UDP here", store.Binding{Contact: "sip:bob@192.168.1.20:5060", Transport: "udp", Source: "192.168.1.20:5060"}, nodes.Local, "rtp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := nodesProxy(t, fakeNodes{decision: c.decision, route: route}, nil)
			p.cfg.Encryption = policy
			tg, skip, err := p.reach(context.Background(), c.b)
			if err != nil || skip {
				t.Fatalf("skip %v, err %v", skip, err)
			}
			if c.decision == nodes.Remote && (tg.transport != "" || len(tg.path) != 1) {
				t.Fatalf("not through node b: %+v", tg)
			}
			if got := p.targetEncryption(tg); got != c.want {
				t.Fatalf("offered %q, want %q", got, c.want)
			}
		})
	}
}

// failing is a sender whose requests are never sent: the branch settles
// with 480.
type failing struct {
	sender
	mu   sync.Mutex
	sent []*sip.Request
}

func (f *failing) Request(_ context.Context, r *sip.Request) (sip.ClientTransaction, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, r)
	return nil, errors.New("not sent")
}

// The node holding a browser's flow only relays the INVITE another node
// anchored: its WebRTC offer goes down the flow as it came, never
// anchored a second time.
func TestEdgeDoesNotAnchorAgain(t *testing.T) {
	flow := nodes.Flow{Transport: "WSS", Addr: "198.51.100.7:40112"}
	const offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 30000 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:abcd\r\n"
	s := &failing{}
	p := nodesProxy(t, fakeNodes{open: true}, s)
	media := &offers{done: make(chan struct{})}
	p.cfg.Media = media
	p.cfg.Encryption = func(user, trunk string) string { return "rtp" }
	req := chaintest.Request(t, raw("INVITE", "sip:x7@df7jal23ls0d.invalid;transport=ws", "Content-Type: application/sdp"))
	req.SetBody([]byte(offer))
	req.SetSource("10.0.0.2:41000")
	req.SetTransport("TCP")
	p.edge(context.Background(), &chaintest.Recorder{}, &chain.Request{Request: req}, flow, bobFlow)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sent) != 1 || string(s.sent[0].Body()) != offer || s.sent[0].Destination() != flow.Addr {
		t.Fatalf("sent %d requests", len(s.sent))
	}
	media.mu.Lock()
	defer media.mu.Unlock()
	if len(media.offered) != 0 {
		t.Fatalf("anchored again: %v", media.offered)
	}
}

func (f *failing) SentBy(transport string) (string, int, error) {
	if strings.EqualFold(transport, "WSS") {
		return "127.0.0.1", 8443, nil
	}
	return f.sender.SentBy(transport)
}

// A re-INVITE toward a browser says WebRTC again: one whose flow node b
// holds is known by its Contact's ws/wss, its transport being the node
// link's.
func TestBrowserSide(t *testing.T) {
	for _, c := range []struct {
		s    call.Side
		want bool
	}{
		{call.Side{Target: "sip:x7@df7jal23ls0d.invalid;transport=ws", Transport: "WSS"}, true},
		{call.Side{Target: "sip:x7@df7jal23ls0d.invalid;transport=ws", Transport: "TCP"}, true},
		{call.Side{Target: "sip:x7@df7jal23ls0d.invalid;transport=wss", Transport: "TLS"}, true},
		{call.Side{Target: "sip:bob@192.168.1.20:5060;transport=tcp", Transport: "TCP"}, false},
		{call.Side{Target: "sip:bob@192.168.1.20:5060", Transport: "UDP"}, false},
	} {
		if got := browserSide(c.s); got != c.want {
			t.Errorf("%+v: %v, want %v", c.s, got, c.want)
		}
	}
}
