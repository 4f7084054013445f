package apns

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sori-voice/sori/sip/push"
	"github.com/sori-voice/sori/sip/push/pushtest"
)

const (
	teamID = "TEAM123456"
	keyID  = "KEY7654321"
	device = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
)

// p8 is key as Apple hands it out: PKCS#8 in a PEM "PRIVATE KEY" block.
func p8(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func newKey(t *testing.T, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// clock is the provider's Now, moved by the test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// seen is one request as the fake APNs received it.
type seen struct {
	protoMajor int
	path       string
	header     http.Header
	body       []byte
}

// answer is what the fake APNs says to one request.
type answer struct {
	status int
	reason string
	header map[string]string
}

// fakeAPNs is an HTTP/2 TLS server on 127.0.0.1 that records each request
// and answers them from a script, then 200.
type fakeAPNs struct {
	srv *httptest.Server

	mu      sync.Mutex
	seen    []seen
	answers []answer
}

func newFakeAPNs(t *testing.T, answers ...answer) *fakeAPNs {
	t.Helper()
	f := &fakeAPNs{answers: answers}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.EnableHTTP2 = true
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPNs) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.seen = append(f.seen, seen{r.ProtoMajor, r.URL.EscapedPath(), r.Header.Clone(), body})
	a := answer{status: http.StatusOK}
	if len(f.answers) > 0 {
		a, f.answers = f.answers[0], f.answers[1:]
	}
	f.mu.Unlock()
	w.Header().Set("apns-id", "6E0B1B6E-0000-4000-8000-000000000001")
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(a.status)
	if a.reason != "" {
		_ = json.NewEncoder(w).Encode(map[string]string{"reason": a.reason})
	}
}

func (f *fakeAPNs) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.seen...)
}

func (f *fakeAPNs) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(f.srv.Certificate())
	return pool
}

// setup is a provider for f whose backoff waits are recorded, not spent.
type setup struct {
	p     *Provider
	key   *ecdsa.PrivateKey
	clock *clock
	waits pushtest.Waits
}

func newSetup(t *testing.T, f *fakeAPNs, edit func(*Config)) *setup {
	t.Helper()
	s := &setup{key: newKey(t, elliptic.P256()), clock: &clock{now: time.Unix(1_770_000_000, 0)}}
	cfg := Config{
		URL:         f.srv.URL,
		TeamID:      teamID,
		KeyID:       keyID,
		Key:         p8(t, s.key),
		Topic:       "org.example.phone",
		RootCAs:     f.roots(),
		MaxAttempts: 3,
		Backoff:     s.waits.Backoff(push.Backoff{}),
		Now:         s.clock.Now,
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.p = p
	return s
}

// verify checks the request's provider token and returns its claims.
func (s *setup) verify(t *testing.T, r seen) (token string, claims jwt.MapClaims) {
	t.Helper()
	bearer, ok := strings.CutPrefix(r.header.Get("authorization"), "bearer ")
	if !ok {
		t.Fatalf("authorization %q is not a bearer token", r.header.Get("authorization"))
	}
	parsed, err := jwt.Parse(bearer, func(tok *jwt.Token) (any, error) {
		if tok.Header["kid"] != keyID {
			t.Errorf("kid %v, want %s", tok.Header["kid"], keyID)
		}
		return &s.key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(s.clock.Now))
	if err != nil {
		t.Fatalf("the provider token does not verify with the key's public half: %v", err)
	}
	claims = parsed.Claims.(jwt.MapClaims)
	if claims["iss"] != teamID {
		t.Errorf("iss %v, want %s", claims["iss"], teamID)
	}
	return bearer, claims
}

func notification() push.Notification {
	return push.Notification{
		Provider: "apns",
		PRID:     device,
		Param:    teamID + ".org.example.phone.voip",
		CallID:   "a84b4c76e66710@pc33.example.com",
		From:     `"Bob" <sip:bob@example.com>;tag=1928301774`,
		To:       "<sip:alice@example.com>",
		Method:   "INVITE",
		Expires:  30 * time.Second,
	}
}

func TestPushRequest(t *testing.T) {
	for _, tc := range []struct {
		name      string
		topic     string // Config.Topic
		param     string // the binding's pn-param
		wantTopic string
	}{
		{"the topic from pn-param", "org.example.phone", teamID + ".org.example.phone.voip", "org.example.phone.voip"},
		{"another app of the team", "org.example.phone", teamID + ".org.example.other.voip", "org.example.other.voip"},
		{"pn-param without .voip", "org.example.phone", teamID + ".org.example.other", "org.example.other.voip"},
		{"no pn-param", "org.example.phone", "", "org.example.phone.voip"},
		{"configured with .voip", "org.example.phone.voip", "", "org.example.phone.voip"},
		{"another team's pn-param", "org.example.phone", "OTHERTEAM1.org.example.other.voip", "org.example.phone.voip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPNs(t)
			s := newSetup(t, f, func(c *Config) { c.Topic = tc.topic })
			n := notification()
			n.Param = tc.param
			if err := s.p.Push(context.Background(), n); err != nil {
				t.Fatal(err)
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.protoMajor != 2 {
				t.Errorf("HTTP/%d, want HTTP/2", r.protoMajor)
			}
			if want := "/3/device/" + device; r.path != want {
				t.Errorf("path %q, want %q", r.path, want)
			}
			for name, want := range map[string]string{
				"apns-push-type":  "voip",
				"apns-topic":      tc.wantTopic,
				"apns-expiration": "0",
				"apns-priority":   "10",
				"content-type":    "application/json",
			} {
				if got := r.header.Get(name); got != want {
					t.Errorf("%s: %q, want %q", name, got, want)
				}
			}
			_, claims := s.verify(t, r)
			if iat, _ := claims["iat"].(float64); int64(iat) != s.clock.Now().Unix() {
				t.Errorf("iat %v, want %d", claims["iat"], s.clock.Now().Unix())
			}
			var body map[string]any
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("body %q: %v", r.body, err)
			}
			want := map[string]any{
				"aps":     map[string]any{},
				"call-id": n.CallID,
				"from":    n.From,
				"to":      n.To,
				"method":  "INVITE",
			}
			if len(body) != len(want) {
				t.Errorf("body %s, want exactly %v", r.body, want)
			}
			for k, v := range want {
				if got, _ := json.Marshal(body[k]); string(got) != mustJSON(t, v) {
					t.Errorf("body %s: %s is %s, want %s", r.body, k, got, mustJSON(t, v))
				}
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestProviderTokenReusedThenRefreshed(t *testing.T) {
	f := newFakeAPNs(t)
	s := newSetup(t, f, nil)
	start := s.clock.Now()
	steps := []struct {
		advance time.Duration
		fresh   bool // a new token is expected
	}{
		{0, true},
		{0, false},
		{10 * time.Minute, false},
		{TokenRefresh - 10*time.Minute - time.Second, false}, // just younger than TokenRefresh
		{time.Second, true},      // TokenRefresh old: replaced
		{5 * time.Minute, false}, // the new one is kept
	}
	var last string
	var issued time.Time
	for i, step := range steps {
		s.clock.advance(step.advance)
		if err := s.p.Push(context.Background(), notification()); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
		reqs := f.requests()
		token, claims := s.verify(t, reqs[len(reqs)-1])
		if step.fresh {
			issued = s.clock.Now()
		}
		if (token != last) != step.fresh {
			t.Errorf("push %d at +%s: new token %v, want %v", i, s.clock.Now().Sub(start), token != last, step.fresh)
		}
		if iat, _ := claims["iat"].(float64); int64(iat) != issued.Unix() {
			t.Errorf("push %d: iat %v, want %d", i, claims["iat"], issued.Unix())
		}
		last = token
	}
}

func TestAnswers(t *testing.T) {
	for _, tc := range []struct {
		name          string
		answers       []answer
		wantErr       bool
		unregistered  bool
		wantRequests  int
		wantWaits     []time.Duration // -1 is the backoff's delay
		wantText      []string        // in the error
		renewedAtSend int             // the request (1-based) that carries a new token; 0 none
	}{
		{name: "200", wantRequests: 1},
		{name: "410 Unregistered", answers: []answer{{status: 410, reason: "Unregistered"}},
			wantErr: true, unregistered: true, wantRequests: 1, wantText: []string{"apns", "410", "Unregistered", "6E0B1B6E"}},
		{name: "400 BadDeviceToken", answers: []answer{{status: 400, reason: "BadDeviceToken"}},
			wantErr: true, unregistered: true, wantRequests: 1, wantText: []string{"400", "BadDeviceToken"}},
		{name: "400 DeviceTokenNotForTopic is final but keeps the binding", answers: []answer{{status: 400, reason: "DeviceTokenNotForTopic"}},
			wantErr: true, wantRequests: 1, wantText: []string{"DeviceTokenNotForTopic"}},
		{name: "429 then 200", answers: []answer{{status: 429, reason: "TooManyRequests"}},
			wantRequests: 2, wantWaits: []time.Duration{-1}},
		{name: "503 with Retry-After then 200", answers: []answer{{status: 503, reason: "ServiceUnavailable", header: map[string]string{"Retry-After": "7"}}},
			wantRequests: 2, wantWaits: []time.Duration{7 * time.Second}},
		{name: "500 every time", answers: []answer{{status: 500, reason: "InternalServerError"}, {status: 500, reason: "InternalServerError"}, {status: 500, reason: "InternalServerError"}},
			wantErr: true, wantRequests: 3, wantWaits: []time.Duration{-1, -1}, wantText: []string{"500", "InternalServerError", "after 3 attempts"}},
		{name: "403 ExpiredProviderToken gets a new token", answers: []answer{{status: 403, reason: "ExpiredProviderToken"}},
			wantRequests: 2, renewedAtSend: 2},
		{name: "403 InvalidProviderToken gets a new token", answers: []answer{{status: 403, reason: "InvalidProviderToken"}},
			wantRequests: 2, renewedAtSend: 2},
		{name: "a token is renewed once a push", answers: []answer{{status: 403, reason: "ExpiredProviderToken"}, {status: 403, reason: "ExpiredProviderToken"}},
			wantErr: true, wantRequests: 2, renewedAtSend: 2, wantText: []string{"403", "ExpiredProviderToken"}},
		{name: "403 for another reason is final", answers: []answer{{status: 403, reason: "BadCertificateEnvironment"}},
			wantErr: true, wantRequests: 1, wantText: []string{"BadCertificateEnvironment"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPNs(t, tc.answers...)
			s := newSetup(t, f, nil)
			err := s.p.Push(context.Background(), notification())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want an error: %v", err, tc.wantErr)
			}
			if errors.Is(err, push.ErrUnregistered) != tc.unregistered {
				t.Errorf("errors.Is(%v, ErrUnregistered) = %v, want %v", err, !tc.unregistered, tc.unregistered)
			}
			var pe *push.Error
			if err != nil && !errors.As(err, &pe) {
				t.Errorf("err %T is not a *push.Error", err)
			}
			for _, s := range tc.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q does not say %q", err, s)
				}
			}
			reqs := f.requests()
			if len(reqs) != tc.wantRequests {
				t.Fatalf("%d requests, want %d", len(reqs), tc.wantRequests)
			}
			for i := 1; i < len(reqs); i++ {
				prev, _ := s.verify(t, reqs[i-1])
				cur, _ := s.verify(t, reqs[i])
				if renewed := prev != cur; renewed != (i+1 == tc.renewedAtSend) {
					t.Errorf("request %d: new token %v, want %v", i+1, renewed, i+1 == tc.renewedAtSend)
				}
			}
			s.waits.Check(t, tc.wantWaits, func(i int, d time.Duration) bool { return d >= push.DefaultBase/2 && d <= push.DefaultBase<<i })
		})
	}
}

func TestCancelStopsTheRetryWait(t *testing.T) {
	f := newFakeAPNs(t, answer{status: 500, reason: "InternalServerError"})
	waiting := make(chan struct{})
	s := newSetup(t, f, func(c *Config) {
		c.MaxAttempts = 5
		// A real wait, so long that only the cancel can end it.
		c.Backoff = push.Backoff{Wait: func(ctx context.Context, d time.Duration) error {
			close(waiting)
			t := time.NewTimer(time.Hour)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.p.Push(ctx, notification()) }()
	<-waiting
	cancel()
	err := <-done
	var pe *push.Error
	if !errors.Is(err, context.Canceled) || !errors.As(err, &pe) || pe.Status != 500 {
		t.Errorf("err = %v, want the 500 and context.Canceled", err)
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestNewRefuses(t *testing.T) {
	good := p8(t, newKey(t, elliptic.P256()))
	p384 := p8(t, newKey(t, elliptic.P384()))
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // in the error
	}{
		{"no team", func(c *Config) { c.TeamID = "" }, "TeamID"},
		{"no key id", func(c *Config) { c.KeyID = "" }, "KeyID"},
		{"no key", func(c *Config) { c.Key = nil }, "Key"},
		{"a key that is not PEM", func(c *Config) { c.Key = []byte("not a key") }, "Key"},
		{"a P-384 key", func(c *Config) { c.Key = p384 }, "P-256"},
		{"no topic", func(c *Config) { c.Topic = " " }, "Topic"},
		{"plain HTTP", func(c *Config) { c.URL = "http://api.push.apple.com" }, "URL"},
		{"a URL with a path", func(c *Config) { c.URL = "https://api.push.apple.com/3/device" }, "URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{TeamID: teamID, KeyID: keyID, Key: good, Topic: "org.example.phone"}
			tc.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error naming %s", err, tc.want)
			}
		})
	}
	p, err := New(Config{TeamID: teamID, KeyID: keyID, Key: good, Topic: "org.example.phone"})
	if err != nil {
		t.Fatal(err)
	}
	if p.endpoint != ProductionURL || p.topic != "org.example.phone.voip" || p.Name() != "apns" {
		t.Errorf("defaults: endpoint %s, topic %s, name %s", p.endpoint, p.topic, p.Name())
	}
}

func TestNoDeviceToken(t *testing.T) {
	f := newFakeAPNs(t)
	s := newSetup(t, f, nil)
	n := notification()
	n.PRID = ""
	if err := s.p.Push(context.Background(), n); err == nil || !strings.Contains(err.Error(), "pn-prid") {
		t.Errorf("err = %v, want one naming pn-prid", err)
	}
	if len(f.requests()) != 0 {
		t.Error("a push without a device token was sent")
	}
}
