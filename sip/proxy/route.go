package proxy

import (
	"encoding/base32"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/alias"
	"github.com/sori-voice/sori/sip/anchoring"
	"github.com/sori-voice/sori/sip/nexthop"
	"github.com/sori-voice/sori/sip/trunks"
	"github.com/sori-voice/sori/sip/uac"
)

// target is one place a request is forwarded to.
type target struct {
	uri       sip.Uri  // new Request-URI
	dest      string   // ip:port to send to; empty: the next hop's host and port
	transport string   // "UDP" or "TCP"; empty: from the next hop URI
	path      []string // Path from the registration, becomes Route (RFC 3327)
	// flow: dest is the connection the phone registered on (TCP, TLS, WS):
	// it is used while open, never dialled again.
	flow bool
	// instance is the device's +sip.instance (RFC 5626), updated when its
	// binding was last refreshed: one request goes to one flow of a device.
	instance string
	updated  time.Time
	// fallback: another flow of a device whose newer flow was tried first;
	// its group is tried only when that flow failed (no answer, 430, 480
	// from a closed connection), never after the device's own answer.
	fallback bool
	q        int             // thousandths; -1: none given
	pai      string          // P-Asserted-Identity to send (to a carrier); empty: none
	trunk    string          // the carrier trunk this target belongs to
	user     string          // the user whose binding this is
	gateway  *trunks.Gateway // the carrier gateway it is
	// push: a binding of a sleeping app, reached by waking it (RFC 8599)
	// and then at the binding it registers; aor is whose it is.
	push *store.Binding
	aor  string
	// edge: the flow token of this node's the target is reached by, for
	// a request from another node (nodes.go); it goes in our Record-Route.
	edge string
	// holder: the node holding the dialog's call, reached at dest
	// (holder.go): the Request-URI keeps the alias that node wrote.
	holder bool
	// browser: the binding was registered over WebSocket, or its Contact
	// names ws/wss (RFC 7118): a browser, offered WebRTC however it is
	// reached from here (through the node holding its flow, over UDP,
	// TCP or TLS; through an edge proxy in its Path).
	browser bool
}

// bindingTarget reaches a registered contact. One the registrar found
// behind NAT is reached at the address its REGISTER came from, over the same
// transport (for TCP, the same connection while it is open); any other at its
// Contact URI, or through its Path (RFC 3327).
func bindingTarget(b store.Binding) (target, error) {
	var u sip.Uri
	if err := sip.ParseUri(b.Contact, &u); err != nil {
		return target{}, fmt.Errorf("contact %q: %w", b.Contact, err)
	}
	for _, pn := range []string{"pn-provider", "pn-prid", "pn-param", "pn-purr"} {
		// The device token wakes the phone: it is not for the far end
		// (RFC 8599 §5.6), and the phone knows it.
		u.UriParams.Remove(pn)
	}
	t := target{uri: u, path: b.Path, q: b.Q, instance: b.Instance, updated: b.Updated,
		browser: anchoring.WebSocket(b.Transport) || anchoring.WebSocket(u.UriParams.GetOr("transport", ""))}
	if b.PushProvider != "" {
		pb := b
		t.push = &pb
	}
	if b.NAT && len(b.Path) == 0 {
		// Where the REGISTER came from: the NAT's mapping, or the
		// phone's own TCP connection (the transport reuses it while it is open).
		t.dest, t.transport = b.Source, strings.ToUpper(b.Transport)
		if t.transport == "" {
			t.transport = "UDP"
		}
		t.flow = t.transport != "UDP"
	}
	return t, nil
}

// secureOnly keeps the targets reached over TLS or WSS: the phone's own
// connection on a secure listener, a sips: contact, or one whose
// transport parameter names TLS.
func secureOnly(ts []target) []target {
	out := ts[:0:0]
	for _, t := range ts {
		tr := t.transport
		if tr == "" && len(t.path) == 0 {
			tr = nexthop.Transport(t.uri)
		}
		if tr == "TLS" || tr == "WSS" {
			out = append(out, t)
		}
	}
	return out
}

// forkGroups orders a user's targets: by q (groupByQ), with one flow per
// device (RFC 5626 §5.3: a request goes to one flow of an instance, its
// most recent); a device's other flows follow, newest first, each a group
// of its own tried only when the flow before it failed.
func forkGroups(ts []target) [][]target {
	newest := map[string]int{} // instance -> index of its newest flow
	for i, t := range ts {
		if t.instance == "" {
			continue
		}
		if j, ok := newest[t.instance]; !ok || t.updated.After(ts[j].updated) {
			newest[t.instance] = i
		}
	}
	var first, rest []target
	for i, t := range ts {
		if j, ok := newest[t.instance]; t.instance == "" || ok && j == i {
			first = append(first, t)
		} else {
			t.fallback = true
			rest = append(rest, t)
		}
	}
	groups := groupByQ(first)
	slices.SortStableFunc(rest, func(a, b target) int { return b.updated.Compare(a.updated) })
	for _, t := range rest {
		groups = append(groups, []target{t})
	}
	return groups
}

// groupByQ orders targets for forking (RFC 3261 §16.6): contacts with the
// same q are tried in parallel, groups from the highest q down, one group
// after another fails. No q counts as 1.0.
func groupByQ(ts []target) [][]target {
	q := func(t target) int {
		if t.q < 0 {
			return 1000
		}
		return t.q
	}
	slices.SortStableFunc(ts, func(a, b target) int {
		switch {
		case q(a) > q(b):
			return -1
		case q(a) < q(b):
			return 1
		}
		return 0
	})
	// Each group is a slice of ts, capped so that an append copies: the
	// groups' own copies were 1.5 % of sori's allocations at 600 anchored
	// calls/s (pprof allocs). BenchmarkForkGroups (one registration): 3 →
	// 2 allocations, 792 → 408 B (a target is 384 B).
	var groups [][]target
	start := 0
	for i := 1; i <= len(ts); i++ {
		if i == len(ts) || q(ts[i]) != q(ts[i-1]) {
			groups = append(groups, ts[start:i:i])
			start = i
		}
	}
	return groups
}

// ours reports whether u names this proxy (a Route or Record-Route we
// wrote, or the Request-URI of a request for one of our users).
func (p *Proxy) ours(u sip.Uri) bool { return p.cfg.Self.IsLocalURI(u) }

// popRoutes applies RFC 3261 §16.4: a Request-URI that is our own
// Record-Route (the previous hop is a strict router) is replaced by the last
// Route; then every Route naming us on top is removed. It reports whether
// the request was routed to us by a route set, and returns our entries it
// removed (their dialog tokens tell whether the dialog is ours).
func (p *Proxy) popRoutes(req *sip.Request) (bool, []sip.Uri) {
	routed := false
	var popped []sip.Uri
	if req.Route() != nil && req.Recipient.User == "" && req.Recipient.UriParams.Has("lr") && p.ours(req.Recipient) {
		popped = append(popped, *req.Recipient.Clone())
		routes := routeHeaders(req)
		last := routes[len(routes)-1]
		req.Recipient = *last.Address.Clone()
		removeRoutes(req)
		for _, r := range routes[:len(routes)-1] {
			req.AppendHeader(r)
		}
		routed = true
	}
	for {
		r := req.Route()
		if r == nil || !p.ours(r.Address) {
			return routed, popped
		}
		popped = append(popped, r.Address)
		req.RemoveHeader("Route")
		routed = true
	}
}

func routeHeaders(req *sip.Request) []*sip.RouteHeader {
	var out []*sip.RouteHeader
	for _, h := range req.Headers() {
		if r, ok := h.(*sip.RouteHeader); ok {
			out = append(out, r)
		}
	}
	return out
}

// forwardCopy is in.Clone() for prepare, sharing what prepare and the
// layers below never write: header values other than Via and Contact
// (prepare adds received/rport to the top Via and an alias to the
// Contact), and the body (replaced, never written into, when the anchor
// rewrites the SDP). The header list is the copy's own, so headers are
// added and removed on it alone. sipgo's Clone parses nothing again but
// copies every header and the body: the copies were 6 % of sori's
// allocated bytes at 1000 anchored calls/s (pprof allocs), with the
// relayed responses' (relayCopy) 8 %; BenchmarkForwardCopy.
func forwardCopy(in *sip.Request) *sip.Request {
	out := sip.NewRequest(in.Method, in.Recipient) // it copies the URI's parameters
	out.SipVersion = in.SipVersion
	for _, h := range in.Headers() {
		out.AppendHeader(ownHeader(h))
	}
	out.SetBody(in.Body())
	out.SetTransport(in.Transport())
	out.SetSource(in.Source())
	out.SetDestination(in.Destination())
	out.Laddr = in.Laddr
	return out
}

// relayCopy is res.Clone() for relay, sharing what forwardCopy shares.
func relayCopy(res *sip.Response) *sip.Response {
	up := sip.NewResponse(res.StatusCode, res.Reason)
	up.SipVersion = res.SipVersion
	for _, h := range res.Headers() {
		up.AppendHeader(ownHeader(h))
	}
	up.SetBody(res.Body())
	up.SetTransport(res.Transport())
	up.SetSource(res.Source())
	up.SetDestination(res.Destination())
	return up
}

// ownHeader is h, or a copy of it when the copy's header is written to.
func ownHeader(h sip.Header) sip.Header {
	switch h.(type) {
	case *sip.ViaHeader, *sip.ContactHeader:
		return sip.HeaderClone(h)
	}
	return h
}

func removeRoutes(req *sip.Request) {
	for req.RemoveHeader("Route") {
	}
}

// prepare builds the request sent to t (RFC 3261 §16.6): new Request-URI,
// Route from Path, Max-Forwards decremented, our Via on top, and our
// Record-Route when the request starts a dialog.
func (p *Proxy) prepare(in *sip.Request, t target, recordRoute bool, loop string) (*sip.Request, error) {
	out := forwardCopy(in)
	out.Laddr = sip.Addr{}
	// The phone's cell identity is its location: it stays in sori's trust
	// domain (RFC 7315 §4.4).
	for out.RemoveHeader("P-Access-Network-Info") {
	}
	out.Recipient = *t.uri.Clone()
	dest, transport := t.dest, t.transport
	// A request going on to another node keeps the alias for that node,
	// which wrote it for the flow it holds (nodes.go).
	if !t.holder && (dest != "" || len(t.path) > 0 || !p.towardNode(in)) {
		if a, ok := alias.Take(&out.Recipient); ok && dest == "" {
			dest, transport = a.Addr, a.Transport
		}
	}
	if len(t.path) > 0 {
		var hs []sip.Header
		for _, v := range t.path {
			for _, one := range splitComma(v) {
				var u sip.Uri
				if err := sip.ParseUri(strings.Trim(strings.TrimSpace(one), "<>"), &u); err != nil {
					return nil, fmt.Errorf("path %q: %w", one, err)
				}
				hs = append(hs, &sip.RouteHeader{Address: u})
			}
		}
		prepend(out, hs...)
	}
	// A new header, not mf.Dec(): sipgo's Clone shares the Max-Forwards
	// value with the incoming request, and every branch must start from it.
	switch {
	case t.pai != "":
		// The caller's identity, asserted by sori to the carrier (RFC
		// 3325); whatever the phone claimed is not passed on. A Privacy
		// the caller asked for goes along: the carrier withholds it.
		for out.RemoveHeader("P-Asserted-Identity") {
		}
		out.AppendHeader(sip.NewHeader("P-Asserted-Identity", t.pai))
	case t.gateway == nil && privacyID(out):
		// A phone is outside the trust domain: an identity the caller
		// asked to keep private is not shown to it (RFC 3325 §7).
		for out.RemoveHeader("P-Asserted-Identity") {
		}
	}
	if mf := out.MaxForwards(); mf != nil {
		m := sip.MaxForwardsHeader(mf.Val() - 1)
		out.ReplaceHeader(&m)
	} else {
		m := sip.MaxForwardsHeader(70)
		out.AppendHeader(&m)
	}

	// The next hop is the top Route, or the Request-URI.
	next := out.Recipient
	if r := out.Route(); r != nil {
		next = r.Address
		if !r.Address.UriParams.Has("lr") {
			// A strict router next (§16.6 step 7): it wants its URI as the
			// Request-URI and ours at the end of the Route set.
			out.AppendHeader(&sip.RouteHeader{Address: out.Recipient})
			out.Recipient = r.Address
			out.RemoveHeader("Route")
		}
	}
	if transport == "" {
		transport = nexthop.Transport(next)
	}
	switch transport {
	case "UDP", "TCP", "TLS", "WS", "WSS":
	default:
		return nil, fmt.Errorf("transport %s is not served", transport)
	}
	if dest == "" {
		dest = nexthop.Dest(next, transport)
	}
	out.SetTransport(transport)
	out.SetDestination(dest)

	host, port, err := p.sentBy(transport)
	if err != nil {
		return nil, err
	}
	// The previous hop's Via learns where its request really came from (RFC 3581).
	if v := out.Via(); v != nil {
		if srcHost, srcPort, err := net.SplitHostPort(in.Source()); err == nil {
			if v.Host != srcHost {
				v.Params.Add("received", srcHost)
			}
			if rp, ok := v.Params.Get("rport"); ok && rp == "" {
				v.Params.Add("rport", srcPort)
			}
		}
	}
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport, Host: host, Port: port, Params: sip.NewParams()}
	via.Params.Add("branch", branchPrefix+loop+"."+uac.Token())
	via.Params.Add("rport", "")
	out.PrependHeader(via)

	if recordRoute {
		inTransport := strings.ToUpper(in.Transport())
		token, holder := p.dialogToken(in.CallID().Value()), p.holderValue(in.CallID().Value())
		rrs := []sip.Header{p.recordRoute(transport, host, port, token, holder, t.edge)}
		if inTransport != transport {
			// Double Record-Route (as Kamailio does): each side of the
			// dialog reaches us over its own transport.
			ih, iport, err := p.sentBy(inTransport)
			if err == nil {
				rrs = append(rrs, p.recordRoute(inTransport, ih, iport, token, holder, t.edge))
			}
		}
		prepend(out, rrs...)
	}
	if c := out.Contact(); c != nil && (recordRoute || targetRefresh(in)) {
		p.markContact(c, in, in.CallID().Value())
	}
	return out, nil
}

// targetRefresh: a request inside a dialog that may change its sender's
// Contact (RFC 3261 §12.2, RFC 3311, RFC 6665, RFC 3515).
func targetRefresh(req *sip.Request) bool {
	if req.To() == nil || !req.To().Params.Has("tag") {
		return false
	}
	switch req.Method {
	case sip.INVITE, sip.UPDATE, sip.SUBSCRIBE, sip.NOTIFY, sip.REFER:
		return true
	}
	return false
}

// privacyID reports whether the request asks for its identity to be kept
// private (Privacy: id, RFC 3325 §7).
func privacyID(req *sip.Request) bool {
	for _, h := range req.GetHeaders("Privacy") {
		for _, v := range strings.FieldsFunc(h.Value(), func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
			if strings.EqualFold(v, "id") {
				return true
			}
		}
	}
	return false
}

// prepend puts hs on top of req's headers in their order. sipgo's
// PrependHeader(hs...) would leave req.Route() pointing at the last of them.
func prepend(req *sip.Request, hs ...sip.Header) {
	for i := len(hs) - 1; i >= 0; i-- {
		req.PrependHeader(hs[i])
	}
}

// sentBy is the host and port we put in Via and Record-Route for transport.
func (p *Proxy) sentBy(transport string) (string, int, error) { return p.cfg.Sender.SentBy(transport) }

// flow, when not empty, is the flow token of a dialog this node only
// relays down one of its flows (RFC 5626 §5.3: the edge proxy's
// Record-Route carries it). holder, under the service's name, names this
// node as the one holding the call while it rings (holder.go).
func (p *Proxy) recordRoute(transport, host string, port int, token, holder, flow string) *sip.RecordRouteHeader {
	service := flow == "" && p.cfg.RecordRoute != ""
	if service {
		// The service's name, without a port: a phone looks it up as
		// RFC 3263 says for a name without one (SRV, then A), and moves to
		// the next node the records give when one does not answer.
		host, port = p.cfg.RecordRoute, 0
	}
	u := sip.Uri{Scheme: "sip", User: flow, Host: host, Port: port, UriParams: sip.NewParams()}
	if transport != "UDP" {
		u.UriParams.Add("transport", strings.ToLower(transport))
	}
	u.UriParams.Add(tokenParam, token)
	if service && holder != "" {
		u.UriParams.Add(holderParam, holder)
	}
	u.UriParams.Add("lr", "")
	return &sip.RecordRouteHeader{Address: u}
}

// splitComma splits a header value at commas outside quotes and <>.
func splitComma(v string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<':
			depth++
		case c == '>':
			depth--
		case c == ',' && depth == 0:
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)
