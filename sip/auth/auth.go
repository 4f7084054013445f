// Package auth authenticates SIP requests with digest: it finds the
// credentials in a request, looks the user's HA1 up in the directory and
// builds the 401/407 challenge. REGISTER uses the WWW variant (401), requests
// to the proxy the Proxy variant (407).
package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/digest"
	"github.com/sori-voice/sori/sip/reply"
)

// Kind selects the header pair and status code.
type Kind int

// WWW is for a registrar (401); Proxy for a proxy (407).
const (
	WWW Kind = iota
	Proxy
)

func (k Kind) credentialsHeader() string {
	if k == Proxy {
		return "Proxy-Authorization"
	}
	return "Authorization"
}

func (k Kind) challengeHeader() string {
	if k == Proxy {
		return "Proxy-Authenticate"
	}
	return "WWW-Authenticate"
}

func (k Kind) code() (int, string) {
	if k == Proxy {
		return 407, "Proxy Authentication Required"
	}
	return 401, "Unauthorized"
}

// Lookup finds a subscriber by name (store.ErrNotFound when unknown).
type Lookup interface {
	Subscriber(ctx context.Context, name string) (store.Subscriber, error)
}

// FailureReporter is told of each failed digest: a wrong password or an
// unknown user (digest.Mismatch), from src. Not of a request without
// credentials, nor of a stale nonce.
type FailureReporter interface {
	AuthFailed(src netip.Addr, user string)
}

// Authenticator checks requests against a directory of subscribers.
type Authenticator struct {
	digest   *digest.Authenticator
	users    Lookup
	self     Self
	failures *prometheus.CounterVec
	// reporter, when set, learns of every mismatch (sip/abuse bans
	// password guessers).
	reporter FailureReporter
}

// Self tells which URIs name this server (sip/local.Identity).
type Self interface{ IsLocalURI(u sip.Uri) bool }

// Option configures an Authenticator.
type Option func(*Authenticator)

// WithSelf lets a digest-uri that names this server stand for a
// Request-URI that does too (see SameURI).
func WithSelf(s Self) Option { return func(a *Authenticator) { a.self = s } }

// WithFailures has every digest mismatch reported to r.
func WithFailures(r FailureReporter) Option { return func(a *Authenticator) { a.reporter = r } }

// New returns an Authenticator. reg may be nil (no metrics).
func New(d *digest.Authenticator, users Lookup, reg prometheus.Registerer, opts ...Option) *Authenticator {
	a := &Authenticator{
		digest: d,
		users:  users,
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_auth_failures_total",
			Help: "Digest authentication attempts that did not authenticate, by reason (mismatch: wrong password or unknown user).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(a.failures)
	}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Outcome of Check.
type Outcome struct {
	User   string        // authenticated user; set only when Result is digest.OK
	Result digest.Result // meaningful when Present
	// Present is false when the request carried no credentials for our realm.
	Present bool
}

// Check authenticates req. A non-nil error means the directory could not be
// read (the caller answers 5xx, not a challenge).
func (a *Authenticator) Check(ctx context.Context, req *sip.Request, kind Kind) (Outcome, error) {
	var buf [2]sip.Header
	hs := chain.AppendHeaders(buf[:0], req, kind.credentialsHeader())
	if len(hs) == 0 {
		return Outcome{}, nil
	}
	values := make([]string, len(hs))
	for i, h := range hs {
		values[i] = h.Value()
	}
	c, ok := a.digest.Select(values)
	if !ok {
		for _, v := range values {
			if isDigest(v) {
				if _, err := digest.ParseCredentials(v); err != nil {
					// Digest credentials that do not parse: 400, as Kamailio answers.
					a.failures.WithLabelValues(digest.Malformed.String()).Inc()
					return Outcome{Present: true, Result: digest.Malformed}, nil
				}
			}
		}
		return Outcome{}, nil
	}
	if !SameURI(c.URI, req.Recipient, a.self) {
		// Credentials computed for another resource are refused before
		// they are checked, so they cannot be replayed here (RFC 7616
		// §3.4.6, RFC 2617 §3.2.2.5: 400).
		a.failures.WithLabelValues(digest.BadURI.String()).Inc()
		return Outcome{Present: true, Result: digest.BadURI}, nil
	}
	res, err := a.digest.Verify(string(req.Method), c, func(alg digest.Algorithm) (string, bool, error) {
		u, err := a.users.Subscriber(ctx, c.Username)
		if errors.Is(err, store.ErrNotFound) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("auth: look up %q: %w", c.Username, err)
		}
		if u.Realm != "" && u.Realm != a.digest.Realm() {
			return "", false, nil // hashed for another realm: cannot match
		}
		if alg == digest.SHA256 {
			return u.HA1SHA256, u.HA1SHA256 != "", nil
		}
		return u.HA1MD5, u.HA1MD5 != "", nil
	})
	if err != nil {
		return Outcome{}, err
	}
	if res != digest.OK {
		a.failures.WithLabelValues(res.String()).Inc()
		if res == digest.Mismatch && a.reporter != nil {
			if src, err := netip.ParseAddrPort(req.Source()); err == nil {
				a.reporter.AuthFailed(src.Addr(), c.Username)
			}
		}
		return Outcome{Present: true, Result: res}, nil
	}
	return Outcome{User: c.Username, Result: res, Present: true}, nil
}

func isDigest(v string) bool {
	v = strings.TrimSpace(v)
	return len(v) > 6 && strings.EqualFold(v[:6], "digest") && (v[6] == ' ' || v[6] == '\t')
}

// SameURI reports whether a digest-uri designates the resource the
// Request-URI does (RFC 2617 §3.2.2.5): the same user, and the same host and
// port (a missing port is the scheme's default), parameters aside, as
// phones differ in which ones they copy. Where both name this server (self:
// its domain or one of its addresses), the hosts count as the same; a
// digest-uri without a user that names this server stands for any
// Request-URI at it, as SIPp computes its digest-uri as sip:IP:PORT of the
// server it talks to. A digest-uri that is not a SIP URI must equal the
// Request-URI as written.
func SameURI(digestURI string, ruri sip.Uri, self Self) bool {
	u, ok := plainSIPURI(digestURI)
	if !ok {
		// Parsed into a copy: &u made u escape, a heap Uri on every
		// authenticated request (BenchmarkRegisterMemory, 2026-12-04: 74
		// → 73 allocs/op; README "Performance").
		pu := u
		if err := sip.ParseUri(digestURI, &pu); err != nil || pu.Host == "" {
			return digestURI == ruri.String()
		}
		u = pu
	}
	if !sipScheme(u.Scheme) || !sipScheme(ruri.Scheme) {
		return strings.EqualFold(u.Scheme, ruri.Scheme) && u.User == ruri.User && strings.EqualFold(u.Host, ruri.Host) && u.Port == ruri.Port
	}
	if self != nil && self.IsLocalURI(u) && self.IsLocalURI(ruri) {
		return u.User == "" || u.User == ruri.User
	}
	return u.User == ruri.User && strings.EqualFold(u.Host, ruri.Host) && port(u) == port(ruri)
}

// plainSIPURI reads the usual digest-uri, sip:[user@]host[:port][;params],
// without allocating (it is on every authenticated request); anything less
// plain (escapes, IPv6, headers) is left to sipgo's parser.
func plainSIPURI(s string) (sip.Uri, bool) {
	var u sip.Uri
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || !sipScheme(scheme) || strings.ContainsAny(rest, "%[]?<> \t\"") {
		return u, false
	}
	if i := strings.IndexByte(rest, ';'); i >= 0 {
		rest = rest[:i]
	}
	if at := strings.IndexByte(rest, '@'); at >= 0 {
		u.User, rest = rest[:at], rest[at+1:]
		if strings.ContainsAny(u.User, ":@") { // a password, or two @: not plain
			return u, false
		}
	}
	u.Scheme, u.Host = scheme, rest
	if h, p, ok := strings.Cut(rest, ":"); ok {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return u, false
		}
		u.Host, u.Port = h, n
	}
	return u, u.Host != ""
}

func sipScheme(s string) bool { return strings.EqualFold(s, "sip") || strings.EqualFold(s, "sips") }

func port(u sip.Uri) int {
	switch {
	case u.Port != 0:
		return u.Port
	case strings.EqualFold(u.Scheme, "sips"):
		return 5061
	}
	return 5060
}

// Challenge builds the 401/407 response for req; stale asks the client to
// retry with the new nonce without asking its user again.
func (a *Authenticator) Challenge(req *sip.Request, kind Kind, stale bool) *sip.Response {
	code, reason := kind.code()
	res := reply.New(req, code, reason)
	for _, v := range a.digest.Challenges(stale) {
		res.AppendHeader(sip.NewHeader(kind.challengeHeader(), v))
	}
	return res
}

// NewSubscriber hashes a password into a Subscriber for realm; the password
// itself is not kept.
func NewSubscriber(name, realm, password string) store.Subscriber {
	return store.Subscriber{
		Name:      name,
		Realm:     realm,
		HA1MD5:    digest.HA1(digest.MD5, name, realm, password),
		HA1SHA256: digest.HA1(digest.SHA256, name, realm, password),
	}
}

// Directory finds subscribers in the static configuration first, then in the store.
type Directory struct {
	Static map[string]store.Subscriber
	Store  Lookup
}

// Subscriber implements Lookup.
func (d Directory) Subscriber(ctx context.Context, name string) (store.Subscriber, error) {
	if u, ok := d.Static[name]; ok {
		return u, nil
	}
	if d.Store == nil {
		return store.Subscriber{}, store.ErrNotFound
	}
	return d.Store.Subscriber(ctx, name)
}

// numberLookup is a store that finds subscribers by number.
type numberLookup interface {
	SubscriberByNumber(ctx context.Context, number string) (store.Subscriber, error)
}

// SubscriberByNumber finds who owns an E.164 number: a configured user,
// else one in the store.
func (d Directory) SubscriberByNumber(ctx context.Context, number string) (store.Subscriber, error) {
	for _, u := range d.Static {
		if slices.Contains(u.Numbers, number) {
			return u, nil
		}
	}
	if s, ok := d.Store.(numberLookup); ok {
		return s.SubscriberByNumber(ctx, number)
	}
	return store.Subscriber{}, store.ErrNotFound
}
