// Package proxy is sori's stateful proxy (RFC 3261 §16): it finds where a
// request goes (a user's registered contacts, the next Route, a dialog's
// remote target), forks it in client transactions, and sends the best
// response back in the caller's server transaction.
//
// Files: hops.go (483/482), route.go (Route sets, Record-Route, targets),
// nat.go (reaching phones behind NAT), fork.go (branches, CANCEL, timer C),
// response.go (which final response wins).
package proxy

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/abuse/tollfraud"
	"github.com/sori-voice/sori/sip/callerauth"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/local"
	"github.com/sori-voice/sori/sip/networks"
	"github.com/sori-voice/sori/sip/trunks"
)

// Sender puts requests on the wire through sori's own sockets.
type Sender interface {
	// Request sends req in a new client transaction.
	Request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error)
	// Write sends req without a transaction (ACK for a 2xx).
	Write(req *sip.Request) error
	// Local is the address sori listens on for transport ("udp", "tcp").
	Local(transport string) (netip.AddrPort, bool)
}

// Users tells whether a user exists, and who owns a number.
type Users interface {
	Subscriber(ctx context.Context, name string) (store.Subscriber, error)
	SubscriberByNumber(ctx context.Context, number string) (store.Subscriber, error)
}

// Locations finds a user's current bindings.
type Locations interface {
	Lookup(ctx context.Context, aor string, now time.Time) ([]store.Binding, error)
}

// Media anchors calls' media (sip/anchoring over the ng protocol).
type Media interface {
	// Offer rewrites the SDP offer in req; false when it carries none.
	Offer(ctx context.Context, req *sip.Request) (bool, error)
	// Answer rewrites the SDP answer in res, a response to req.
	Answer(ctx context.Context, req *sip.Request, res *sip.Response) error
	// Delete ends the call's media and returns each side's media quality
	// by SIP tag (nil when unknown).
	Delete(ctx context.Context, callID string) map[string]calls.MediaQuality
}

// Tolls caps each user's calls to carrier trunks (sip/abuse/tollfraud).
type Tolls interface {
	// Begin counts a call out; a *tollfraud.LimitError refuses it (403),
	// another error means the count could not be kept (503).
	Begin(ctx context.Context, user, callID string) error
	// End stops counting it (a call not Begun is ignored).
	End(callID string)
}

// Config configures a Proxy.
type Config struct {
	Self      *local.Identity
	Users     Users
	Locations Locations
	Calls     *calls.Tracker
	Media     Media                // nil: media flows end to end
	Networks  *networks.Classifier // names each side's network in call records
	Trunks    *trunks.Table        // numbers to carriers; nil: no calls to numbers
	Tolls     Tolls                // per-user caps on trunk calls; nil: none
	Advertise string               // host[:port] written in Via and Record-Route; empty: the listener's
	TimerC    time.Duration        // no-answer timeout of an INVITE branch group
	// DialogTimeout is how long an answered call is remembered without a
	// BYE (for ending it on a media timeout).
	DialogTimeout time.Duration
	RetryAfter    int // seconds, with 503 when the store is unavailable
	// DialogSecret keys the tokens in sori's Record-Route (dialogtoken.go);
	// every node must have the same. Empty: a random one per process.
	DialogSecret []byte
	Log          *slog.Logger
	Registerer   prometheus.Registerer // nil: no metrics
}

// Proxy is the forwarding link of the chain.
type Proxy struct {
	cfg      Config
	secret   []byte
	sender   Sender
	log      *slog.Logger
	branches prometheus.Counter
	dialogs  dialogs
}

// New returns a Proxy; Attach gives it the transport before serving.
func New(c Config) *Proxy {
	if c.TimerC <= 0 {
		c.TimerC = 60 * time.Second
	}
	if c.DialogTimeout <= 0 {
		c.DialogTimeout = 12 * time.Hour
	}
	secret := c.DialogSecret
	if len(secret) == 0 {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	p := &Proxy{cfg: c, secret: secret, log: c.Log, branches: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sori_proxy_branches_total",
		Help: "Requests forwarded in a client transaction (one per fork branch).",
	})}
	if c.Registerer != nil {
		c.Registerer.MustRegister(p.branches)
	}
	return p
}

// Attach sets the transport the proxy sends on.
func (p *Proxy) Attach(s Sender) { p.sender = s }

// Methods implements chain.Plugin: what the proxy forwards.
func (p *Proxy) Methods() []string {
	return []string{"INVITE", "ACK", "CANCEL", "BYE", "PRACK", "UPDATE", "INFO", "MESSAGE", "SUBSCRIBE", "NOTIFY", "REFER"}
}

// Wrap implements chain.Plugin.
func (p *Proxy) Wrap(next chain.Handler) chain.Handler {
	return chain.HandlerFunc(func(ctx context.Context, w chain.ResponseWriter, req *sip.Request) {
		if req.Method == sip.REGISTER {
			next.ServeSIP(ctx, w, req)
			return
		}
		routed, popped := p.popRoutes(req)
		switch {
		case req.IsAck():
			if p.ourDialog(req, popped) {
				p.forwardAck(req, routed)
			}
		case req.IsCancel():
			// A CANCEL matching a pending INVITE is taken by the transaction
			// layer before the chain; this one matches nothing.
			_ = chain.Reply(w, req, 481, "Call/Transaction Does Not Exist")
		case req.To().Params.Has("tag"):
			if !p.ourDialog(req, popped) {
				// Not a dialog sori set up (Kamailio answers the same): it
				// is never relayed on the sender's word.
				_ = chain.Reply(w, req, 404, "Not Here")
				return
			}
			p.inDialog(ctx, w, req, routed)
		case !routed && p.cfg.Self.AddressedToServer(req.Recipient) && req.Route() == nil:
			next.ServeSIP(ctx, w, req) // for sori itself (OPTIONS was answered earlier)
		default:
			p.initial(ctx, w, req)
		}
	})
}

// initial routes a request outside any dialog.
func (p *Proxy) initial(ctx context.Context, w chain.ResponseWriter, req *sip.Request) {
	if req.IsInvite() {
		_ = chain.Reply(w, req, 100, "Trying") // stop the caller's retransmissions now
	}
	var call *calls.Call
	if req.IsInvite() {
		call = p.cfg.Calls.Begin(calls.Record{
			CallID:     req.CallID().Value(),
			From:       req.From().Address.String(),
			To:         req.To().Address.String(),
			RequestURI: req.Recipient.String(),
			Caller:     callerauth.User(ctx),
			Source:     strings.ToLower(req.Transport()) + ":" + req.Source(),
		}, req.From().Params.GetOr("tag", ""))
	}
	groups, trunk, code, reason := p.route(ctx, req)
	if call != nil && p.cfg.Trunks != nil {
		plan := p.cfg.Trunks.Plan()
		number, _ := plan.FromURI(req.Recipient)
		carrier := callerauth.Carrier(ctx)
		callerNumber := ""
		if carrier != "" {
			callerNumber, _ = plan.FromURI(req.From().Address)
		} else if sub, err := p.cfg.Users.Subscriber(ctx, callerauth.User(ctx)); err == nil && len(sub.Numbers) > 0 {
			callerNumber = sub.Numbers[0]
		}
		call.SetRoute(number, callerNumber, carrier, "")
	}
	if code != 0 {
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		if code == 503 {
			res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(p.cfg.RetryAfter)))
		}
		_ = w.Respond(res)
		if call != nil {
			call.Fail(code, reason, false, false, 0)
		}
		return
	}
	f := newFork(p, req, w, call, groups, dialogCreating(req))
	f.trunk = trunk
	if req.IsInvite() && !p.offer(ctx, w, req, f, call) {
		return
	}
	f.run(ctx)
}

// offer anchors the media of an INVITE or UPDATE carrying SDP before it is
// forwarded; false when the request was refused because no anchor could.
func (p *Proxy) offer(ctx context.Context, w chain.ResponseWriter, req *sip.Request, f *fork, call *calls.Call) bool {
	if p.cfg.Media == nil || p.fromSelf(req) {
		return true
	}
	anchored, err := p.cfg.Media.Offer(ctx, req)
	if err != nil {
		p.log.Warn("media not anchored: call refused", "call_id", req.CallID().Value(), "error", err)
		res := sip.NewResponseFromRequest(req, 503, "Media Relay Unavailable", nil)
		res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(p.cfg.RetryAfter)))
		_ = w.Respond(res)
		if call != nil {
			call.Fail(503, res.Reason, false, false, 0)
			p.callEnded(req.CallID().Value())
		}
		return false
	}
	f.anchored = anchored
	return true
}

// route returns the groups of targets an out-of-dialog request is tried
// at (whether they are carrier gateways), or the error response.
func (p *Proxy) route(ctx context.Context, req *sip.Request) ([][]target, bool, int, string) {
	if req.Route() != nil {
		return [][]target{{{uri: req.Recipient}}}, false, 0, "" // a preloaded route decides
	}
	ruri := req.Recipient
	isTel := strings.EqualFold(ruri.Scheme, "tel")
	if !isTel && !p.ours(ruri) {
		return [][]target{{{uri: ruri}}}, false, 0, "" // another domain (callerauth allowed it)
	}
	user := ruri.User
	known := false
	if user != "" && !isTel {
		switch _, err := p.cfg.Users.Subscriber(ctx, user); {
		case err == nil:
			known = true
		case !errors.Is(err, store.ErrNotFound):
			p.log.Warn("user lookup failed", "user", user, "error", err)
			return nil, false, 503, "Service Unavailable"
		}
	}
	carrier := callerauth.Carrier(ctx)
	if !known && p.cfg.Trunks != nil {
		if n, ok := p.cfg.Trunks.Plan().FromURI(ruri); ok {
			sub, err := p.cfg.Users.SubscriberByNumber(ctx, n)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				p.log.Warn("number lookup failed", "number", n, "error", err)
				return nil, false, 503, "Service Unavailable"
			}
			owner, mine := sub.Name, err == nil
			switch {
			case !mine && carrier != "":
				return nil, false, 404, "Not Found" // a carrier calling a number that is not ours
			case !mine:
				return p.outbound(ctx, req, n)
			case carrier == "" && callerauth.User(ctx) == "":
				// Numbers are reached from the phone network through a
				// carrier, or by our own users; not by anyone else.
				return nil, false, 403, "Forbidden: Not A Trusted Carrier"
			}
			user, known = owner, true
		}
	}
	if !known {
		return nil, false, 404, "Not Found"
	}
	if carrier != "" && p.cfg.Trunks.Full(carrier) {
		return nil, false, 503, "Service Unavailable: Trunk Call Limit"
	}
	targets, code, reason := p.userTargets(ctx, user)
	return groupByQ(targets), false, code, reason
}

// outbound sends a number to the phone network, gateway by gateway.
// Only an authenticated user of ours may: anything else would let anyone
// call out at the operator's cost.
func (p *Proxy) outbound(ctx context.Context, req *sip.Request, e164 string) ([][]target, bool, int, string) {
	caller := callerauth.User(ctx)
	if caller == "" {
		return nil, false, 403, "Forbidden: Calls Out Need Authentication"
	}
	gws, routed := p.cfg.Trunks.Outbound(e164)
	if !routed {
		return nil, false, 404, "No Route To Destination"
	}
	if len(gws) == 0 {
		return nil, false, 503, "Service Unavailable: No Gateway Available" // all down, or trunks at their limit
	}
	if p.cfg.Tolls != nil && req.IsInvite() {
		// Counted until the call ends, whichever way (callEnded).
		if err := p.cfg.Tolls.Begin(ctx, caller, req.CallID().Value()); err != nil {
			var limit *tollfraud.LimitError
			if errors.As(err, &limit) {
				p.log.Warn("trunk call refused: user over a toll limit", "user", caller, "number", e164, "limit", limit.Limit, "max", limit.Max)
				return nil, false, 403, "Forbidden: " + limit.Reason()
			}
			p.log.Warn("trunk call refused: toll count unavailable", "user", caller, "error", err)
			return nil, false, 503, "Service Unavailable"
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
		if g.Transport == "TCP" {
			u.UriParams.Add("transport", "tcp")
		}
		gw := g
		groups = append(groups, []target{{uri: u, dest: g.Addr.String(), transport: g.Transport, pai: pai, trunk: g.Trunk, gateway: &gw}})
	}
	return groups, true, 0, ""
}

// PingGateway sends a carrier gateway an OPTIONS and waits for any final
// response: a gateway that answers at all is up (as Kamailio's dispatcher
// with its default reply codes).
func (p *Proxy) PingGateway(ctx context.Context, g trunks.Gateway) error {
	u := sip.Uri{Scheme: "sip", Host: g.Addr.Addr().String(), Port: int(g.Addr.Port())}
	req, err := p.originate(originated{method: sip.OPTIONS, ruri: u, transport: g.Transport, dest: g.Addr.String(),
		from: sip.Uri{Scheme: "sip", User: "sori", Host: p.cfg.Self.Domain}, fromTag: randomToken(), to: u,
		callID: "ping-" + randomToken(), cseq: 1})
	if err != nil {
		return err
	}
	_, err = p.final(ctx, req)
	return err
}

// userTargets are a user's bindings, or the error response.
func (p *Proxy) userTargets(ctx context.Context, user string) ([]target, int, string) {
	bindings, err := p.cfg.Locations.Lookup(ctx, user+"@"+p.cfg.Self.Domain, time.Now())
	if err != nil {
		p.log.Warn("location lookup failed", "user", user, "error", err)
		return nil, 503, "Service Unavailable"
	}
	if len(bindings) == 0 {
		return nil, 480, "Temporarily Unavailable"
	}
	out := make([]target, 0, len(bindings))
	for _, b := range bindings {
		t, err := bindingTarget(b)
		if err != nil {
			p.log.Warn("unusable binding skipped", "aor", user, "contact", b.Contact, "error", err)
			continue
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, 480, "Temporarily Unavailable"
	}
	return out, 0, ""
}

// inDialog forwards a request inside a dialog along its route set.
func (p *Proxy) inDialog(ctx context.Context, w chain.ResponseWriter, req *sip.Request, routed bool) {
	var t target
	switch {
	case req.Route() != nil:
		t = target{uri: req.Recipient}
	case routed && hasAlias(req.Recipient):
		t = target{uri: req.Recipient}
	case routed && !p.ours(req.Recipient):
		t = target{uri: req.Recipient}
	default:
		// Not a dialog we record-routed (Kamailio answers the same).
		_ = chain.Reply(w, req, 404, "Not Here")
		return
	}
	p.dialogs.seen(req)
	f := newFork(p, req, w, nil, [][]target{{t}}, false)
	if (req.IsInvite() || req.Method == sip.UPDATE) && !p.offer(ctx, w, req, f, nil) {
		return
	}
	if req.Method != sip.BYE {
		f.run(ctx)
		return
	}
	// BYE: the media is ended while the BYE is on its way, so a slow
	// anchor never delays it; the record is written once both are done,
	// with the media quality the anchor reports.
	callID := req.CallID().Value()
	dl := p.dialogs.take(callID)
	media := make(chan map[string]calls.MediaQuality, 1)
	if p.cfg.Media != nil {
		go func() {
			dctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
			defer cancel()
			media <- p.cfg.Media.Delete(dctx, callID)
		}()
	} else {
		media <- nil
	}
	f.run(ctx)
	if m := <-media; m != nil {
		if dl != nil {
			p.recordMedia(dl, m)
		} else {
			p.cfg.Calls.Media(callID, m)
		}
	}
	p.cfg.Calls.Bye(callID, req.From().Params.GetOr("tag", ""))
	p.callEnded(callID)
}

// callEnded releases what a call held: its trunk's call slot and its
// caller's toll count. Every way an initial INVITE ends comes here: a
// failure or CANCEL before the answer, BYE, a media timeout; calls that
// never end are let go at sip.dialog_timeout by each counter itself.
func (p *Proxy) callEnded(callID string) {
	if p.cfg.Trunks != nil {
		p.cfg.Trunks.End(callID)
	}
	if p.cfg.Tolls != nil {
		p.cfg.Tolls.End(callID)
	}
}

// forwardAck relays an ACK for a 2xx along the dialog's route; ACKs for
// other final responses end in the transaction layer, hop by hop.
func (p *Proxy) forwardAck(req *sip.Request, routed bool) {
	if req.Route() == nil && (!routed || p.ours(req.Recipient)) {
		return // not ours to relay
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return
	}
	out, err := p.prepare(req, target{uri: req.Recipient}, false, "")
	if err != nil {
		p.log.Debug("ACK not relayed", "call_id", req.CallID().Value(), "error", err)
		return
	}
	if err := p.sender.Write(out); err != nil {
		p.log.Debug("ACK not relayed", "call_id", req.CallID().Value(), "error", err)
	}
}

// fromSelf: the request comes straight from sori (a spiral), so its SDP
// points at the anchor already; anchoring it again would loop the media.
func (p *Proxy) fromSelf(req *sip.Request) bool {
	v := req.Via()
	return v != nil && p.cfg.Self.IsLocalHost(v.Host) && strings.HasPrefix(v.Params.GetOr("branch", ""), branchPrefix)
}

// dialogCreating: requests whose dialog must keep the proxy on its path.
func dialogCreating(req *sip.Request) bool {
	switch req.Method {
	case sip.INVITE, sip.SUBSCRIBE, sip.REFER, sip.NOTIFY:
		return true
	}
	return false
}
