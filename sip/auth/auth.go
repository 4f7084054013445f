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

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/digest"
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
	failures *prometheus.CounterVec
	// Failures, when set, learns of every mismatch (sip/abuse bans
	// password guessers).
	Failures FailureReporter
}

// New returns an Authenticator. reg may be nil (no metrics).
func New(d *digest.Authenticator, users Lookup, reg prometheus.Registerer) *Authenticator {
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
	hs := chain.Headers(req, kind.credentialsHeader())
	if len(hs) == 0 {
		return Outcome{}, nil
	}
	values := make([]string, len(hs))
	for i, h := range hs {
		values[i] = h.Value()
	}
	c, ok := a.digest.Select(values)
	if !ok {
		return Outcome{}, nil
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
		if res == digest.Mismatch && a.Failures != nil {
			if src, err := netip.ParseAddrPort(req.Source()); err == nil {
				a.Failures.AuthFailed(src.Addr(), c.Username)
			}
		}
		return Outcome{Present: true, Result: res}, nil
	}
	return Outcome{User: c.Username, Result: res, Present: true}, nil
}

// Challenge builds the 401/407 response for req; stale asks the client to
// retry with the new nonce without asking its user again.
func (a *Authenticator) Challenge(req *sip.Request, kind Kind, stale bool) *sip.Response {
	code, reason := kind.code()
	res := sip.NewResponseFromRequest(req, code, reason, nil)
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
