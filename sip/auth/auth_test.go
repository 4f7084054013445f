package auth

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	client "github.com/icholy/digest"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/chain/chaintest"
	"github.com/sori-voice/sori/sip/digest"
	"github.com/sori-voice/sori/sip/local"
)

type lookupFunc func(ctx context.Context, name string) (store.Subscriber, error)

func (f lookupFunc) Subscriber(ctx context.Context, name string) (store.Subscriber, error) {
	return f(ctx, name)
}

func newAuth(t *testing.T, users Lookup) *Authenticator {
	t.Helper()
	d, err := digest.New("sori.test", []string{"MD5", "SHA-256"}, []byte("auth-test-secret-0123"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return New(d, users, nil)
}

func credentials(t *testing.T, challenge, method, user, password string) string {
	t.Helper()
	uri := "sip:bob@sori.test"
	if method == "REGISTER" {
		uri = "sip:sori.test"
	}
	return credentialsFor(t, challenge, method, uri, user, password)
}

func credentialsFor(t *testing.T, challenge, method, uri, user, password string) string {
	t.Helper()
	ch, err := client.ParseChallenge(challenge)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := client.Digest(ch, client.Options{Method: method, URI: uri, Username: user, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	return cr.String()
}

func TestCheckWWWAndProxy(t *testing.T) {
	a := newAuth(t, Directory{Static: map[string]store.Subscriber{"alice": NewSubscriber("alice", "sori.test", "pw")}})
	for _, kind := range []Kind{WWW, Proxy} {
		req := chaintest.Request(t, chaintest.Raw("INVITE", "sip:bob@sori.test"))
		out, err := a.Check(context.Background(), req, kind)
		if err != nil || out.Present {
			t.Fatalf("no credentials: %+v %v", out, err)
		}
		res := a.Challenge(req, kind, false)
		wantCode, hdr, credHdr := 401, "WWW-Authenticate", "Authorization"
		if kind == Proxy {
			wantCode, hdr, credHdr = 407, "Proxy-Authenticate", "Proxy-Authorization"
		}
		chs := res.GetHeaders(hdr)
		if res.StatusCode != wantCode || len(chs) != 2 {
			t.Fatalf("challenge %d with %d %s", res.StatusCode, len(chs), hdr)
		}
		cred := credentials(t, chs[1].Value(), "INVITE", "alice", "pw") // answer the SHA-256 one
		req = chaintest.Request(t, chaintest.Raw("INVITE", "sip:bob@sori.test", credHdr+": "+cred))
		out, err = a.Check(context.Background(), req, kind)
		if err != nil || out.Result != digest.OK || out.User != "alice" {
			t.Fatalf("kind %d: %+v %v", kind, out, err)
		}
		// The other header is not looked at.
		other := "Proxy-Authorization"
		if kind == Proxy {
			other = "Authorization"
		}
		req = chaintest.Request(t, chaintest.Raw("INVITE", "sip:bob@sori.test", other+": "+cred))
		if out, _ := a.Check(context.Background(), req, kind); out.Present {
			t.Fatalf("kind %d read %s", kind, other)
		}
	}
}

func TestCheckStoreErrorIsAnErrorNotAFailure(t *testing.T) {
	a := newAuth(t, lookupFunc(func(context.Context, string) (store.Subscriber, error) {
		return store.Subscriber{}, errors.New("redis: connection refused")
	}))
	req := chaintest.Request(t, chaintest.Raw("REGISTER", "sip:sori.test"))
	ch := a.Challenge(req, WWW, false).GetHeader("WWW-Authenticate").Value()
	req = chaintest.Request(t, chaintest.Raw("REGISTER", "sip:sori.test", "Authorization: "+credentials(t, ch, "REGISTER", "alice", "pw")))
	if _, err := a.Check(context.Background(), req, WWW); err == nil {
		t.Fatal("store error swallowed")
	}
}

func TestDirectoryPrefersStaticUsers(t *testing.T) {
	calls := 0
	d := Directory{
		Static: map[string]store.Subscriber{"alice": NewSubscriber("alice", "sori.test", "static")},
		Store: lookupFunc(func(_ context.Context, name string) (store.Subscriber, error) {
			calls++
			if name == "carol" {
				return NewSubscriber("carol", "sori.test", "stored"), nil
			}
			return store.Subscriber{}, store.ErrNotFound
		}),
	}
	if u, err := d.Subscriber(context.Background(), "alice"); err != nil || u.HA1MD5 != NewSubscriber("alice", "sori.test", "static").HA1MD5 || calls != 0 {
		t.Fatalf("alice: %+v %v calls=%d", u, err, calls)
	}
	if u, err := d.Subscriber(context.Background(), "carol"); err != nil || u.Name != "carol" {
		t.Fatalf("carol: %+v %v", u, err)
	}
	if _, err := d.Subscriber(context.Background(), "mallory"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("mallory: %v", err)
	}
}

func TestNewSubscriberKeepsNoPassword(t *testing.T) {
	s := NewSubscriber("alice", "sori.test", "secret-pw")
	if len(s.HA1MD5) != 32 || len(s.HA1SHA256) != 64 || strings.Contains(s.HA1MD5+s.HA1SHA256, "secret-pw") {
		t.Fatalf("%+v", s)
	}
	if s.HA1MD5 == NewSubscriber("alice", "other.realm", "secret-pw").HA1MD5 {
		t.Fatal("HA1 does not depend on the realm")
	}
}

// SameURI with this server's own names: a digest-uri naming the server
// (SIPp's sip:IP:PORT) stands for any Request-URI at it, one naming another
// host never does.
func TestSameURIWithSelf(t *testing.T) {
	self := local.New("sori.test", "127.0.0.1:5060")
	for _, c := range []struct {
		digest, ruri string
		want         bool
	}{
		{"sip:127.0.0.1:5060", "sip:sori.test", true},
		{"sip:127.0.0.1:5060", "sip:bob@sori.test", true},
		{"sip:bob@127.0.0.1", "sip:bob@sori.test", true},
		{"sip:carol@127.0.0.1:5060", "sip:bob@sori.test", false},
		{"sip:evil.example.org", "sip:sori.test", false},
		{"sip:127.0.0.1:5070", "sip:sori.test", false},
		{"sip:127.0.0.1:5060", "sip:bob@elsewhere.example", false},
		{"sip:bob@elsewhere.example", "sip:bob@elsewhere.example;transport=tcp", true},
		{"tel:+15551234", "tel:+15551234", true},
		{"tel:+15551234", "tel:+15559999", false},
	} {
		var ruri sip.Uri
		if err := sip.ParseUri(c.ruri, &ruri); err != nil {
			t.Fatal(err)
		}
		if got := SameURI(c.digest, ruri, self); got != c.want {
			t.Errorf("SameURI(%s, %s) = %v", c.digest, c.ruri, got)
		}
	}
}

// Credentials computed for another resource than the Request-URI are
// refused as BadURI, whatever their response, before any lookup.
func TestCheckDigestURIMustBeTheRequestURI(t *testing.T) {
	lookups := 0
	a := newAuth(t, lookupFunc(func(context.Context, string) (store.Subscriber, error) {
		lookups++
		return NewSubscriber("alice", "sori.test", "pw"), nil
	}))
	for _, c := range []struct {
		ruri, uri string
		want      digest.Result
	}{
		{"sip:sori.test", "sip:sori.test", digest.OK},
		{"sip:sori.test", "sip:evil.example.org", digest.BadURI},
		{"sip:sori.test;transport=tcp", "sip:sori.test", digest.OK},
		{"sip:sori.test", "sip:SORI.test:5060", digest.OK},
		{"sip:sori.test", "sip:sori.test:5070", digest.BadURI},
		{"sip:sori.test", "sip:other.example", digest.BadURI},
		{"sip:bob@sori.test", "sip:carol@sori.test", digest.BadURI},
		{"sip:bob@sori.test", "sip:bob@sori.test;user=phone", digest.OK},
		{"sip:sori.test", "not a uri", digest.BadURI},
	} {
		req := chaintest.Request(t, chaintest.Raw("REGISTER", c.ruri))
		ch := a.Challenge(req, WWW, false).GetHeader("WWW-Authenticate").Value()
		req = chaintest.Request(t, chaintest.Raw("REGISTER", c.ruri, "Authorization: "+credentialsFor(t, ch, "REGISTER", c.uri, "alice", "pw")))
		before := lookups
		out, err := a.Check(context.Background(), req, WWW)
		if err != nil || !out.Present || out.Result != c.want {
			t.Errorf("R-URI %s, digest uri %s: %+v %v, want %v", c.ruri, c.uri, out, err, c.want)
		}
		if c.want == digest.BadURI && lookups != before {
			t.Errorf("digest uri %s: the user was looked up", c.uri)
		}
	}
}

type failures []string

func (f *failures) AuthFailed(src netip.Addr, user string) { *f = append(*f, src.String()+" "+user) }

// Only a wrong password or an unknown user is reported, with the source:
// not a request without credentials, a stale nonce or a replay.
func TestFailuresAreReportedWithTheSource(t *testing.T) {
	d, err := digest.New("sori.test", []string{"MD5"}, []byte("auth-test-secret-0123"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	d.SetClock(func() time.Time { return now })
	var got failures
	a := New(d, Directory{Static: map[string]store.Subscriber{"alice": NewSubscriber("alice", "sori.test", "pw")}}, nil, WithFailures(&got))
	challenge := a.Challenge(chaintest.Request(t, chaintest.Raw("REGISTER", "sip:sori.test")), WWW, false).GetHeader("WWW-Authenticate").Value()
	check := func(user, password string) digest.Result {
		req := chaintest.Request(t, chaintest.Raw("REGISTER", "sip:sori.test", "Authorization: "+credentials(t, challenge, "REGISTER", user, password)))
		req.SetSource("192.0.2.5:5062")
		out, err := a.Check(context.Background(), req, WWW)
		if err != nil {
			t.Fatal(err)
		}
		return out.Result
	}
	tests := []struct {
		name           string
		user, password string
		after          time.Duration
		want           digest.Result
		reported       int
	}{
		{"right password", "alice", "pw", 0, digest.OK, 0},
		{"wrong password", "alice", "guess", 0, digest.Mismatch, 1},
		{"unknown user", "mallory", "x", 0, digest.Mismatch, 2},
		{"stale nonce", "alice", "pw", 2 * time.Minute, digest.Stale, 2},
	}
	for _, tt := range tests {
		now = now.Add(tt.after)
		if r := check(tt.user, tt.password); r != tt.want || len(got) != tt.reported {
			t.Fatalf("%s: %v with %d reports (%v), want %v with %d", tt.name, r, len(got), got, tt.want, tt.reported)
		}
	}
	if got[0] != "192.0.2.5 alice" || got[1] != "192.0.2.5 mallory" {
		t.Fatalf("reports %v", got)
	}
	// Without credentials nothing is reported.
	if _, err := a.Check(context.Background(), chaintest.Request(t, chaintest.Raw("REGISTER", "sip:sori.test")), WWW); err != nil || len(got) != 2 {
		t.Fatalf("a request without credentials was reported: %v", got)
	}
}

func TestPlainSIPURI(t *testing.T) {
	for _, c := range []struct {
		in         string
		ok         bool
		user, host string
		port       int
	}{
		{"sip:sori.test", true, "", "sori.test", 0},
		{"sip:alice@sori.test:5060;transport=tcp", true, "alice", "sori.test", 5060},
		{"sips:127.0.0.1:5061", true, "", "127.0.0.1", 5061},
		{"sip:[::1]:5060", false, "", "", 0},
		{"sip:a%40b@sori.test", false, "", "", 0},
		{"sip:alice:pw@sori.test", false, "", "", 0},
		{"sip:sori.test:port", false, "", "", 0},
		{"tel:+1555", false, "", "", 0},
		{"sip:", false, "", "", 0},
	} {
		u, ok := plainSIPURI(c.in)
		if ok != c.ok || ok && (u.User != c.user || u.Host != c.host || u.Port != c.port) {
			t.Errorf("%s: %+v %v", c.in, u, ok)
		}
		if ok { // agrees with sipgo's parser
			var want sip.Uri
			if err := sip.ParseUri(c.in, &want); err != nil || want.User != u.User || want.Host != u.Host || want.Port != u.Port {
				t.Errorf("%s: sipgo reads %+v (%v)", c.in, want, err)
			}
		}
	}
}
