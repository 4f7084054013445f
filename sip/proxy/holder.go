package proxy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/nodes"
)

// A call still ringing lives on the node that took its INVITE alone: it
// is saved to the dialog store only once answered (sip/call). With
// sip.record_route a service name every node answers for, a request of
// its early dialog (the caller's PRACK with the answer to a reliable
// 18x's offer, an UPDATE) may reach any node, which has no state for
// it: relayed as it is, the PRACK would give the callee the caller's own
// SDP, past the anchor that took the 18x's offer. So the Record-Route a
// node writes under the service's name also names the node (holderParam:
// its sip.node_id, with a MAC over it and the Call-ID keyed from the
// dialog secret, so no phone can point it at another node), and a node
// that gets an in-dialog request of a call it does not hold (not in its
// table, not in the dialog store) sends it on to the node named there,
// as a proxy in between, the Route it came by put back on top: that node
// pops it again and handles the request as its own (the ng answer of the
// PRACK, the call's CSeq). A request of an answered call another node
// saved is loaded and handled where it lands, as before: the call's
// holder may be gone, which is what the service name is for. When the
// named node is down (no heartbeat), its early dialog went with it: a
// PRACK or UPDATE is answered 481, never relayed with its SDP not
// anchored; other requests (a BYE) go on as for any call not held. A
// named node that is up but does not answer (just killed, its heartbeat
// not yet expired) gets the request 503 with Retry-After.

const holderParam = "sn"

// holderRetryAfter is the Retry-After (seconds) of the 503 a request
// gets when the node holding its call does not answer: by then its
// heartbeat has expired, and the request gets 481 (its early dialog is
// gone) or goes on here.
const holderRetryAfter = "3"

// holderValue is what our Record-Route for the dialog callID carries in
// holderParam: "" unless the Record-Route names the service
// (sip.record_route) and this node is one of many (sip.nodes), with an
// id that can be written in a URI parameter.
func (p *Proxy) holderValue(callID string) string {
	if p.cfg.RecordRoute == "" || p.cfg.Nodes == nil {
		return ""
	}
	id := p.cfg.Nodes.ID()
	if !paramSafe(id) {
		return ""
	}
	return p.holderMAC(callID, id) + "." + id
}

func (p *Proxy) holderMAC(callID, id string) string {
	m := hmac.New(sha256.New, p.secret)
	m.Write([]byte("node\x00"))
	m.Write([]byte(callID))
	m.Write([]byte{0})
	m.Write([]byte(id))
	return strings.ToLower(b32.EncodeToString(m.Sum(nil)[:10]))
}

// holderMACLen is the length of holderMAC's value (10 bytes in base32).
const holderMACLen = 16

// holderOf is the node one of the routes req reached sori by (popped)
// names as its dialog's holder, with a valid MAC for req's Call-ID, and
// that route's index in popped.
func (p *Proxy) holderOf(req *sip.Request, popped []sip.Uri) (int, string, bool) {
	if req.CallID() == nil {
		return 0, "", false
	}
	for i, u := range popped {
		v, ok := u.UriParams.Get(holderParam)
		if !ok || len(v) <= holderMACLen+1 || v[holderMACLen] != '.' {
			continue
		}
		id := v[holderMACLen+1:]
		if hmac.Equal([]byte(v[:holderMACLen]), []byte(p.holderMAC(req.CallID().Value(), id))) {
			return i, id, true
		}
	}
	return 0, "", false
}

// edgeToHolder is toHolder for a request that reached this node by one
// of its flow tokens too, from a phone (not another node): the caller's
// request of a dialog whose callee's flow this node holds, sent to the
// service's name, lands here with the holder's route before the flow's.
// This node only relays such dialogs and looks no call up (loading one
// here would have two nodes keep it): the request goes to the holder
// whenever the holder is up, its early dialog or not.
func (p *Proxy) edgeToHolder(ctx context.Context, w chain.ResponseWriter, r *chain.Request, popped []sip.Uri) (chain.Result, bool) {
	req := r.Request
	if !req.To().Params.Has("tag") || req.IsAck() || req.IsCancel() || p.fromNode(req) || !p.ourDialog(req, popped) {
		return chain.Done, false
	}
	return p.toHolder(ctx, w, r, popped)
}

// toHolder sends an in-dialog request of a call this node does not hold
// to the node its Record-Route names (see above); handled false: that is
// this node, none is named, or it is down and the request is not a
// PRACK or UPDATE, and the request goes on here.
func (p *Proxy) toHolder(ctx context.Context, w chain.ResponseWriter, r *chain.Request, popped []sip.Uri) (res chain.Result, handled bool) {
	req := r.Request
	if p.cfg.Nodes == nil {
		return chain.Done, false
	}
	i, id, ok := p.holderOf(req, popped)
	if !ok {
		return chain.Done, false
	}
	a, d := p.cfg.Nodes.Reach(ctx, id)
	switch d {
	case nodes.Local:
		return chain.Done, false
	case nodes.Down:
		if req.Method != sip.PRACK && req.Method != sip.UPDATE {
			return chain.Done, false
		}
		p.log.Info("early-dialog request refused: the node holding the call is down", "method", string(req.Method),
			"call_id", req.CallID().Value(), "node", id)
		return chain.Refuse(481, "Call/Transaction Does Not Exist"), true
	}
	p.log.Debug("in-dialog request sent on to the node holding the call", "method", string(req.Method),
		"call_id", req.CallID().Value(), "node", id, "address", a.String())
	// The routes from the holder's on go back on top: the holder pops its
	// own, and the rest (a flow token of this node's, for the callee's
	// flow) bring the request back here from it, as any other node's.
	path := make([]string, 0, len(popped)-i)
	for _, u := range popped[i:] {
		path = append(path, "<"+u.String()+">")
	}
	t := target{uri: req.Recipient, dest: a.Addr.String(), transport: a.Transport, path: path, holder: true}
	f := newFork(p, req, w, nil, r.Caller, [][]target{{t}}, false)
	f.holder = true
	// A spiral, not a loop: the holder sends the same request (same
	// Request-URI, Call-ID and CSeq) back here when this node holds the
	// callee's flow, on the flow's Route; our Via must not read as this
	// very request's (Hops).
	f.loop += "h"
	f.run(ctx)
	return chain.Done, true
}

// unanchoredAnswer reports whether req is a PRACK carrying SDP for a
// call this node does not hold (c nil) while media is anchored: the
// answer to an offer this node never saw, which the anchor cannot take
// (a reliable 18x's offer is anchored on the node that relayed it).
func (p *Proxy) unanchoredAnswer(c *call.Call, req *sip.Request) bool {
	return c == nil && p.cfg.Media != nil && req.Method == sip.PRACK && sdpBody(req) != nil
}

// paramSafe reports whether s can be written as a URI parameter's value
// as it is: letters, digits and "-_.~" (RFC 3261 §25.1 unreserved, the
// marks sipgo and other parsers take anywhere).
func paramSafe(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-_.~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
