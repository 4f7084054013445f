// Package proxy is sori's stateful proxy (RFC 3261 §16): it finds where a
// request goes (a user's registered contacts, the next Route, a dialog's
// remote target), forks it in client transactions, and sends the best
// response back in the caller's server transaction. What a call holds
// (record, dialog, media anchor, trunk slot) is kept by its sip/call Call,
// which the proxy tells what happened.
//
// Files: hops.go (483/482), route.go (Route sets, Record-Route, targets),
// dialogtoken.go (which dialogs are sori's), fork.go (branches, CANCEL,
// timer C), response.go (which final response wins), failover.go (what a
// media failover needs: SDPs noted, CSeq offsets, a ringing call re-offered).
package proxy

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/abuse/tollfraud"
	"github.com/sori-voice/sori/sip/alias"
	"github.com/sori-voice/sori/sip/anchoring"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/gopool"
	"github.com/sori-voice/sori/sip/local"
	"github.com/sori-voice/sori/sip/lograte"
	"github.com/sori-voice/sori/sip/push"
	"github.com/sori-voice/sori/sip/pushwake"
	"github.com/sori-voice/sori/sip/timers"
	"github.com/sori-voice/sori/sip/trunks"
	"github.com/sori-voice/sori/sip/uac"
	"github.com/sori-voice/sori/sip/wire"
)

// Sender puts requests on the wire through sori's own sockets
// (sip/server): the same as sori's own requests use.
type Sender = uac.Sender

// Users tells whether a user exists, and who owns a number (the directory:
// registrar/store behind sip/auth).
type Users interface {
	Subscriber(ctx context.Context, name string) (store.Subscriber, error)
	SubscriberByNumber(ctx context.Context, number string) (store.Subscriber, error)
}

// Locations finds a user's current bindings (registrar/store).
type Locations interface {
	Lookup(ctx context.Context, aor string, now time.Time) ([]store.Binding, error)
}

// Calls holds the calls in progress (sip/call).
type Calls interface {
	Begin(rec calls.Record, callerTag string) *call.Call
	// Lookup is the call with callID this node holds, or one it loads
	// from the dialog store (a restart, another node's call); nil: none.
	Lookup(ctx context.Context, callID string) *call.Call
	// Fenced reports whether this node must leave the call with callID
	// alone now: cut off from the dialog store long enough that another
	// node may have adopted it (sip/call fence.go). hangup: the request
	// is a phone's BYE, which goes on for a call this node holds.
	Fenced(callID string, hangup bool) bool
}

// Media anchors calls' media (sip/anchoring over the ng protocol).
type Media interface {
	// Offer rewrites the SDP offer in req on anchor on (zero: one is
	// picked) and returns the anchor; false when req carries no SDP.
	// encryption is what the side the offer goes to is offered: "srtp",
	// "rtp", "webrtc", or "" for the offer's own.
	Offer(ctx context.Context, req *sip.Request, on netip.AddrPort, encryption string) (netip.AddrPort, bool, error)
	// Answer rewrites the SDP answer in res, a response to req, on anchor
	// on; branch is the via-branch its offer named ("": none).
	Answer(ctx context.Context, on netip.AddrPort, req *sip.Request, res *sip.Response, branch string) error
	// DeleteBranch drops the anchor's leg for the offer fromTag made on
	// via-branch branch: a fork's branch that lost (fork.go); with no
	// branch, fromTag's legs: a callee's early dialog that lost
	// (prack_fork.go).
	DeleteBranch(ctx context.Context, on netip.AddrPort, callID, fromTag, branch string) error
	// OfferInReply rewrites the SDP offer in res, a 2xx to req (an INVITE
	// without SDP), on anchor on (zero: one is picked) and returns the
	// anchor; false when res carries no SDP. encryption is what req's
	// sender is offered.
	OfferInReply(ctx context.Context, on netip.AddrPort, req *sip.Request, res *sip.Response, encryption string) (netip.AddrPort, bool, error)
	// AnswerInAck rewrites the SDP answer in ack to such an offer, on
	// anchor on; webrtc: the offerer is a browser. False: no SDP.
	AnswerInAck(ctx context.Context, on netip.AddrPort, ack *sip.Request, webrtc bool) (bool, error)
}

// Originator sends the requests the proxy needs sent on its own behalf (sip/uac).
type Originator interface {
	// Cancel cancels a forwarded INVITE branch.
	Cancel(ctx context.Context, invite *sip.Request)
	// EndLate ACKs and BYEs a 2xx that came after the caller got a failure.
	EndLate(ctx context.Context, callID string, caller, callee call.Side, inviteCSeq uint32)
}

// Config configures a Proxy.
type Config struct {
	Self      *local.Identity
	Users     Users
	Locations Locations
	Calls     Calls
	Media     Media // nil: media flows end to end
	// Encryption is the media encryption a call's callee gets, by its user
	// or its trunk: "srtp", "rtp", or "" for the caller's offer's (nil:
	// always "").
	Encryption func(user, trunk string) string
	Trunks     *trunks.Table // numbers to carriers; nil: no calls to numbers
	Sender     Sender
	UAC        Originator
	Push       Pusher        // wakes sleeping apps (RFC 8599); nil: no push
	TimerC     time.Duration // no-answer timeout of an INVITE branch group
	// RecordRoute is the host sori's Record-Route names instead of this
	// node's own address (sip.record_route, as Kamailio's
	// record_route_preset): the service's name, which every node answers
	// for (Self has it), so a phone's requests inside a call reach a live
	// node when the one that set the call up is gone; that node loads the
	// call. "": this node's address. A Record-Route with a flow token
	// always names this node: only it can send down that flow.
	RecordRoute string
	// DialogSecret keys the tokens in sori's Record-Route (dialogtoken.go);
	// every node must have the same. Empty: a random one per process.
	DialogSecret []byte
	Timers       *timers.Set // arms timer C and cancel waits; nil: a Set of its own
	// Pool runs each branch's wait for its responses (the server's, so the
	// answer is handled on a goroutine whose stack has grown); nil: a pool
	// of its own.
	Pool *gopool.Pool
	// Nodes are the other nodes of the service (sip/nodes): bindings they
	// hold are reached through them; nil: a single node.
	Nodes      Nodes
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
}

// Pusher wakes sleeping apps (sip/pushwake).
type Pusher interface {
	Wanted(b store.Binding) bool
	Wake(aor string, b store.Binding, n push.Notification) *pushwake.Wait
	Answered()
}

// Proxy is the forwarding link of the chain.
type Proxy struct {
	cfg      Config
	secret   []byte
	log      *slog.Logger
	timers   *timers.Set
	branches prometheus.Counter
	forks    prometheus.Gauge
	// fencedLog lets one line a second in about the requests refused
	// while this node is cut off from the dialog store.
	fencedLog lograte.Gate
}

// New returns a Proxy.
func New(c Config) *Proxy {
	if c.TimerC <= 0 {
		c.TimerC = 60 * time.Second
	}
	if c.Timers == nil {
		c.Timers = &timers.Set{}
	}
	if c.Pool == nil {
		c.Pool = gopool.New(0, 1024, 2*time.Second)
	}
	secret := c.DialogSecret
	if len(secret) == 0 {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	p := &Proxy{cfg: c, secret: secret, log: c.Log, timers: c.Timers,
		branches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_proxy_branches_total",
			Help: "Requests forwarded in a client transaction (one per fork branch).",
		}),
		forks: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sori_forks_active",
			Help: "Proxied server transactions whose branches are not all finished (CANCELs and late answers included).",
		}),
	}
	if c.Registerer != nil {
		c.Registerer.MustRegister(p.branches, p.forks)
	}
	return p
}

// Methods implements chain.Plugin: what the proxy forwards.
func (p *Proxy) Methods() []string {
	return []string{"INVITE", "ACK", "CANCEL", "BYE", "PRACK", "UPDATE", "INFO", "MESSAGE", "SUBSCRIBE", "NOTIFY", "REFER"}
}

// Handles implements chain.Plugin: everything but REGISTER (the registrar's).
func (p *Proxy) Handles(r *chain.Request) bool { return r.Method != sip.REGISTER }

// Serve implements chain.Plugin.
func (p *Proxy) Serve(ctx context.Context, w chain.ResponseWriter, r *chain.Request, next chain.Handler) chain.Result {
	req := r.Request
	routed, popped := p.popRoutes(req)
	if fl, token, ok := p.edgeFlow(popped); ok {
		if res, handled := p.edgeToHolder(ctx, w, r, popped); handled {
			return res // a phone's request for the node holding its call (holder.go)
		}
		return p.edge(ctx, w, r, fl, token) // one of this node's flows, for another node (nodes.go)
	}
	switch {
	case req.IsAck():
		if p.ourDialog(req, popped) {
			p.forwardAck(ctx, req, routed)
		}
		return chain.Done
	case req.IsCancel():
		// A CANCEL matching a pending INVITE is taken by the transaction
		// layer before the chain; this one matches nothing.
		return chain.Refuse(481, "Call/Transaction Does Not Exist")
	case req.To().Params.Has("tag"):
		if !p.ourDialog(req, popped) {
			// Not a dialog sori set up (Kamailio answers the same): it
			// is never relayed on the sender's word.
			return chain.Refuse(404, "Not Here")
		}
		return p.inDialog(ctx, w, r, routed, popped)
	case !routed && p.cfg.Self.AddressedToServer(req.Recipient) && req.Route() == nil:
		return next.ServeSIP(ctx, w, r) // for sori itself (OPTIONS was answered earlier)
	default:
		return p.initial(ctx, w, r)
	}
}

// initial routes a request outside any dialog; an INVITE starts a call.
func (p *Proxy) initial(ctx context.Context, w chain.ResponseWriter, r *chain.Request) chain.Result {
	req := r.Request
	var c *call.Call
	if req.IsInvite() {
		_ = chain.Reply(w, req, 100, "Trying") // stop the caller's retransmissions now
		c = p.cfg.Calls.Begin(calls.Record{
			CallID:     req.CallID().Value(),
			From:       wire.URIString(&req.From().Address), // sized once (sip/wire)
			To:         wire.URIString(&req.To().Address),
			RequestURI: wire.URIString(&req.Recipient),
			Caller:     r.Caller.User,
			Source:     strings.ToLower(req.Transport()) + ":" + req.Source(),
		}, req.From().Params.GetOr("tag", ""))
	}
	groups, trunk, refused := p.route(ctx, r, c)
	if c != nil && p.cfg.Trunks != nil {
		plan := p.cfg.Trunks.Plan()
		number, _ := plan.FromURI(req.Recipient)
		callerNumber := ""
		if r.Caller.Trunk != "" {
			callerNumber, _ = plan.FromURI(req.From().Address)
		} else if sub, err := p.cfg.Users.Subscriber(ctx, r.Caller.User); err == nil && len(sub.Numbers) > 0 {
			callerNumber = sub.Numbers[0]
		}
		c.SetRoute(number, callerNumber, r.Caller.Trunk, "")
	}
	if refused.Code != 0 {
		if c != nil {
			c.Failed(refused.Code, refused.Reason, false, 0)
		}
		return refused
	}
	f := newFork(p, req, w, c, r.Caller, groups, dialogCreating(req))
	f.trunk = trunk
	if req.IsInvite() {
		if refused := p.offer(ctx, req, f, netip.AddrPort{}, p.calleeEncryption(groups)); refused.Code != 0 {
			c.Failed(refused.Code, refused.Reason, false, 0)
			return refused
		}
		if f.late {
			f.lateEnc = p.senderEncryption(r)
		}
	}
	f.run(ctx)
	return chain.Done
}

// calleeEncryption is the media encryption of the first target a new call
// tries (targetEncryption): the call's offer is made for it before the
// fork. A re-INVITE keeps what each side speaks (the anchor remembers).
func (p *Proxy) calleeEncryption(groups [][]target) string {
	if len(groups) == 0 || len(groups[0]) == 0 {
		return ""
	}
	return p.targetEncryption(groups[0][0])
}

// targetEncryption is the media encryption a target is offered: its
// trunk's or its user's. A target registered over WebSocket is a browser
// (JsSIP, SIP.js): it gets WebRTC (DTLS-SRTP over ICE), whatever its
// user's setting, since it speaks nothing else. A fork's branch whose
// target wants other than the call's offer gets an offer of its own
// (fork.go branchOffer). A browser is known from its binding (target
// browser), not from the next hop: one whose flow another node holds is
// reached here over the node link, and only this node, which anchors the
// call, makes its offer (the holder relays it down the flow, nodes.go
// edge, anchoring nothing).
func (p *Proxy) targetEncryption(t target) string {
	if t.browser {
		return anchoring.WebRTC
	}
	configured := ""
	if p.cfg.Encryption != nil {
		configured = p.cfg.Encryption(t.user, t.trunk)
	}
	return anchoring.ForContact(t.transport, configured)
}

// offer anchors the media of an INVITE or UPDATE carrying SDP before it is
// forwarded, on anchor on (zero: a new call's); a 503 when no anchor could.
func (p *Proxy) offer(ctx context.Context, req *sip.Request, f *fork, on netip.AddrPort, encryption string) chain.Result {
	if p.cfg.Media == nil || p.fromSelf(req) {
		return chain.Done
	}
	f.noteOffer(req, encryption) // before the anchor rewrites it
	if f.call != nil {
		// What the fork's branches offered otherwise start from (fork.go).
		f.offerSDP, f.offerEnc, f.offerBranch = sdpBody(req), encryption, viaBranch(req)
	}
	anchor, anchored, err := p.cfg.Media.Offer(ctx, req, on, encryption)
	if err != nil {
		p.log.Warn("media not anchored: call refused", "call_id", req.CallID().Value(), "error", err)
		return chain.Unavailable("Media Relay Unavailable")
	}
	f.anchor, f.anchored = anchor, anchored
	f.late = !anchored && req.IsInvite() // no SDP: the offer comes in the 2xx (late.go)
	if anchored && f.call != nil {
		f.call.Anchored(anchor)
	}
	return chain.Done
}

// route returns the groups of targets an out-of-dialog request is tried
// at (whether they are carrier gateways), or the refusal.
func (p *Proxy) route(ctx context.Context, r *chain.Request, c *call.Call) ([][]target, bool, chain.Result) {
	req := r.Request
	if req.Route() != nil {
		if p.fromNode(req) {
			return [][]target{{{uri: req.Recipient}}}, false, chain.Done // another node's route decides
		}
		// A preloaded route that is not ours (ours were popped): where sori
		// sends a new request is never a phone's or a carrier's to choose
		// (as Kamailio's default configuration removes an initial
		// request's Route headers). It goes where its Request-URI says.
		p.log.Debug("preloaded Route removed", "method", string(req.Method), "call_id", req.CallID().Value(), "route", req.Route().Value())
		removeRoutes(req)
	}
	ruri := req.Recipient
	isTel := strings.EqualFold(ruri.Scheme, "tel")
	if !isTel && !p.ours(ruri) {
		return [][]target{{{uri: ruri}}}, false, chain.Done // another domain (callerauth allowed it)
	}
	user := ruri.User
	known := false
	if user != "" && !isTel {
		switch _, err := p.cfg.Users.Subscriber(ctx, user); {
		case err == nil:
			known = true
		case !errors.Is(err, store.ErrNotFound):
			p.log.Warn("user lookup failed", "user", user, "error", err)
			return nil, false, chain.Unavailable("")
		}
	}
	carrier := r.Caller.Trunk
	if !known && p.cfg.Trunks != nil {
		if n, ok := p.cfg.Trunks.Plan().FromURI(ruri); ok {
			sub, err := p.cfg.Users.SubscriberByNumber(ctx, n)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				p.log.Warn("number lookup failed", "number", n, "error", err)
				return nil, false, chain.Unavailable("")
			}
			owner, mine := sub.Name, err == nil
			switch {
			case !mine && carrier != "":
				return nil, false, chain.Refuse(404, "Not Found") // a carrier calling a number that is not ours
			case !mine:
				return p.outbound(ctx, r, n, c)
			case carrier == "" && r.Caller.User == "":
				// Numbers are reached from the phone network through a
				// carrier, or by our own users; not by anyone else.
				return nil, false, chain.Refuse(403, "Forbidden: Not A Trusted Carrier")
			}
			user, known = owner, true
		}
	}
	if !known {
		return nil, false, chain.Refuse(404, "Not Found")
	}
	if carrier != "" && p.cfg.Trunks.Full(carrier) {
		return nil, false, chain.Unavailable("Service Unavailable: Trunk Call Limit")
	}
	targets, refused := p.userTargets(ctx, user)
	var woken []target
	if p.cfg.Push != nil && (req.IsInvite() || req.Method == sip.MESSAGE) {
		// A sleeping app is woken by push and gets the request once it
		// has registered again; the user's other bindings get it at once.
		rest := targets[:0]
		for _, t := range targets {
			if b := t.push; b != nil && p.cfg.Push.Wanted(*b) {
				t.aor = user + "@" + p.cfg.Self.Domain
				woken = append(woken, t)
			} else {
				t.push = nil
				rest = append(rest, t)
			}
		}
		targets = rest
	}
	if refused.Code == 0 && strings.EqualFold(ruri.Scheme, "sips") {
		// A sips: request goes over TLS on every hop (RFC 3261 §26.2.2,
		// RFC 5630 §3.1.3): only to contacts reached over TLS or WSS.
		if targets = secureOnly(targets); len(targets) == 0 && len(woken) == 0 {
			return nil, false, chain.Refuse(480, "Temporarily Unavailable: No Secure Contact")
		}
	}
	groups := forkGroups(targets)
	if len(woken) > 0 {
		// Held alongside the first group (the best q): each wait ends
		// when its app registers, or after push.wait.
		if len(groups) == 0 {
			groups = [][]target{nil}
		}
		groups[0] = append(woken, groups[0]...)
	}
	return groups, false, refused
}

// outbound sends a number to the phone network, gateway by gateway.
// Only an authenticated user of ours may: anything else would let anyone
// call out at the operator's cost.
func (p *Proxy) outbound(ctx context.Context, r *chain.Request, e164 string, c *call.Call) ([][]target, bool, chain.Result) {
	caller := r.Caller.User
	if caller == "" {
		return nil, false, chain.Refuse(403, "Forbidden: Calls Out Need Authentication")
	}
	gws, routed := p.cfg.Trunks.Outbound(e164)
	if !routed {
		return nil, false, chain.Refuse(404, "No Route To Destination")
	}
	if len(gws) == 0 {
		return nil, false, chain.Unavailable("Service Unavailable: No Gateway Available") // all down, or trunks at their limit
	}
	if c != nil {
		// Counted until the call ends, whichever way (sip/call).
		if err := c.CountToll(ctx, caller); err != nil {
			var limit *tollfraud.LimitError
			if errors.As(err, &limit) {
				p.log.Warn("trunk call refused: user over a toll limit", "user", caller, "number", e164, "limit", limit.Limit, "max", limit.Max)
				return nil, false, chain.Refuse(403, "Forbidden: "+limit.Reason())
			}
			p.log.Warn("trunk call refused: toll count unavailable", "user", caller, "error", err)
			return nil, false, chain.Unavailable("")
		}
	}
	pai := ""
	if sub, err := p.cfg.Users.Subscriber(ctx, caller); err == nil && len(sub.Numbers) > 0 {
		pai = "<sip:" + sub.Numbers[0] + "@" + p.cfg.Self.Domain + ";user=phone>"
	}
	groups := make([][]target, 0, len(gws))
	for _, g := range gws {
		u := sip.Uri{Scheme: "sip", User: e164, Host: g.Addr.Addr().String(), Port: int(g.Addr.Port()), UriParams: sip.NewParams()}
		u.UriParams.Add("user", "phone")
		if g.Transport != "UDP" {
			u.UriParams.Add("transport", strings.ToLower(g.Transport))
		}
		gw := g
		groups = append(groups, []target{{uri: u, dest: g.Addr.String(), transport: g.Transport, pai: pai, trunk: g.Trunk, gateway: &gw}})
	}
	return groups, true, chain.Done
}

// userTargets are a user's bindings, or the error response.
func (p *Proxy) userTargets(ctx context.Context, user string) ([]target, chain.Result) {
	bindings, err := p.cfg.Locations.Lookup(ctx, user+"@"+p.cfg.Self.Domain, time.Now())
	if err != nil {
		p.log.Warn("location lookup failed", "user", user, "error", err)
		return nil, chain.Unavailable("")
	}
	if len(bindings) == 0 {
		return nil, chain.Refuse(480, "Temporarily Unavailable")
	}
	out := make([]target, 0, len(bindings))
	for _, b := range bindings {
		t, skip, err := p.reach(ctx, b)
		if err != nil {
			p.log.Warn("unusable binding skipped", "aor", user, "contact", b.Contact, "error", err)
			continue
		}
		if skip {
			p.log.Info("binding skipped: the node holding its flow is down", "aor", user, "contact", b.Contact, "node", b.Node)
			continue
		}
		t.user = user
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, chain.Refuse(480, "Temporarily Unavailable")
	}
	return out, chain.Done
}

// inDialog forwards a request inside a dialog along its route set; the
// call it belongs to learns its CSeq, and a BYE ends it. popped are the
// routes naming sori it came by: one may name the node holding a call
// this node does not (holder.go).
func (p *Proxy) inDialog(ctx context.Context, w chain.ResponseWriter, r *chain.Request, routed bool, popped []sip.Uri) chain.Result {
	req := r.Request
	var t target
	switch {
	case req.Route() != nil:
		t = target{uri: req.Recipient}
	case routed && alias.Has(req.Recipient):
		t = target{uri: req.Recipient}
	case routed && !p.ours(req.Recipient):
		t = target{uri: req.Recipient}
	default:
		// Not a dialog we record-routed (Kamailio answers the same).
		return chain.Refuse(404, "Not Here")
	}
	fromTag := req.From().Params.GetOr("tag", "")
	callID := req.CallID().Value()
	if p.cfg.Calls.Fenced(callID, req.Method == sip.BYE) {
		// Another node may hold the call now: acting on it (an offer on
		// its anchor) could undo what that node does. The phone
		// sends the request again after the Retry-After, by when this node
		// knows (sip/call fence.go).
		if p.fencedLog.Allow(time.Now()) {
			p.log.Warn("in-dialog request refused: this node is cut off from the dialog store", "method", string(req.Method), "call_id", callID)
		}
		return chain.Unavailable("")
	}
	c := p.cfg.Calls.Lookup(ctx, callID)
	if c == nil {
		if res, handled := p.toHolder(ctx, w, r, popped); handled {
			return res // a ringing call another node holds
		}
		if p.unanchoredAnswer(c, req) {
			// The callee must not get the caller's own SDP past the
			// anchor that took its offer, which only the call's node knows.
			p.log.Info("PRACK with an SDP answer refused: no early offer held here", "call_id", callID)
			return chain.Refuse(481, "Call/Transaction Does Not Exist")
		}
	}
	if !p.aliasSealed(req.Recipient, callID) || !dialogTarget(c, fromTag, req) {
		// Not where the dialog's other side is (target.go).
		p.log.Info("in-dialog request refused: not the dialog's target", "method", string(req.Method), "call_id", callID,
			"request_uri", req.Recipient.String(), "source", req.Source())
		return chain.Refuse(403, "Forbidden: Not The Dialog's Target")
	}
	on := netip.AddrPort{}
	cseq := req.CSeq().SeqNo
	if c != nil {
		if (req.IsInvite() || req.Method == sip.UPDATE) && c.Moving() {
			// sori's own re-INVITEs are moving the call's media (RFC 3261 §14.2).
			return chain.Refuse(491, "Request Pending")
		}
		cseq = c.Seen(fromTag, req.CSeq().SeqNo)
		on, _ = c.Anchor()
		if ct := req.Contact(); ct != nil && (req.IsInvite() || req.Method == sip.UPDATE) {
			c.Moved(fromTag, ct.Address.String(), req.Source(), req.Transport()) // a phone that changed networks
		}
	}
	f := newFork(p, req, w, nil, r.Caller, [][]target{{t}}, false)
	f.anchor, f.dialog, f.cseq = on, c, cseq
	if req.IsInvite() || req.Method == sip.UPDATE {
		// Each side keeps what it speaks; a browser's is said again, for
		// an anchor (rtpengine) that needs ICE=force to keep its ICE.
		enc := anchoring.PassEncryption
		if c != nil {
			if peer, ok := c.Peer(fromTag); ok && browserSide(peer) {
				enc = anchoring.WebRTC
			}
		}
		if refused := p.offer(ctx, req, f, on, enc); refused.Code != 0 {
			return refused
		}
		if f.late {
			f.lateEnc = reSenderEncryption(c, req)
		}
	}
	if req.Method == sip.PRACK && c != nil && p.cfg.Media != nil {
		if refused := p.prackAnswer(c, req); refused.Code != 0 {
			return refused
		}
	}
	if req.Method == sip.BYE && c != nil {
		// The call ends now: its media is deleted while the BYE is on its
		// way, so a slow anchor never delays it.
		c.Bye(fromTag)
	}
	f.run(ctx)
	return chain.Done
}

// forwardAck relays an ACK for a 2xx along the dialog's route; ACKs for
// other final responses end in the transaction layer, hop by hop.
func (p *Proxy) forwardAck(ctx context.Context, req *sip.Request, routed bool) {
	if req.Route() == nil && (!routed || p.ours(req.Recipient)) {
		return // not ours to relay
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return
	}
	callID := req.CallID().Value()
	if p.cfg.Calls.Fenced(callID, false) {
		return // sent again with the 2xx it acknowledges, which the callee sends again
	}
	c := p.cfg.Calls.Lookup(ctx, callID)
	if !p.aliasSealed(req.Recipient, callID) || !dialogTarget(c, req.From().Params.GetOr("tag", ""), req) {
		p.log.Debug("ACK not relayed: not the dialog's target", "call_id", callID, "request_uri", req.Recipient.String())
		return
	}
	out, err := p.prepare(req, target{uri: req.Recipient}, false, "")
	if err != nil {
		p.log.Debug("ACK not relayed", "call_id", req.CallID().Value(), "error", err)
		return
	}
	noAnswer := false
	if c != nil {
		if n := c.CSeqFor(req.From().Params.GetOr("tag", ""), req.CSeq().SeqNo); n != req.CSeq().SeqNo {
			setCSeq(out, n) // its INVITE's, as it was sent on
		}
		noAnswer = p.cfg.Media != nil && !p.lateAck(c, out, req.CSeq().SeqNo)
	}
	if err := p.cfg.Sender.Write(out); err != nil {
		p.log.Debug("ACK not relayed", "call_id", req.CallID().Value(), "error", err)
		if !noAnswer {
			return
		}
	}
	if noAnswer {
		// The 2xx's offer has no answer: the session cannot be set up
		// (RFC 3264 §4). The ACK went on (the callee stops sending its
		// 2xx); sori ends the call, BYE both ways, media deleted.
		p.log.Info("ACK without the SDP answer to the 2xx's offer: call ended", "call_id", callID)
		c.NoSDPAnswer()
		return
	}
	if c != nil {
		c.Acked()
	}
}

// fromSelf: the request comes straight from sori (a spiral), so its SDP
// points at the anchor already; anchoring it again would loop the media.
func (p *Proxy) fromSelf(req *sip.Request) bool {
	v := req.Via()
	return v != nil && p.cfg.Self.IsLocalHost(v.Host) && strings.HasPrefix(v.Params.GetOr("branch", ""), branchPrefix)
}

// browserSide reports whether a dialog's side is a browser: reached over
// WebSocket, or, for one whose flow another node holds (reached here over
// the node link), a Contact naming ws or wss (RFC 7118 §5.2).
func browserSide(s call.Side) bool {
	if anchoring.WebSocket(s.Transport) {
		return true
	}
	var u sip.Uri
	return sip.ParseUri(s.Target, &u) == nil && anchoring.WebSocket(u.UriParams.GetOr("transport", ""))
}

// dialogCreating: requests whose dialog must keep the proxy on its path.
func dialogCreating(req *sip.Request) bool {
	switch req.Method {
	case sip.INVITE, sip.SUBSCRIBE, sip.REFER, sip.NOTIFY:
		return true
	}
	return false
}
