package fcm

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
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
	project = "sori-test"
	email   = "push@sori-test.iam.gserviceaccount.com"
	device  = "fcm-token:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx"
)

var (
	keyOnce sync.Once
	saKey   *rsa.PrivateKey
)

// serviceKey is the service account's RSA key, made once: RSA keys are slow
// to make under the race detector.
func serviceKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		saKey = k
	})
	return saKey
}

// serviceAccountJSON is a key file as the Firebase console gives it, its
// token_uri the local token endpoint.
func serviceAccountJSON(t *testing.T, tokenURI string) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(serviceKey(t))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     project,
		"private_key_id": "0123456789abcdef",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   email,
		"client_id":      "100000000000000000001",
		"token_uri":      tokenURI,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tokenEndpoint is Google's OAuth2 token endpoint as a service account
// meets it: a JWT-bearer grant whose assertion it verifies.
type tokenEndpoint struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	fetches int
	refuse  bool // answer invalid_grant
}

func newTokenEndpoint(t *testing.T) *tokenEndpoint {
	e := &tokenEndpoint{t: t}
	e.srv = httptest.NewTLSServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *tokenEndpoint) url() string { return e.srv.URL + "/token" }

func (e *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	t := e.t
	if r.Method != http.MethodPost || r.URL.Path != "/token" {
		t.Errorf("token endpoint: %s %s", r.Method, r.URL.Path)
	}
	if err := r.ParseForm(); err != nil {
		t.Errorf("token endpoint: %v", err)
	}
	if g := r.PostForm.Get("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		t.Errorf("grant_type %q", g)
	}
	assertion, err := jwt.Parse(r.PostForm.Get("assertion"), func(*jwt.Token) (any, error) {
		return &serviceKey(t).PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(e.url()), jwt.WithIssuer(email))
	if err != nil {
		t.Errorf("the assertion does not verify with the service account's public key: %v", err)
	} else if scope := assertion.Claims.(jwt.MapClaims)["scope"]; scope != Scope {
		t.Errorf("scope %v, want %s", scope, Scope)
	}
	e.mu.Lock()
	e.fetches++
	n, refuse := e.fetches, e.refuse
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if refuse {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`)
		return
	}
	_, _ = fmt.Fprintf(w, `{"access_token":"at-%d","token_type":"Bearer","expires_in":3600}`, n)
}

func (e *tokenEndpoint) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fetches
}

// seen is one send request as the fake FCM received it.
type seen struct {
	path, authorization string
	body                []byte
}

type answer struct {
	status int
	body   string
	header map[string]string
}

// fakeFCM answers sends from a script, then 200.
type fakeFCM struct {
	srv *httptest.Server

	mu      sync.Mutex
	seen    []seen
	answers []answer
}

func newFakeFCM(t *testing.T, answers ...answer) *fakeFCM {
	f := &fakeFCM{answers: answers}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.EnableHTTP2 = true
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeFCM) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.seen = append(f.seen, seen{r.URL.EscapedPath(), r.Header.Get("Authorization"), body})
	a := answer{status: http.StatusOK, body: `{"name":"projects/sori-test/messages/0:1500415314455276%31bd1c9631bd1c96"}`}
	if len(f.answers) > 0 {
		a, f.answers = f.answers[0], f.answers[1:]
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(a.status)
	_, _ = io.WriteString(w, a.body)
}

func (f *fakeFCM) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.seen...)
}

type setup struct {
	p     *Provider
	fcm   *fakeFCM
	token *tokenEndpoint
	waits pushtest.Waits
}

func newSetup(t *testing.T, answers ...answer) *setup {
	t.Helper()
	s := &setup{fcm: newFakeFCM(t, answers...), token: newTokenEndpoint(t)}
	roots := x509.NewCertPool()
	roots.AddCert(s.fcm.srv.Certificate())
	roots.AddCert(s.token.srv.Certificate())
	p, err := New(Config{
		URL:                s.fcm.srv.URL,
		ServiceAccountJSON: serviceAccountJSON(t, s.token.url()),
		RootCAs:            roots,
		MaxAttempts:        3,
		Backoff:            s.waits.Backoff(push.Backoff{Base: time.Millisecond, Max: 4 * time.Millisecond}),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.p = p
	return s
}

func notification() push.Notification {
	return push.Notification{
		Provider: "fcm",
		PRID:     device,
		Param:    project,
		CallID:   "a84b4c76e66710@pc33.example.com",
		From:     `"Bob" <sip:bob@example.com>;tag=1928301774`,
		To:       "<sip:alice@example.com>",
		Method:   "MESSAGE",
		Expires:  29500 * time.Millisecond,
	}
}

func TestPushRequest(t *testing.T) {
	s := newSetup(t)
	n := notification()
	const pushes = 3
	for i := range pushes {
		if err := s.p.Push(context.Background(), n); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	if got := s.token.count(); got != 1 {
		t.Errorf("%d access tokens fetched for %d pushes, want 1", got, pushes)
	}
	reqs := s.fcm.requests()
	if len(reqs) != pushes {
		t.Fatalf("%d requests, want %d", len(reqs), pushes)
	}
	for i, r := range reqs {
		if want := "/v1/projects/" + project + "/messages:send"; r.path != want {
			t.Errorf("request %d: path %q, want %q", i, r.path, want)
		}
		if r.authorization != "Bearer at-1" {
			t.Errorf("request %d: Authorization %q, want Bearer at-1", i, r.authorization)
		}
		var m struct {
			Message map[string]json.RawMessage `json:"message"`
		}
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatalf("body %s: %v", r.body, err)
		}
		if _, ok := m.Message["notification"]; ok || len(m.Message) != 3 {
			t.Errorf("message %s, want token, android and data only", r.body)
		}
		var token string
		var android map[string]string
		var data map[string]string
		if json.Unmarshal(m.Message["token"], &token) != nil || json.Unmarshal(m.Message["android"], &android) != nil ||
			json.Unmarshal(m.Message["data"], &data) != nil {
			t.Fatalf("body %s is not token, android and string data", r.body)
		}
		if token != device {
			t.Errorf("token %q, want %q", token, device)
		}
		if android["priority"] != "high" || android["ttl"] != "30s" || len(android) != 2 {
			t.Errorf("android %v, want priority high and ttl 30s", android)
		}
		want := map[string]string{"call-id": n.CallID, "sip-from": n.From, "sip-to": n.To, "method": "MESSAGE"}
		if fmt.Sprint(data) != fmt.Sprint(want) {
			t.Errorf("data %v, want %v", data, want)
		}
	}
}

const (
	unregistered = `{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND",
		"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`
	invalidToken = `{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT",
		"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"}]}}`
	invalidTTL = `{"error":{"code":400,"message":"Invalid value at 'message.android.ttl'","status":"INVALID_ARGUMENT",
		"details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.android.ttl","description":"Invalid value"}]}]}}`
	quota = `{"error":{"code":429,"message":"Quota exceeded.","status":"RESOURCE_EXHAUSTED",
		"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"}]}}`
	unavailable     = `{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}`
	internal        = `{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}`
	unauthenticated = `{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`
)

func TestAnswers(t *testing.T) {
	for _, tc := range []struct {
		name         string
		answers      []answer
		wantErr      bool
		unregistered bool
		wantRequests int
		wantTokens   int             // access tokens fetched
		wantAuth     []string        // Authorization of each request
		wantWaits    []time.Duration // -1 is the backoff's delay
		wantText     []string
	}{
		{name: "404 UNREGISTERED", answers: []answer{{status: 404, body: unregistered}},
			wantErr: true, unregistered: true, wantRequests: 1, wantTokens: 1, wantText: []string{"fcm", "404", "UNREGISTERED"}},
		{name: "400 INVALID_ARGUMENT on the token", answers: []answer{{status: 400, body: invalidToken}},
			wantErr: true, unregistered: true, wantRequests: 1, wantTokens: 1, wantText: []string{"400", "INVALID_ARGUMENT"}},
		{name: "400 INVALID_ARGUMENT on another field is final but keeps the binding", answers: []answer{{status: 400, body: invalidTTL}},
			wantErr: true, wantRequests: 1, wantTokens: 1, wantText: []string{"INVALID_ARGUMENT"}},
		{name: "429 QUOTA_EXCEEDED with Retry-After then 200", answers: []answer{{status: 429, body: quota, header: map[string]string{"Retry-After": "1"}}},
			wantRequests: 2, wantTokens: 1, wantWaits: []time.Duration{time.Second}},
		{name: "500 then 200", answers: []answer{{status: 500, body: internal}},
			wantRequests: 2, wantTokens: 1, wantWaits: []time.Duration{-1}},
		{name: "503 UNAVAILABLE every time", answers: []answer{{status: 503, body: unavailable}, {status: 503, body: unavailable}, {status: 503, body: unavailable}},
			wantErr: true, wantRequests: 3, wantTokens: 1, wantWaits: []time.Duration{-1, -1}, wantText: []string{"503", "UNAVAILABLE", "after 3 attempts"}},
		{name: "401 gets a new access token", answers: []answer{{status: 401, body: unauthenticated}},
			wantRequests: 2, wantTokens: 2, wantAuth: []string{"Bearer at-1", "Bearer at-2"}},
		{name: "a second 401 is final", answers: []answer{{status: 401, body: unauthenticated}, {status: 401, body: unauthenticated}},
			wantErr: true, wantRequests: 2, wantTokens: 2, wantText: []string{"401", "UNAUTHENTICATED"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t, tc.answers...)
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
			reqs := s.fcm.requests()
			if len(reqs) != tc.wantRequests {
				t.Errorf("%d requests, want %d", len(reqs), tc.wantRequests)
			}
			for i, want := range tc.wantAuth {
				if i < len(reqs) && reqs[i].authorization != want {
					t.Errorf("request %d: Authorization %q, want %q", i+1, reqs[i].authorization, want)
				}
			}
			if got := s.token.count(); got != tc.wantTokens {
				t.Errorf("%d access tokens fetched, want %d", got, tc.wantTokens)
			}
			s.waits.Check(t, tc.wantWaits, func(_ int, d time.Duration) bool { return d > 0 && d <= 4*time.Millisecond })
		})
	}
}

func TestTokenEndpointRefuses(t *testing.T) {
	s := newSetup(t)
	s.token.mu.Lock()
	s.token.refuse = true
	s.token.mu.Unlock()
	err := s.p.Push(context.Background(), notification())
	var pe *push.Error
	if !errors.As(err, &pe) || pe.Status != http.StatusBadRequest || !strings.Contains(err.Error(), "access token invalid_grant") {
		t.Errorf("err = %v, want the token endpoint's 400 invalid_grant", err)
	}
	if n := len(s.fcm.requests()); n != 0 {
		t.Errorf("%d sends without an access token", n)
	}
	if n := s.token.count(); n != 1 {
		t.Errorf("%d token requests, want 1 (a refused grant is final)", n)
	}
}

func TestNewRefuses(t *testing.T) {
	good := serviceAccountJSON(t, "https://127.0.0.1:1/token")
	edit := func(change func(map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		change(m)
		b, _ := json.Marshal(m)
		return b
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no key file", Config{}, "ServiceAccountJSON"},
		{"not JSON", Config{ServiceAccountJSON: []byte("{")}, "ServiceAccountJSON"},
		{"a user's credentials", Config{ServiceAccountJSON: edit(func(m map[string]any) { m["type"] = "authorized_user" })}, "ServiceAccountJSON"},
		{"no client_email", Config{ServiceAccountJSON: edit(func(m map[string]any) { delete(m, "client_email") })}, "client_email"},
		{"a broken key", Config{ServiceAccountJSON: edit(func(m map[string]any) {
			m["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
		})}, "private_key"},
		{"no project", Config{ServiceAccountJSON: edit(func(m map[string]any) { delete(m, "project_id") })}, "ProjectID"},
		{"plain HTTP", Config{URL: "http://fcm.googleapis.com", ServiceAccountJSON: good}, "URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error naming %s", err, tc.want)
			}
		})
	}
	p, err := New(Config{ServiceAccountJSON: good, ProjectID: "other-project"})
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultURL + "/v1/projects/other-project/messages:send"; p.send != want || p.Name() != "fcm" {
		t.Errorf("send URL %s, want %s", p.send, want)
	}
}

func TestTTL(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", -time.Second: "0s", time.Millisecond: "1s", 30 * time.Second: "30s", 90500 * time.Millisecond: "91s"} {
		if got := ttl(d); got != want {
			t.Errorf("ttl(%s) = %s, want %s", d, got, want)
		}
	}
}
