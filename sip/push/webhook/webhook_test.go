package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/push"
	"github.com/sori-voice/sori/sip/push/pushtest"
)

var secret = []byte("the endpoint's shared secret")

// seen is one request as the endpoint received it.
type seen struct {
	contentType, timestamp, signature string
	body                              []byte
}

type answer struct {
	status int
	body   string
	header map[string]string
}

// endpoint is the operator's webhook: it records each request and answers
// from a script, then 204.
type endpoint struct {
	srv *httptest.Server

	mu      sync.Mutex
	seen    []seen
	answers []answer
}

func newEndpoint(t *testing.T, answers ...answer) *endpoint {
	e := &endpoint{answers: answers}
	e.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/push" {
			t.Errorf("%s %s, want POST /push", r.Method, r.URL.Path)
		}
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		e.seen = append(e.seen, seen{r.Header.Get("Content-Type"), r.Header.Get(TimestampHeader), r.Header.Get(SignatureHeader), body})
		a := answer{status: http.StatusNoContent}
		if len(e.answers) > 0 {
			a, e.answers = e.answers[0], e.answers[1:]
		}
		e.mu.Unlock()
		for k, v := range a.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *endpoint) requests() []seen {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]seen(nil), e.seen...)
}

// verified is what an endpoint does with a request: the signature over
// timestamp "." body, computed here independently of Sign.
func verified(r seen) bool {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(r.timestamp + "." + string(r.body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(r.signature), []byte(want))
}

// ticking is a clock that moves a second each time it is read.
type ticking struct {
	mu  sync.Mutex
	now time.Time
}

func (c *ticking) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

type setup struct {
	p     *Provider
	waits pushtest.Waits
}

func newSetup(t *testing.T, e *endpoint, edit func(*Config)) *setup {
	t.Helper()
	s := &setup{}
	roots := x509.NewCertPool()
	roots.AddCert(e.srv.Certificate())
	clock := &ticking{now: time.Unix(1_770_000_000, 0)}
	cfg := Config{
		URL:         e.srv.URL + "/push",
		Name:        "relay",
		Secret:      secret,
		RootCAs:     roots,
		MaxAttempts: 3,
		Backoff:     s.waits.Backoff(push.Backoff{Base: time.Millisecond, Max: 4 * time.Millisecond}),
		Now:         clock.Now,
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

func notification() push.Notification {
	return push.Notification{
		Provider: "relay",
		PRID:     "device-token-1",
		Param:    "org.example.phone",
		CallID:   "a84b4c76e66710@pc33.example.com",
		From:     `"Bob" <sip:bob@example.com>;tag=1928301774`,
		To:       "<sip:alice@example.com>",
		Method:   "INVITE",
		Expires:  30 * time.Second,
	}
}

func TestPushRequest(t *testing.T) {
	e := newEndpoint(t)
	s := newSetup(t, e, nil)
	n := notification()
	if err := s.p.Push(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	reqs := e.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.contentType != "application/json" {
		t.Errorf("Content-Type %q", r.contentType)
	}
	if r.timestamp != strconv.FormatInt(1_770_000_001, 10) {
		t.Errorf("%s %q, want the clock's Unix seconds", TimestampHeader, r.timestamp)
	}
	if !verified(r) {
		t.Errorf("%s %q does not verify over %s.%s", SignatureHeader, r.signature, r.timestamp, r.body)
	}
	if r.signature != Sign(secret, r.timestamp, r.body) {
		t.Errorf("Sign disagrees with the signature sent")
	}
	var got map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	want := map[string]any{
		"provider": "relay", "prid": n.PRID, "param": n.Param, "call_id": n.CallID,
		"from": n.From, "to": n.To, "method": "INVITE", "expires": float64(30),
	}
	if len(got) != len(want) {
		t.Errorf("body %s, want exactly %v", r.body, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("body %s: %s is %v, want %v", r.body, k, got[k], v)
		}
	}
	if s.p.Name() != "relay" {
		t.Errorf("Name %q, want relay", s.p.Name())
	}
}

func TestTamperedBodyDoesNotVerify(t *testing.T) {
	e := newEndpoint(t)
	s := newSetup(t, e, nil)
	if err := s.p.Push(context.Background(), notification()); err != nil {
		t.Fatal(err)
	}
	r := e.requests()[0]
	for _, tampered := range []seen{
		{timestamp: r.timestamp, signature: r.signature, body: []byte(strings.Replace(string(r.body), "INVITE", "MESSAGE", 1))},
		{timestamp: "1770009999", signature: r.signature, body: r.body}, // a replay with a fresh timestamp
	} {
		if verified(tampered) {
			t.Errorf("a changed request verifies: %s %s", tampered.timestamp, tampered.body)
		}
	}
}

func TestUnsigned(t *testing.T) {
	e := newEndpoint(t)
	s := newSetup(t, e, func(c *Config) { c.Secret = nil })
	if err := s.p.Push(context.Background(), notification()); err != nil {
		t.Fatal(err)
	}
	if r := e.requests()[0]; r.signature != "" || r.timestamp == "" {
		t.Errorf("signature %q, timestamp %q: want no signature, a timestamp", r.signature, r.timestamp)
	}
}

func TestAnswers(t *testing.T) {
	for _, tc := range []struct {
		name         string
		answers      []answer
		wantErr      bool
		unregistered bool
		wantRequests int
		wantWaits    []time.Duration // -1 is the backoff's delay
		wantText     []string
	}{
		{name: "200", answers: []answer{{status: 200, body: "ok"}}, wantRequests: 1},
		{name: "410", answers: []answer{{status: 410, body: "no such device\n"}},
			wantErr: true, unregistered: true, wantRequests: 1, wantText: []string{"relay", "410", "no such device"}},
		{name: "404", answers: []answer{{status: 404}},
			wantErr: true, unregistered: true, wantRequests: 1, wantText: []string{"404", "Not Found"}},
		{name: "503 then 204", answers: []answer{{status: 503}}, wantRequests: 2, wantWaits: []time.Duration{-1}},
		{name: "429 with Retry-After then 204", answers: []answer{{status: 429, header: map[string]string{"Retry-After": "2"}}},
			wantRequests: 2, wantWaits: []time.Duration{2 * time.Second}},
		{name: "502 every time", answers: []answer{{status: 502}, {status: 502}, {status: 502}},
			wantErr: true, wantRequests: 3, wantWaits: []time.Duration{-1, -1}, wantText: []string{"502", "after 3 attempts"}},
		{name: "400 is final", answers: []answer{{status: 400, body: "bad prid"}},
			wantErr: true, wantRequests: 1, wantText: []string{"400", "bad prid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEndpoint(t, tc.answers...)
			s := newSetup(t, e, nil)
			err := s.p.Push(context.Background(), notification())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want an error: %v", err, tc.wantErr)
			}
			if errors.Is(err, push.ErrUnregistered) != tc.unregistered {
				t.Errorf("errors.Is(%v, ErrUnregistered) = %v, want %v", err, !tc.unregistered, tc.unregistered)
			}
			for _, want := range tc.wantText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q does not say %q", err, want)
				}
			}
			reqs := e.requests()
			if len(reqs) != tc.wantRequests {
				t.Fatalf("%d requests, want %d", len(reqs), tc.wantRequests)
			}
			for i, r := range reqs {
				if !verified(r) {
					t.Errorf("request %d does not verify", i+1)
				}
				if i > 0 && r.timestamp == reqs[i-1].timestamp {
					t.Errorf("request %d: the retry kept the timestamp %s", i+1, r.timestamp)
				}
			}
			s.waits.Check(t, tc.wantWaits, func(_ int, d time.Duration) bool { return d > 0 && d <= 4*time.Millisecond })
		})
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct{ name, url string }{
		{"no URL", ""},
		{"plain HTTP", "http://push.example.com/push"},
		{"no host", "https:///push"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(Config{URL: tc.url}); err == nil || !strings.Contains(err.Error(), "URL") {
				t.Errorf("New(%q): %v, want an error naming URL", tc.url, err)
			}
		})
	}
	p, err := New(Config{URL: "https://push.example.com/push"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != DefaultName {
		t.Errorf("Name %q, want %q", p.Name(), DefaultName)
	}
}
