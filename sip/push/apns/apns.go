// Package apns sends VoIP pushes through Apple's push notification service
// (APNs) over HTTP/2 with token-based authentication: each request is a
// POST to /3/device/<device token> carrying a provider token, a JWT signed
// ES256 with the team's APNs key (the .p8 file), kid the key's ID, iss the
// Team ID, iat when it was made. The token is kept and replaced when it is
// TokenRefresh old, since APNs refuses one older than an hour and refuses
// new ones more often than every 20 minutes.
//
// The request's headers are apns-push-type: voip, apns-topic: the app's
// bundle ID with ".voip", apns-priority: 10 (now) and apns-expiration: 0
// (once, now or never: a late ring is worse than none). Its body is the
// JSON object
//
//	{"aps":{},"call-id":"…","from":"…","to":"…","method":"INVITE"}
//
// with the Call-ID, From and To of the request waiting for the phone and its
// method (INVITE or MESSAGE), so the app can show the call it was woken for
// before it registers; aps is empty because a VoIP push alerts nobody.
//
// The topic comes from the binding's pn-param when that is "<Team ID>.<topic>"
// for this key's team (RFC 8599 §10), else from Config.Topic. APNs
// answers 410 Unregistered or 400 BadDeviceToken for a token no longer
// valid: the error wraps push.ErrUnregistered. A 403 ExpiredProviderToken
// or InvalidProviderToken gets a new provider token and one more try; 429
// and 5xx are retried (push.Retry).
package apns

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sori-voice/sori/sip/push"
)

// The APNs endpoints.
const (
	ProductionURL = "https://api.push.apple.com"
	SandboxURL    = "https://api.sandbox.push.apple.com"
)

// TokenRefresh is the age at which the provider token is replaced: well
// inside APNs' hour, well past its 20 minutes between updates.
const TokenRefresh = 40 * time.Minute

// Name is the pn-provider value of APNs (RFC 8599 §10).
const Name = "apns"

// Config configures a Provider.
type Config struct {
	URL    string // ProductionURL (the default) or SandboxURL
	TeamID string // the developer team's ID: the token's iss
	KeyID  string // the APNs key's ID: the token's kid
	Key    []byte // the APNs key: the .p8 file, a PKCS#8 PEM of a P-256 key
	// Topic is the app's bundle ID; ".voip" is appended when missing.
	Topic string

	RootCAs *x509.CertPool // the roots APNs' certificate is checked against; nil means the system's
	Client  *http.Client   // nil means push.HTTPClient(RootCAs); it must speak HTTP/2

	MaxAttempts int          // sends of one push, retries included; 0 means push.DefaultMaxAttempts
	Backoff     push.Backoff // the waits between them
	Now         func() time.Time
}

// Provider sends pushes through APNs. It is safe for concurrent use.
type Provider struct {
	endpoint    string
	teamID      string
	keyID       string
	key         *ecdsa.PrivateKey
	topic       string
	client      *http.Client
	maxAttempts int
	backoff     push.Backoff
	now         func() time.Time

	mu     sync.Mutex
	token  string
	issued time.Time
}

var _ push.Provider = (*Provider)(nil)

// New checks cfg and returns its Provider.
func New(cfg Config) (*Provider, error) {
	endpoint := cfg.URL
	if endpoint == "" {
		endpoint = ProductionURL
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("apns: URL %q is not https://host[:port]", cfg.URL)
	}
	if cfg.TeamID == "" {
		return nil, errors.New("apns: TeamID is required")
	}
	if cfg.KeyID == "" {
		return nil, errors.New("apns: KeyID is required")
	}
	if len(cfg.Key) == 0 {
		return nil, errors.New("apns: Key (the .p8 file) is required")
	}
	key, err := jwt.ParseECPrivateKeyFromPEM(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("apns: Key: %w", err)
	}
	if key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("apns: Key: curve %s, APNs takes P-256", key.Curve.Params().Name)
	}
	topic := voipTopic(cfg.Topic)
	if topic == "" {
		return nil, errors.New("apns: Topic (the app's bundle ID) is required")
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
		endpoint:    "https://" + u.Host,
		teamID:      cfg.TeamID,
		keyID:       cfg.KeyID,
		key:         key,
		topic:       topic,
		client:      client,
		maxAttempts: cfg.MaxAttempts,
		backoff:     cfg.Backoff,
		now:         now,
	}, nil
}

// voipTopic is bundle as a VoIP push's topic: apns-push-type voip takes
// only the bundle ID's ".voip" topic.
func voipTopic(bundle string) string {
	bundle = strings.TrimSpace(bundle)
	if bundle == "" || strings.HasSuffix(bundle, ".voip") {
		return bundle
	}
	return bundle + ".voip"
}

// Name is "apns".
func (p *Provider) Name() string { return Name }

// payload is the push's body; see the package comment.
type payload struct {
	APS    struct{} `json:"aps"`
	CallID string   `json:"call-id"`
	From   string   `json:"from"`
	To     string   `json:"to"`
	Method string   `json:"method"`
}

// Push sends n to n.PRID.
func (p *Provider) Push(ctx context.Context, n push.Notification) error {
	if n.PRID == "" {
		return &push.Error{Provider: Name, Reason: "no device token (pn-prid)"}
	}
	body, err := json.Marshal(payload{CallID: n.CallID, From: n.From, To: n.To, Method: n.Method})
	if err != nil {
		return &push.Error{Provider: Name, Reason: "payload", Err: err}
	}
	topic := p.topicOf(n.Param)
	target := p.endpoint + "/3/device/" + url.PathEscape(n.PRID)
	renewed := false
	return push.Retry(ctx, p.maxAttempts, p.backoff, func(ctx context.Context) error {
		token, err := p.bearer("")
		if err != nil {
			return err
		}
		err = p.send(ctx, target, topic, token, body)
		var pe *push.Error
		if !renewed && errors.As(err, &pe) && pe.Status == http.StatusForbidden &&
			(pe.Reason == "ExpiredProviderToken" || pe.Reason == "InvalidProviderToken") {
			// Once per push: a key APNs does not take stays refused.
			renewed = true
			if token, err = p.bearer(token); err != nil {
				return err
			}
			err = p.send(ctx, target, topic, token, body)
		}
		return err
	})
}

// topicOf is the topic for a binding's pn-param: its topic when it is this
// team's "<Team ID>.<topic>", else the configured one.
func (p *Provider) topicOf(param string) string {
	if t, ok := strings.CutPrefix(param, p.teamID+"."); ok && t != "" {
		return voipTopic(t)
	}
	return p.topic
}

// bearer is the provider token: the one kept while younger than
// TokenRefresh, a new one when it is older or is rejected (the one APNs
// refused; another push may have replaced it already).
func (p *Provider) bearer(rejected string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	age := now.Sub(p.issued)
	if p.token != "" && p.token != rejected && age >= 0 && age < TokenRefresh {
		return p.token, nil
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": p.teamID,
		"iat": now.Unix(),
	})
	t.Header["kid"] = p.keyID
	signed, err := t.SignedString(p.key)
	if err != nil {
		return "", &push.Error{Provider: Name, Reason: "signing the provider token", Err: err}
	}
	p.token, p.issued = signed, now
	return signed, nil
}

// send makes one request; its error is an *push.Error.
func (p *Provider) send(ctx context.Context, target, topic, token string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return &push.Error{Provider: Name, Reason: "request", Err: err}
	}
	req.Header.Set("authorization", "bearer "+token)
	req.Header.Set("apns-push-type", "voip")
	req.Header.Set("apns-topic", topic)
	req.Header.Set("apns-priority", "10")
	req.Header.Set("apns-expiration", "0")
	req.Header.Set("content-type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return &push.Error{Provider: Name, Reason: "no answer", Err: err}
	}
	defer resp.Body.Close()
	// APNs' error bodies are a short JSON object; more is not read.
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var answer struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(data, &answer)
	pe := &push.Error{
		Provider:   Name,
		Status:     resp.StatusCode,
		Reason:     answer.Reason,
		ID:         resp.Header.Get("apns-id"),
		RetryAfter: push.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	if pe.Reason == "" {
		pe.Reason = http.StatusText(resp.StatusCode)
	}
	if resp.StatusCode == http.StatusGone ||
		(resp.StatusCode == http.StatusBadRequest && answer.Reason == "BadDeviceToken") {
		pe.Err = push.ErrUnregistered
	}
	return pe
}
