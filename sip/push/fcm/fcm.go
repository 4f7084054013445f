// Package fcm sends pushes through Firebase Cloud Messaging's HTTP v1 API:
// a POST to /v1/projects/<project ID>/messages:send authorised by an OAuth2
// access token that the project's service account gets with a JWT-bearer
// grant (RFC 7523) at its key file's token_uri. The access token is kept
// until shortly before it expires (oauth2's ReuseTokenSource).
//
// The message is a data message (no notification, so the app, not the
// system, decides what to show), high priority so it wakes a dozing
// phone, its ttl the time sori holds the request:
//
//	{"message":{"token":"<pn-prid>",
//	  "android":{"priority":"high","ttl":"30s"},
//	  "data":{"call-id":"…","sip-from":"…","sip-to":"…","method":"INVITE"}}}
//
// The data keys say sip-from and sip-to because FCM reserves "from".
//
// The binding's pn-param (RFC 8599 §11: the project ID) does not choose the
// project: the service account sends for its own project only. FCM answers
// UNREGISTERED (404) for a token no longer valid, and INVALID_ARGUMENT (400)
// naming the token for one that never was: the error wraps
// push.ErrUnregistered. A 401 gets a new access token and one more try;
// 429 (QUOTA_EXCEEDED), 500 and 503 (UNAVAILABLE) are retried (push.Retry),
// after the Retry-After FCM gives.
package fcm

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"

	"github.com/sori-voice/sori/sip/push"
)

// DefaultURL is FCM's endpoint.
const DefaultURL = "https://fcm.googleapis.com"

// Scope is the OAuth2 scope of FCM's send API.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// Name is the pn-provider value of FCM (RFC 8599 §11).
const Name = "fcm"

// Config configures a Provider.
type Config struct {
	URL string // DefaultURL when empty
	// ServiceAccountJSON is the service account's key file, as the
	// Firebase console gives it.
	ServiceAccountJSON []byte
	ProjectID          string // the key file's project_id when empty

	RootCAs *x509.CertPool // the roots FCM's and the token endpoint's certificates are checked against; nil means the system's
	Client  *http.Client   // nil means push.HTTPClient(RootCAs); it also fetches the access tokens

	MaxAttempts int          // sends of one push, retries included; 0 means push.DefaultMaxAttempts
	Backoff     push.Backoff // the waits between them
}

// Provider sends pushes through FCM. It is safe for concurrent use.
type Provider struct {
	send        string // the messages:send URL
	client      *http.Client
	jwt         *jwt.Config
	tokenCtx    context.Context // carries client to the token fetches
	maxAttempts int
	backoff     push.Backoff

	mu     sync.Mutex
	tokens oauth2.TokenSource
}

var _ push.Provider = (*Provider)(nil)

// New checks cfg and returns its Provider. It fetches no token yet.
func New(cfg Config) (*Provider, error) {
	base := cfg.URL
	if base == "" {
		base = DefaultURL
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("fcm: URL %q is not https://host[:port][/path]", cfg.URL)
	}
	if len(cfg.ServiceAccountJSON) == 0 {
		return nil, errors.New("fcm: ServiceAccountJSON is required")
	}
	var file struct {
		ProjectID  string `json:"project_id"`
		PrivateKey string `json:"private_key"`
		Email      string `json:"client_email"`
	}
	if err := json.Unmarshal(cfg.ServiceAccountJSON, &file); err != nil {
		return nil, fmt.Errorf("fcm: ServiceAccountJSON: %w", err)
	}
	conf, err := google.JWTConfigFromJSON(cfg.ServiceAccountJSON, Scope)
	if err != nil {
		return nil, fmt.Errorf("fcm: ServiceAccountJSON: %w", err)
	}
	if file.Email == "" {
		return nil, errors.New("fcm: ServiceAccountJSON: client_email is missing")
	}
	if err := checkKey(file.PrivateKey); err != nil {
		return nil, fmt.Errorf("fcm: ServiceAccountJSON: private_key: %w", err)
	}
	project := cfg.ProjectID
	if project == "" {
		project = file.ProjectID
	}
	if project == "" {
		return nil, errors.New("fcm: ProjectID is required (the service account's file has no project_id)")
	}
	client := cfg.Client
	if client == nil {
		client = push.HTTPClient(cfg.RootCAs)
	}
	p := &Provider{
		send:        strings.TrimSuffix(u.String(), "/") + "/v1/projects/" + url.PathEscape(project) + "/messages:send",
		client:      client,
		jwt:         conf,
		tokenCtx:    context.WithValue(context.Background(), oauth2.HTTPClient, client),
		maxAttempts: cfg.MaxAttempts,
		backoff:     cfg.Backoff,
	}
	p.tokens = conf.TokenSource(p.tokenCtx)
	return p, nil
}

// checkKey refuses at start what the first token fetch would refuse at the
// first call.
func checkKey(key string) error {
	block, _ := pem.Decode([]byte(key))
	if block == nil {
		return errors.New("not PEM")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return nil
	}
	_, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	return err
}

// Name is "fcm".
func (p *Provider) Name() string { return Name }

type message struct {
	Message struct {
		Token   string `json:"token"`
		Android struct {
			Priority string `json:"priority"`
			TTL      string `json:"ttl"`
		} `json:"android"`
		Data map[string]string `json:"data"`
	} `json:"message"`
}

// Push sends n to n.PRID.
func (p *Provider) Push(ctx context.Context, n push.Notification) error {
	if n.PRID == "" {
		return &push.Error{Provider: Name, Reason: "no device token (pn-prid)"}
	}
	var m message
	m.Message.Token = n.PRID
	m.Message.Android.Priority = "high"
	m.Message.Android.TTL = ttl(n.Expires)
	m.Message.Data = map[string]string{
		"call-id":  n.CallID,
		"sip-from": n.From,
		"sip-to":   n.To,
		"method":   n.Method,
	}
	body, err := json.Marshal(m)
	if err != nil {
		return &push.Error{Provider: Name, Reason: "payload", Err: err}
	}
	renewed := false
	return push.Retry(ctx, p.maxAttempts, p.backoff, func(ctx context.Context) error {
		ts := p.tokenSource()
		err := p.post(ctx, ts, body)
		var pe *push.Error
		if !renewed && errors.As(err, &pe) && pe.Status == http.StatusUnauthorized {
			// The token was revoked or the clock is off: a fresh one, once.
			renewed = true
			err = p.post(ctx, p.renew(ts), body)
		}
		return err
	})
}

// ttl is d as FCM's duration, whole seconds rounded up: a push that may
// outlive the wait by a second does less harm than one that misses it.
func ttl(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10) + "s"
}

func (p *Provider) tokenSource() oauth2.TokenSource {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokens
}

// renew replaces the token source that gave a refused token, unless a
// concurrent push did already, so the next Token fetches a new one.
func (p *Provider) renew(refused oauth2.TokenSource) oauth2.TokenSource {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tokens == refused {
		p.tokens = p.jwt.TokenSource(p.tokenCtx)
	}
	return p.tokens
}

// accessToken is ts's token, waited for no longer than ctx allows: the
// fetch itself runs on the provider's context, so a push that gives up
// leaves the token to the next one.
func (p *Provider) accessToken(ctx context.Context, ts oauth2.TokenSource) (string, error) {
	type result struct {
		token *oauth2.Token
		err   error
	}
	done := make(chan result, 1)
	go func() {
		t, err := ts.Token()
		done <- result{t, err}
	}()
	select {
	case <-ctx.Done():
		return "", &push.Error{Provider: Name, Reason: "access token", Err: ctx.Err()}
	case r := <-done:
		if r.err != nil {
			pe := &push.Error{Provider: Name, Reason: "access token", Err: r.err}
			var re *oauth2.RetrieveError
			if errors.As(r.err, &re) && re.Response != nil {
				pe.Status = re.Response.StatusCode
				pe.Reason = "access token " + grantError(re)
				pe.RetryAfter = push.ParseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
			}
			return "", pe
		}
		return r.token.AccessToken, nil
	}
}

// grantError is the token endpoint's RFC 6749 §5.2 error code, which the
// JWT-bearer flow leaves in the body unparsed.
func grantError(re *oauth2.RetrieveError) string {
	if re.ErrorCode != "" {
		return re.ErrorCode
	}
	var body struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(re.Body, &body) == nil && body.Error != "" {
		return body.Error
	}
	return http.StatusText(re.Response.StatusCode)
}

// googleError is the body of Google's API errors.
type googleError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// post makes one request; its error is an *push.Error.
func (p *Provider) post(ctx context.Context, ts oauth2.TokenSource, body []byte) error {
	token, err := p.accessToken(ctx, ts)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.send, bytes.NewReader(body))
	if err != nil {
		return &push.Error{Provider: Name, Reason: "request", Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := p.client.Do(req)
	if err != nil {
		return &push.Error{Provider: Name, Reason: "no answer", Err: err}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var g googleError
	_ = json.Unmarshal(data, &g)
	pe := &push.Error{
		Provider:   Name,
		Status:     resp.StatusCode,
		Reason:     g.Error.Status,
		RetryAfter: push.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	onToken := strings.Contains(strings.ToLower(g.Error.Message), "registration token")
	for _, d := range g.Error.Details {
		if d.ErrorCode != "" {
			pe.Reason = d.ErrorCode
		}
		for _, v := range d.FieldViolations {
			onToken = onToken || v.Field == "message.token"
		}
	}
	if pe.Reason == "" {
		pe.Reason = http.StatusText(resp.StatusCode)
	}
	if pe.Reason == "UNREGISTERED" || (pe.Reason == "INVALID_ARGUMENT" && onToken) {
		pe.Err = push.ErrUnregistered
	}
	return pe
}
