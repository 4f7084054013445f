package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/nodes"
)

// Nodes is the other sori nodes of the service (sip/nodes).
type Nodes interface {
	// Route decides how binding b is reached from this node: here, through
	// the node holding its flow (at the Route returned), or not at all.
	Route(ctx context.Context, b store.Binding) (sip.Uri, nodes.Decision)
	// Flow is the flow of this node's a Route it was reached by names.
	Flow(u sip.Uri) (nodes.Flow, bool)
	// Open reports whether a flow of this node's is still open.
	Open(f nodes.Flow) bool
	// Trusted reports whether m came from another node: from a node's
	// address, vouched for (its TLS certificate or its signature).
	Trusted(m sip.Message) bool
	// IsNode reports whether u names another node.
	IsNode(u sip.Uri) bool
	// ID is this node's sip.node_id.
	ID() string
	// Reach is where node id is reached from here (Local: this node;
	// Down: no heartbeat, or unknown).
	Reach(ctx context.Context, id string) (nodes.Address, nodes.Decision)
}

// reach is the target of binding b, through the node holding its flow
// when that is another node; skip: that node is down.
func (p *Proxy) reach(ctx context.Context, b store.Binding) (t target, skip bool, err error) {
	t, err = bindingTarget(b)
	if err != nil || p.cfg.Nodes == nil {
		return t, false, err
	}
	route, d := p.cfg.Nodes.Route(ctx, b)
	switch d {
	case nodes.Down:
		return t, true, nil
	case nodes.Remote:
		// The holder sends it down the flow; from here it goes to the
		// holder, as through an edge proxy in the binding's Path.
		t.dest, t.transport, t.flow = "", "", false
		t.path = []string{"<" + route.String() + ">"}
	}
	return t, false, nil
}

// fromNode reports whether m came from another node: what it wrote for
// its own side (the NAT alias in a Contact) stays.
func (p *Proxy) fromNode(m sip.Message) bool {
	return p.cfg.Nodes != nil && p.cfg.Nodes.Trusted(m)
}

// towardNode reports whether req goes on along a Route to another node:
// the alias in its Request-URI is that node's to follow, not ours.
func (p *Proxy) towardNode(req *sip.Request) bool {
	r := req.Route()
	return p.cfg.Nodes != nil && r != nil && p.cfg.Nodes.IsNode(r.Address)
}

// edgeFlow is the flow of this node's named by a Route it was reached by
// (popped), and that Route's token.
func (p *Proxy) edgeFlow(popped []sip.Uri) (nodes.Flow, string, bool) {
	if p.cfg.Nodes == nil {
		return nodes.Flow{}, "", false
	}
	for _, u := range popped {
		if f, ok := p.cfg.Nodes.Flow(u); ok {
			return f, u.User, true
		}
	}
	return nodes.Flow{}, "", false
}

// edge relays a request that reached this node by one of its flow tokens
// (RFC 5626 §5.3): from another node, it goes down the flow; from the
// flow itself (the phone, in a dialog another node set up), it goes on
// along its Route to that node. This node only relays: the call, its
// media and its record are the other node's.
func (p *Proxy) edge(ctx context.Context, w chain.ResponseWriter, r *chain.Request, fl nodes.Flow, token string) chain.Result {
	req := r.Request
	fromFlow := req.Source() == fl.Addr && strings.EqualFold(req.Transport(), fl.Transport)
	var t target
	switch {
	case fromFlow:
		// The phone may only go back to a node, inside a dialog: the
		// node there checks the dialog as its own.
		if rt := req.Route(); rt == nil || !p.cfg.Nodes.IsNode(rt.Address) || !req.To().Params.Has("tag") && !req.IsAck() {
			return chain.Refuse(403, "Forbidden: Not The Dialog's Target")
		}
		t = target{uri: req.Recipient}
	case p.fromNode(req):
		if !req.IsAck() && !p.cfg.Nodes.Open(fl) { // an ACK gets no answer: edgeAck drops it
			// The phone's connection closed: the calling node tries its
			// other flows (RFC 5626 §5.3).
			return chain.Refuse(430, "Flow Failed")
		}
		t = target{uri: req.Recipient, dest: fl.Addr, transport: fl.Transport, flow: fl.Transport != "UDP", edge: token}
	default:
		p.log.Info("request with a flow token refused: not from a node", "method", string(req.Method), "source", req.Source())
		return chain.Refuse(403, "Forbidden: Not From A Node")
	}
	if req.IsAck() {
		if err := p.edgeAck(req, t); err != nil {
			p.log.Debug("ACK not relayed", "call_id", req.CallID().Value(), "error", err)
		}
		return chain.Done
	}
	if req.IsCancel() {
		return chain.Refuse(481, "Call/Transaction Does Not Exist") // a matching one was taken by the transaction layer
	}
	initial := !req.To().Params.Has("tag")
	f := newFork(p, req, w, nil, r.Caller, [][]target{{t}}, initial && dialogCreating(req))
	f.run(ctx)
	return chain.Done
}

// edgeAck relays an ACK for a 2xx statelessly, never opening a phone's
// connection again.
func (p *Proxy) edgeAck(req *sip.Request, t target) error {
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return errors.New("max-forwards is 0")
	}
	if t.dest != "" && !p.cfg.Nodes.Open(nodes.Flow{Transport: t.transport, Addr: t.dest}) {
		return fmt.Errorf("flow %s:%s closed", t.transport, t.dest)
	}
	out, err := p.prepare(req, t, false, "")
	if err != nil {
		return err
	}
	return p.cfg.Sender.Write(out)
}
