// Package webhook hands pushes to an HTTPS endpoint of the operator's, which
// sends them on through whatever service its phones use. Each push is one
// POST of a JSON object (Content-Type: application/json):
//
//	{"provider":"webhook","prid":"<pn-prid>","param":"<pn-param>",
//	 "call_id":"…","from":"…","to":"…","method":"INVITE","expires":30}
//
// provider, prid and param are the binding's pn-provider, pn-prid and
// pn-param; call_id, from and to the Call-ID, From and To header values of
// the request waiting for the phone, method its method (INVITE or MESSAGE);
// expires the whole seconds sori holds it.
//
// Every request carries X-Sori-Timestamp, the Unix time in seconds it was
// made. With a Secret configured it also carries
//
//	X-Sori-Signature: sha256=<hex HMAC-SHA256(Secret, timestamp + "." + body)>
//
// where timestamp is X-Sori-Timestamp's value exactly as sent and body the
// request body's bytes exactly as sent. The endpoint checks it by computing
// the same over what it received, comparing in constant time, and refusing
// a timestamp far from its own clock (5 minutes, say), so a recorded request
// cannot be replayed later. A retry is signed anew with its own timestamp.
//
// A 2xx answer means sent. 404 and 410 mean the endpoint knows the device
// token no longer valid: the error wraps push.ErrUnregistered. 429 and 5xx
// are retried (push.Retry), after the Retry-After the endpoint gives; any
// other answer is final.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sori-voice/sori/sip/push"
)

// DefaultName is the pn-provider value a webhook serves when Config.Name is empty.
const DefaultName = "webhook"

// The headers of a webhook request.
const (
	TimestampHeader = "X-Sori-Timestamp"
	SignatureHeader = "X-Sori-Signature"
)

// Config configures a Provider.
type Config struct {
	URL    string // the endpoint; https only, since the body carries device tokens
	Name   string // the pn-provider value served; DefaultName when empty
	Secret []byte // the HMAC key of X-Sori-Signature; no signature when empty

	RootCAs *x509.CertPool // the roots the endpoint's certificate is checked against; nil means the system's
	Client  *http.Client   // nil means push.HTTPClient(RootCAs)

	MaxAttempts int          // sends of one push, retries included; 0 means push.DefaultMaxAttempts
	Backoff     push.Backoff // the waits between them
	Now         func() time.Time
}

// Provider posts pushes to the endpoint. It is safe for concurrent use.
type Provider struct {
	url         string
	name        string
	secret      []byte
	client      *http.Client
	maxAttempts int
	backoff     push.Backoff
	now         func() time.Time
}

var _ push.Provider = (*Provider)(nil)

// New checks cfg and returns its Provider.
func New(cfg Config) (*Provider, error) {
	u, err := url.Parse(cfg.URL)
	if cfg.URL == "" {
		return nil, errors.New("webhook: URL is required")
	}
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("webhook: URL %q is not https://host[:port]/path", cfg.URL)
	}
	name := cfg.Name
	if name == "" {
		name = DefaultName
	}
	client := cfg.Client
	if client == nil {
		client = push.HTTPClient(cfg.RootCAs)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Provider{
		url:         u.String(),
		name:        name,
		secret:      append([]byte(nil), cfg.Secret...),
		client:      client,
		maxAttempts: cfg.MaxAttempts,
		backoff:     cfg.Backoff,
		now:         now,
	}, nil
}

// Name is the configured pn-provider value.
func (p *Provider) Name() string { return p.name }

// Body is the JSON object posted; see the package comment.
type Body struct {
	Provider string `json:"provider"`
	PRID     string `json:"prid"`
	Param    string `json:"param"`
	CallID   string `json:"call_id"`
	From     string `json:"from"`
	To       string `json:"to"`
	Method   string `json:"method"`
	Expires  int64  `json:"expires"`
}

// Sign is X-Sori-Signature's value for a body sent with timestamp.
func Sign(secret []byte, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(timestamp))
	mac.Write([]byte("."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Push posts n.
func (p *Provider) Push(ctx context.Context, n push.Notification) error {
	if n.PRID == "" {
		return &push.Error{Provider: p.name, Reason: "no device token (pn-prid)"}
	}
	provider := n.Provider
	if provider == "" {
		provider = p.name
	}
	body, err := json.Marshal(Body{
		Provider: provider,
		PRID:     n.PRID,
		Param:    n.Param,
		CallID:   n.CallID,
		From:     n.From,
		To:       n.To,
		Method:   n.Method,
		Expires:  int64((n.Expires + time.Second - 1) / time.Second),
	})
	if err != nil {
		return &push.Error{Provider: p.name, Reason: "payload", Err: err}
	}
	return push.Retry(ctx, p.maxAttempts, p.backoff, func(ctx context.Context) error {
		return p.post(ctx, body)
	})
}

// post makes one request; its error is an *push.Error.
func (p *Provider) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return &push.Error{Provider: p.name, Reason: "request", Err: err}
	}
	ts := strconv.FormatInt(p.now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(TimestampHeader, ts)
	if len(p.secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(p.secret, ts, body))
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return &push.Error{Provider: p.name, Reason: "no answer", Err: err}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	pe := &push.Error{
		Provider:   p.name,
		Status:     resp.StatusCode,
		Reason:     reason(data, resp.StatusCode),
		RetryAfter: push.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		pe.Err = push.ErrUnregistered
	}
	return pe
}

// reason is the start of the endpoint's answer, which is whatever it
// chose to say, or the status's text when it said nothing printable.
func reason(data []byte, status int) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	line = strings.TrimSpace(line)
	if line == "" || !utf8.ValidString(line) {
		return http.StatusText(status)
	}
	if len(line) > 120 {
		cut := 120
		for !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = line[:cut] + "…"
	}
	return line
}
