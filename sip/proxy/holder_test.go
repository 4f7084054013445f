package proxy

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/chain/chaintest"
	"github.com/sori-voice/sori/sip/local"
	"github.com/sori-voice/sori/sip/nodes"
	"github.com/sori-voice/sori/sip/siptest"
)

const service = "sip.sori.test"

// serviceProxy is node a of a service whose Record-Route is the service's
// name, with node b at 10.0.0.2:5060 as n says.
func serviceProxy(t *testing.T, n fakeNodes, s Sender, recordRoute string) *Proxy {
	t.Helper()
	if s == nil {
		s = sender{}
	}
	return New(Config{
		Self:   local.New("sori.test", "127.0.0.1:5060", "127.0.0.1:5061", service),
		Sender: s, Nodes: n, RecordRoute: recordRoute, Calls: &fencedCalls{},
		DialogSecret: []byte("one-secret-on-every-node"),
		Log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

// The Record-Route a node writes under the service's name names the node
// too, bound to the Call-ID: another node finds it, for that call only.
func TestHolderInRecordRoute(t *testing.T) {
	invite := func(t *testing.T) *sip.Request {
		req := chaintest.Request(t, chaintest.Raw("INVITE", "sip:bob@sori.test", "Contact: <sip:alice@192.168.1.20:5060>"))
		req.SetSource("203.0.113.5:40000")
		return req
	}
	for _, tc := range []struct {
		name        string
		recordRoute string
		nodes       bool
		id          string
		edge        string
		want        string // the node named; "": none
	}{
		{"the service's name, many nodes", service, true, "a", "", "a"},
		{"a longer id", service, true, "sori-a.dc1", "", "sori-a.dc1"},
		{"this node's own address: it names the node already", "", true, "a", "", ""},
		{"a single node", service, false, "a", "", ""},
		{"a flow token: the Record-Route names this node", service, true, "a", bobFlow, ""},
		{"an id no URI parameter can hold as it is", service, true, "a;b", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := serviceProxy(t, fakeNodes{id: tc.id}, nil, tc.recordRoute)
			if !tc.nodes {
				p.cfg.Nodes = nil
			}
			in := invite(t)
			out, err := p.prepare(in, target{uri: siptest.URI(t, "sip:bob@10.0.0.9:5062"), edge: tc.edge}, true, "l")
			if err != nil {
				t.Fatal(err)
			}
			rr := out.RecordRoute()
			if rr == nil {
				t.Fatal("no Record-Route")
			}
			// The phone's PRACK comes back with it as its Route.
			_, id, ok := p.holderOf(in, []sip.Uri{rr.Address})
			if tc.want == "" {
				if ok || rr.Address.UriParams.Has(holderParam) {
					t.Fatalf("Record-Route %s names node %q", rr.Value(), id)
				}
				return
			}
			if !ok || id != tc.want {
				t.Fatalf("Record-Route %s: node %q %v, want %q", rr.Value(), id, ok, tc.want)
			}
			other := chaintest.Request(t, strings.Replace(chaintest.Raw("PRACK", "sip:bob@10.0.0.9:5062"), "Call-ID: ", "Call-ID: other-", 1))
			if _, _, ok := p.holderOf(other, []sip.Uri{rr.Address}); ok {
				t.Fatal("the node token taken for another call")
			}
			forged := *rr.Address.Clone()
			v, _ := forged.UriParams.Get(holderParam)
			forged.UriParams.Add(holderParam, v[:holderMACLen+1]+"b")
			if _, id, ok := p.holderOf(in, []sip.Uri{forged}); ok {
				t.Fatalf("a token edited to name node b taken: %q", id)
			}
		})
	}
}

// An in-dialog request of a call this node does not hold, whose route
// names node a as the holder: sent on to a (its Route put back on top,
// its Request-URI's alias kept for a), answered 481 when a is down and
// it is a PRACK or UPDATE, handled here otherwise.
func TestToHolder(t *testing.T) {
	a := serviceProxy(t, fakeNodes{id: "a"}, nil, service)
	route := a.recordRoute("UDP", "127.0.0.3", 5060, a.dialogToken("test-call"), a.holderValue("test-call"), "")
	const ruri = "sip:bob@192.0.2.9:5062;alias=192.0.2.9~5062~1;as=seal"
	for _, tc := range []struct {
		name    string
		method  string
		sdp     bool
		reach   nodes.Decision
		id      string // the node handling it
		handled bool
		code    int
		sent    bool
	}{
		{"PRACK on node b, a up: sent on to a", "PRACK", true, nodes.Remote, "b", true, 0, true},
		{"UPDATE on node b, a up: sent on to a", "UPDATE", true, nodes.Remote, "b", true, 0, true},
		{"BYE on node b, a up: sent on to a", "BYE", false, nodes.Remote, "b", true, 0, true},
		{"PRACK on node b, a down: 481", "PRACK", true, nodes.Down, "b", true, 481, false},
		{"UPDATE on node b, a down: 481", "UPDATE", false, nodes.Down, "b", true, 481, false},
		{"BYE on node b, a down: goes on here", "BYE", false, nodes.Down, "b", false, 0, false},
		{"PRACK on node a itself: its own", "PRACK", true, nodes.Remote, "a", false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &failing{}
			b := serviceProxy(t, fakeNodes{id: tc.id, reach: map[string]nodes.Decision{"a": tc.reach}}, s, service)
			req := chaintest.Request(t, raw(tc.method, ruri, "Route: <"+route.Address.String()+">", "To: <sip:bob@sori.test>;tag=b"))
			if tc.sdp {
				req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
				req.SetBody([]byte("v=0\r\n"))
			}
			_, popped := b.popRoutes(req)
			rec := &chaintest.Recorder{}
			res, handled := b.toHolder(context.Background(), rec, &chain.Request{Request: req}, popped)
			if handled != tc.handled || res.Code != tc.code {
				t.Fatalf("handled %v, code %d; want %v, %d", handled, res.Code, tc.handled, tc.code)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if !tc.sent {
				if len(s.sent) != 0 {
					t.Fatalf("%d sent", len(s.sent))
				}
				return
			}
			if len(s.sent) != 1 {
				t.Fatalf("%d sent, want 1", len(s.sent))
			}
			// It could not be sent: a's node is unreachable.
			if rec.Responses == nil || rec.Responses[len(rec.Responses)-1].StatusCode != 503 || rec.Responses[len(rec.Responses)-1].GetHeader("Retry-After") == nil {
				t.Fatalf("responses %v, want 503 with Retry-After", rec.Responses)
			}
			out := s.sent[0]
			if out.Destination() != "10.0.0.2:5060" || out.Transport() != "TCP" || out.Recipient.String() != ruri {
				t.Fatalf("sent to %s over %s, R-URI %s", out.Destination(), out.Transport(), out.Recipient.String())
			}
			if r := out.Route(); r == nil || r.Address.String() != route.Address.String() {
				t.Fatalf("Route %v, want the one it came by, %s", out.Route(), route.Address.String())
			}
			if string(out.Body()) != string(req.Body()) {
				t.Fatalf("body changed: %q", out.Body())
			}
		})
	}
}

// A PRACK carrying SDP for a call this node does not hold, media
// anchored: the answer to an offer only the call's node anchored.
func TestUnanchoredAnswer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		sdp    bool
		media  bool
		want   bool
	}{
		{"PRACK with SDP, media anchored", "PRACK", true, true, true},
		{"PRACK without SDP", "PRACK", false, true, false},
		{"PRACK with SDP, no anchor", "PRACK", true, false, false},
		{"UPDATE with SDP: an offer, anchored anew", "UPDATE", true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestProxy(t, "")
			if tc.media {
				p.cfg.Media = &offers{}
			}
			req := chaintest.Request(t, chaintest.Raw(tc.method, "sip:bob@192.0.2.9:5062"))
			if tc.sdp {
				req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
				req.SetBody([]byte("v=0\r\n"))
			}
			if got := p.unanchoredAnswer(nil, req); got != tc.want {
				t.Fatalf("%v, want %v", got, tc.want)
			}
		})
	}
}

// The caller's request of a dialog whose callee's flow node b holds,
// sent to the service's name, reaches b with a's route (naming a as the
// holder) and then b's own flow route: both go back on top, so a sends
// it back to b, which sends it down the flow. Requests from another node
// (a sending it down the flow), ACKs and requests of no dialog of ours
// are the edge's, as before.
func TestEdgeToHolder(t *testing.T) {
	a := serviceProxy(t, fakeNodes{id: "a"}, nil, service)
	holder := a.recordRoute("UDP", "127.0.0.3", 5060, a.dialogToken("test-call"), a.holderValue("test-call"), "").Address
	flowRoute := "<sip:" + bobFlow + "@127.0.0.1:5061;transport=tcp;sd=" + a.dialogToken("test-call") + ";lr>"
	const ruri = "sip:bob@192.168.1.20:5060;transport=tcp"
	for _, tc := range []struct {
		name    string
		method  string
		source  string
		toTag   bool
		handled bool
	}{
		{"the caller's PRACK", "PRACK", "192.0.2.1:5060", true, true},
		{"the caller's BYE", "BYE", "192.0.2.1:5060", true, true},
		{"from node a, for the flow", "PRACK", "10.0.0.2:41000", true, false},
		{"an ACK", "ACK", "192.0.2.1:5060", true, false},
		{"no dialog", "INVITE", "192.0.2.1:5060", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &failing{}
			b := serviceProxy(t, fakeNodes{id: "b", reach: map[string]nodes.Decision{"a": nodes.Remote},
				flows: map[string]nodes.Flow{bobFlow: {Transport: "TCP", Addr: "198.51.100.7:40112"}}}, s, service)
			extra := []string{"Route: <" + holder.String() + ">", "Route: " + flowRoute}
			if tc.toTag {
				extra = append(extra, "To: <sip:bob@sori.test>;tag=b")
			}
			req := chaintest.Request(t, raw(tc.method, ruri, extra...))
			req.SetSource(tc.source)
			_, popped := b.popRoutes(req)
			if len(popped) != 2 {
				t.Fatalf("popped %v", popped)
			}
			_, handled := b.edgeToHolder(context.Background(), &chaintest.Recorder{}, &chain.Request{Request: req}, popped)
			if handled != tc.handled {
				t.Fatalf("handled %v, want %v", handled, tc.handled)
			}
			if !handled {
				return
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if len(s.sent) != 1 {
				t.Fatalf("%d sent", len(s.sent))
			}
			out := s.sent[0]
			routes := siptest.Values(out.GetHeaders("Route"))
			if out.Destination() != "10.0.0.2:5060" || len(routes) != 2 || routes[0] != "<"+holder.String()+">" || !strings.Contains(routes[1], bobFlow) {
				t.Fatalf("sent to %s with Route %q", out.Destination(), routes)
			}
		})
	}
}

// What a node sends on to the holder comes back to it, the same request
// on the callee's flow Route, as a spiral: Hops does not take it for a
// loop.
func TestToHolderIsNoLoop(t *testing.T) {
	a := serviceProxy(t, fakeNodes{id: "a"}, nil, service)
	holder := a.recordRoute("UDP", "127.0.0.3", 5060, a.dialogToken("test-call"), a.holderValue("test-call"), "").Address
	s := &failing{}
	b := serviceProxy(t, fakeNodes{id: "b", reach: map[string]nodes.Decision{"a": nodes.Remote}}, s, service)
	req := chaintest.Request(t, raw("PRACK", "sip:bob@192.0.2.9:5062", "Route: <"+holder.String()+">", "To: <sip:bob@sori.test>;tag=b"))
	_, popped := b.popRoutes(req)
	if _, handled := b.toHolder(context.Background(), &chaintest.Recorder{}, &chain.Request{Request: req}, popped); !handled {
		t.Fatal("not sent on")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	back := s.sent[0]
	removeRoutes(back) // a popped its own: back here on the flow's
	back.AppendHeader(&sip.RouteHeader{Address: siptest.URI(t, "sip:"+bobFlow+"@127.0.0.1:5061;transport=tcp;lr")})
	if (Hops{Self: b.cfg.Self}).looped(back) {
		t.Fatal("the request the holder sent back taken for a loop")
	}
	// Sent on without the mark, it would have been.
	out, err := b.prepare(req, target{uri: req.Recipient}, false, loopHash(req))
	if err != nil {
		t.Fatal(err)
	}
	if !(Hops{Self: b.cfg.Self}).looped(out) {
		t.Fatal("the test does not show a loop")
	}
}
