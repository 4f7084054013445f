// Package registrar handles REGISTER (RFC 3261 §10.3): it authenticates the
// request, turns its Contact headers into bindings, applies them to the
// binding store and answers with every current contact.
package registrar

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/auth"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/digest"
	"github.com/sori-voice/sori/sip/local"
	"github.com/sori-voice/sori/sip/reply"
)

// Policy is the REGISTER policy from the configuration.
type Policy struct {
	MinExpires     int
	MaxExpires     int
	DefaultExpires int
	MaxContacts    int // 0: no limit
	// FlowTimer is sent as Flow-Timer to a phone registering with SIP
	// Outbound; 0: 120 s.
	FlowTimer time.Duration
	Push      PushPolicy
}

// Registrar is the REGISTER link of the request chain.
type Registrar struct {
	self      *local.Identity
	auth      *auth.Authenticator
	store     store.Bindings
	policy    Policy
	log       *slog.Logger
	results   *prometheus.CounterVec
	now       func() time.Time
	observers []Observer
	holder    Holder                // nil: one node
	pathFrom  func(src string) bool // nil: Path from nobody
}

// Observer learns an AOR's bindings after each REGISTER that changed them
// (sip/natping pings the ones behind NAT).
type Observer interface {
	Track(aor string, bindings []store.Binding)
}

// Option configures a Registrar.
type Option func(*Registrar)

// WithObserver has o told the bindings after every accepted update.
func WithObserver(o Observer) Option {
	return func(r *Registrar) { r.observers = append(r.observers, o) }
}

// New builds a Registrar. reg may be nil (no metrics).
func New(self *local.Identity, a *auth.Authenticator, s store.Bindings, p Policy, log *slog.Logger, reg prometheus.Registerer, opts ...Option) *Registrar {
	r := &Registrar{
		self: self, auth: a, store: s, policy: p, log: log, now: time.Now,
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_registrations_total",
			Help: "REGISTER requests by result.",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(r.results)
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Methods implements chain.Plugin.
func (r *Registrar) Methods() []string { return []string{"REGISTER"} }

// Handles implements chain.Plugin: every REGISTER (sori never forwards one).
func (r *Registrar) Handles(req *chain.Request) bool { return req.Method == sip.REGISTER }

// Serve implements chain.Plugin.
func (r *Registrar) Serve(ctx context.Context, w chain.ResponseWriter, req *chain.Request, _ chain.Handler) chain.Result {
	res, fail, result := r.handle(ctx, req.Request)
	r.results.WithLabelValues(result).Inc()
	if res == nil {
		return fail
	}
	if err := w.Respond(res); err != nil {
		r.log.Warn("register: send response", "call_id", callID(req.Request), "error", err)
	}
	return chain.Done
}

// handle returns the response and the result label for metrics. The
// request's syntax is checked first (400), then its credentials (401),
// then what it asks for (403, 404, 423): a malformed REGISTER learns it is
// malformed, and nobody learns which domains and users exist here before
// authenticating (RFC 3261 §10.3 checks the domain first; Kamailio's
// configurations challenge first, as here).
// A refusal comes back as a chain.Result, which the server writes.
func (r *Registrar) handle(ctx context.Context, req *sip.Request) (*sip.Response, chain.Result, string) {
	to := req.To()
	if scheme := strings.ToLower(to.Address.Scheme); scheme != "sip" && scheme != "sips" {
		return nil, chain.Refuse(400, "To Is Not A SIP URI"), "bad_request"
	}
	if to.Address.User == "" {
		return nil, chain.Refuse(400, "No User In To"), "bad_request"
	}
	now := r.now()
	update, fail, result := r.parse(req, now)
	if fail.Code == 400 {
		return nil, fail, result
	}

	out, err := r.auth.Check(ctx, req, auth.WWW)
	if err != nil {
		r.log.Warn("register: subscriber lookup failed", "call_id", callID(req), "error", err)
		return nil, chain.Unavailable(""), "store_error"
	}
	switch {
	case !out.Present:
		return r.auth.Challenge(req, auth.WWW, false), chain.Done, "challenged"
	case out.Result == digest.BadURI:
		return nil, chain.Refuse(400, "Digest URI Does Not Match Request-URI"), "bad_request"
	case out.Result == digest.Malformed:
		return nil, chain.Refuse(400, "Malformed Credentials"), "bad_request"
	case out.Result == digest.Stale || out.Result == digest.Replay:
		return r.auth.Challenge(req, auth.WWW, true), chain.Done, "challenged"
	case out.Result != digest.OK:
		r.log.Info("register: authentication failed", "user", to.Address.User, "reason", out.Result.String(), "source", req.Source())
		return r.auth.Challenge(req, auth.WWW, false), chain.Done, "auth_failed"
	}
	if !r.self.IsDomain(req.Recipient.Host) || !r.self.IsDomain(to.Address.Host) {
		return nil, chain.Refuse(403, "Domain Not Served"), "not_our_domain"
	}
	if out.User != to.Address.User {
		r.log.Info("register: user does not own the address-of-record", "user", out.User, "aor", to.Address.User, "source", req.Source())
		return nil, chain.Refuse(403, "Forbidden: Not Your Address-Of-Record"), "forbidden"
	}
	if fail.Code != 0 {
		return nil, fail, result
	}
	update.AOR = to.Address.User + "@" + r.self.Domain

	// No per-request deadline here: a timer per REGISTER cost 8 % of the CPU
	// at load. The store bounds its own calls (the Redis client's dial, read,
	// write and pool timeouts are registrar.store_timeout; memory never blocks).
	var bindings []store.Binding
	query := !update.RemoveAll && len(update.Contacts) == 0
	if query {
		bindings, err = r.store.Lookup(ctx, update.AOR, now)
	} else {
		bindings, err = r.store.Update(ctx, update)
	}
	switch {
	case errors.Is(err, store.ErrOutOfOrder):
		return nil, chain.Refuse(400, "Invalid CSeq Number"), "out_of_order"
	case errors.Is(err, store.ErrTooManyContacts):
		return nil, chain.Refuse(503, "Too Many Registered Contacts"), "too_many_contacts"
	case err != nil:
		r.log.Warn("register: binding store failed", "aor", update.AOR, "error", err)
		return nil, chain.Unavailable(""), "store_error"
	}
	// Boxing the arguments cost 2 allocs/op with debug off
	// (BenchmarkRegisterMemory 77 → 75, 2026-12-04; README "Performance").
	// Debug asks its handler with context.Background() too.
	if r.log.Enabled(context.Background(), slog.LevelDebug) {
		r.log.Debug("register", "aor", update.AOR, "contacts", len(update.Contacts), "bindings", len(bindings), "source", req.Source())
	}
	if query {
		return r.ok(req, bindings, now), chain.Done, "query"
	}
	for _, o := range r.observers {
		o.Track(update.AOR, bindings)
	}
	return r.ok(req, bindings, now), chain.Done, "ok"
}

// parse turns the Contact and Expires headers into a store update.
func (r *Registrar) parse(req *sip.Request, now time.Time) (store.Update, chain.Result, string) {
	u := store.Update{
		CallID:      callID(req),
		CSeq:        req.CSeq().SeqNo,
		Now:         now,
		MaxContacts: r.policy.MaxContacts,
	}
	headerExpires := -1
	if h := chain.Header(req, "Expires"); h != nil {
		v, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32)
		if err != nil {
			return u, chain.Refuse(400, "Invalid Expires"), "bad_request"
		}
		headerExpires = int(min(v, 1<<31-1))
	}
	var buf [4]sip.Header
	contacts := chain.AppendHeaders(buf[:0], req, "Contact")
	for _, h := range contacts {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			return u, chain.Refuse(400, "Invalid Contact"), "bad_request"
		}
		if c.Address.Wildcard {
			// RFC 3261 §10.3 step 6: "*" only alone and only with Expires: 0.
			if len(contacts) != 1 || headerExpires != 0 {
				return u, chain.Refuse(400, "Invalid Wildcard Contact"), "bad_request"
			}
			u.RemoveAll = true
			return u, chain.Done, ""
		}
	}
	var path []string
	for _, h := range chain.Headers(req, "Path") {
		path = append(path, h.Value())
	}
	if len(path) > 0 && (r.pathFrom == nil || !r.pathFrom(req.Source())) {
		// A Path is where every call to the phone will be sent: only
		// proxies sori trusts may write one (nodes.go).
		return u, chain.Refuse(403, "Forbidden: Path Not Accepted From This Source"), "forbidden"
	}
	node, flow := "", ""
	if r.holder != nil {
		node, flow = r.holder.Holder(req.Transport(), req.Source())
	}
	userAgent := ""
	if h := chain.Header(req, "User-Agent"); h != nil {
		userAgent = h.Value()
	}
	for _, h := range contacts {
		c := h.(*sip.ContactHeader)
		if r.self.IsLocalURI(c.Address) {
			// A call forked to it would come straight back: a loop.
			return u, chain.Refuse(403, "Forbidden: Contact Is This Server"), "forbidden"
		}
		expires := headerExpires
		if v, ok := c.Params.Get("expires"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				return u, chain.Refuse(400, "Invalid Contact Expires"), "bad_request"
			}
			expires = int(min(n, 1<<31-1))
		}
		if expires < 0 {
			expires = r.policy.DefaultExpires
		}
		if expires > 0 && expires < r.policy.MinExpires {
			return u, chain.Refuse(423, "Interval Too Brief", sip.NewHeader("Min-Expires", strconv.Itoa(r.policy.MinExpires))), "interval_too_brief"
		}
		expires = min(expires, r.policy.MaxExpires)
		q, ok := parseQ(c.Params)
		if !ok {
			return u, chain.Refuse(400, "Invalid Contact q-value"), "bad_request"
		}
		instance, _ := c.Params.Get("+sip.instance")
		regID, _ := strconv.Atoi(c.Params.GetOr("reg-id", "0"))
		id := bindingID(c.Address, instance, regID)
		pn, hasPush := readPush(c.Address)
		if hasPush && !pn.query {
			// RFC 8599 §5.2: a provider sori does not push with, or no
			// device token to push to (one is needed, but not to unbind).
			if !r.policy.Push.served(pn.provider) || pn.prid == "" && expires != 0 {
				return u, chain.Refuse(555, "Push Notification Service Not Supported"), "push_unsupported"
			}
			if instance == "" {
				// The device is its push token: a woken app re-registering
				// from a new address replaces its binding (as OpenSIPS
				// matches by pn-provider and pn-prid).
				id = pushBindingID(pn)
			}
		} else {
			pn = pushContact{}
		}
		u.Contacts = append(u.Contacts, store.Binding{
			PushProvider: strings.ToLower(pn.provider), PushPRID: pn.prid, PushParam: pn.param,
			PushSelfRefresh: pn.provider != "" && c.Params.Has("+sip.pnsreg"),
			ID:              id,
			Contact:         c.Address.String(),
			Params:          echoParams(c.Params),
			Q:               q,
			Expires:         now.Add(time.Duration(expires) * time.Second),
			Source:          req.Source(),
			NAT:             behindNAT(req, c.Address),
			Transport:       lowerTransport(req.Transport()),
			Path:            path,
			UserAgent:       userAgent,
			Instance:        instance,
			RegID:           regID,
			Updated:         now,
			Node:            node,
			Flow:            flow,
		})
	}
	return u, chain.Done, ""
}

// ok builds the 200 OK listing every binding with its remaining time.
func (r *Registrar) ok(req *sip.Request, bindings []store.Binding, now time.Time) *sip.Response {
	res := reply.New(req, 200, "OK")
	for _, b := range bindings {
		var v strings.Builder
		v.Grow(len(b.Contact) + len(b.Params) + 24)
		v.WriteByte('<')
		v.WriteString(b.Contact)
		v.WriteString(">;expires=")
		v.WriteString(strconv.Itoa(remaining(b.Expires, now)))
		if b.Q >= 0 {
			v.WriteString(";q=")
			v.WriteString(formatQ(b.Q))
		}
		if b.Params != "" {
			v.WriteByte(';')
			v.WriteString(b.Params)
		}
		res.AppendHeader(sip.NewHeader("Contact", v.String()))
	}
	for _, h := range chain.Headers(req, "Path") { // RFC 3327 §5.3: echo the Path
		res.AppendHeader(sip.NewHeader("Path", h.Value()))
	}
	seen := map[string]bool{}
	var buf [4]sip.Header
	for _, h := range chain.AppendHeaders(buf[:0], req, "Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			continue
		}
		if pn, ok := readPush(c.Address); ok && (pn.query || r.policy.Push.served(pn.provider)) {
			for _, fc := range r.policy.Push.featureCaps(pn) {
				if !seen[fc] {
					seen[fc] = true
					res.AppendHeader(sip.NewHeader("Feature-Caps", fc))
				}
			}
		}
	}
	if outbound(req) {
		// RFC 5626 §6: the flow is kept (sori is the edge proxy: the phone's
		// binding is reached over the connection or address it registered
		// from), and the phone learns how often to keep it alive.
		ft := r.policy.FlowTimer
		if ft <= 0 {
			ft = 120 * time.Second
		}
		res.AppendHeader(sip.NewHeader("Require", "outbound"))
		res.AppendHeader(sip.NewHeader("Flow-Timer", strconv.Itoa(int(ft/time.Second))))
	}
	res.AppendHeader(sip.NewHeader("Date", httpDate(now)))
	return res
}

type dateValue struct {
	sec int64
	s   string
}

var lastDate atomic.Pointer[dateValue]

// httpDate is now.UTC().Format(http.TimeFormat), formatted once per second
// and shared by every 200 OK of that second (BenchmarkRegisterMemory,
// 2026-12-04: one alloc/op fewer; README "Performance").
func httpDate(now time.Time) string {
	sec := now.Unix()
	if d := lastDate.Load(); d != nil && d.sec == sec {
		return d.s
	}
	s := now.UTC().Format(http.TimeFormat)
	lastDate.Store(&dateValue{sec: sec, s: s})
	return s
}

func remaining(exp, now time.Time) int {
	return max(1, int((exp.Sub(now)+time.Second/2)/time.Second))
}

func callID(req *sip.Request) string {
	if h := req.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

// outbound: a REGISTER using SIP Outbound (RFC 5626 §4.2): Supported:
// outbound and a Contact with reg-id (and +sip.instance).
func outbound(req *sip.Request) bool {
	supported := false
	// sipgo's GetHeaders lowercased every header name on each call, 4
	// allocs/op of BenchmarkRegisterMemory (81 → 77, 2026-12-04; README
	// "Performance"); the same ASCII-only comparison, without them.
	for _, h := range req.Headers() {
		if !asciiEqualFold(h.Name(), "Supported") {
			continue
		}
		for _, tag := range strings.Split(h.Value(), ",") {
			supported = supported || strings.EqualFold(strings.TrimSpace(tag), "outbound")
		}
	}
	if !supported {
		return false
	}
	for _, h := range chain.Headers(req, "Contact") {
		if c, ok := h.(*sip.ContactHeader); ok && c.Params.Has("reg-id") && c.Params.Has("+sip.instance") {
			return true
		}
	}
	return false
}

// asciiEqualFold is sipgo's HeaderToLower(a) == HeaderToLower(b): only A-Z
// fold.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// lowerTransport is strings.ToLower(t) without its allocation for the
// transports sipgo names in capitals (BenchmarkRegisterMemory, 2026-12-04:
// 73 → 72 allocs/op; README "Performance").
func lowerTransport(t string) string {
	switch t {
	case "UDP":
		return "udp"
	case "TCP":
		return "tcp"
	case "TLS":
		return "tls"
	case "WS":
		return "ws"
	case "WSS":
		return "wss"
	}
	return strings.ToLower(t)
}
