// Package push is what sori needs of a push notification service to wake a
// suspended phone (RFC 8599): a Notification built from a binding's pn-*
// parameters and the request waiting for it, and a Provider that sends it.
// The providers are apns (Apple), fcm (Firebase) and webhook (any HTTPS
// endpoint); each one retries what its service says is worth retrying
// (Retry) and names its failures with an *Error. Counting them is the
// caller's business.
package push

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Notification is one push: to whom (the binding's pn-* parameters) and for
// what (the request that waits for the phone to register).
type Notification struct {
	// Provider is the binding's pn-provider: "apns", "fcm", or the name a
	// webhook was configured with.
	Provider string
	// PRID is the binding's pn-prid: the device token the service knows.
	PRID string
	// Param is the binding's pn-param. For APNs (RFC 8599 §10) it is the
	// Team ID and the topic separated by the first period, the topic
	// being the bundle ID with the service suffix: "TEAMID.org.example.phone.voip".
	// For FCM (RFC 8599 §11) it is the project ID.
	Param string

	CallID string // the waiting request's Call-ID
	From   string // its From header value
	To     string // its To header value
	Method string // INVITE or MESSAGE

	// Expires is how long sori holds the request for the phone: a push
	// delivered later than that wakes it for nothing.
	Expires time.Duration
}

// Provider sends notifications through one push service.
type Provider interface {
	// Name is the pn-provider value this provider serves.
	Name() string
	// Push sends n. Its error is an *Error; it wraps ErrUnregistered when
	// the service says n.PRID is no longer valid.
	Push(ctx context.Context, n Notification) error
}

// ErrUnregistered is wrapped by a Push error when the service says the
// device token is no longer valid: the caller removes the binding, since no
// push to it can ever arrive.
var ErrUnregistered = errors.New("device token no longer valid")

// Error is a push that failed: the provider, what its service answered and
// why, so a log line says what happened without the device token.
type Error struct {
	Provider string // "apns", "fcm", or the webhook's name
	Status   int    // the service's HTTP status; 0 when none came
	Reason   string // the service's reason ("Unregistered", "UNAVAILABLE", …), or what failed here
	ID       string // the service's id for the request (apns-id), when it gave one

	// RetryAfter is the service's Retry-After; 0 when it gave none.
	RetryAfter time.Duration
	// Attempts is how many times the push was sent; set by Retry.
	Attempts int
	// Err is ErrUnregistered, the transport's error, or nil.
	Err error
}

func (e *Error) Error() string {
	msg := e.Provider + ": push failed"
	if e.Status != 0 {
		msg += fmt.Sprintf(": status %d", e.Status)
	}
	if e.Reason != "" {
		msg += " (" + e.Reason + ")"
	}
	if e.ID != "" {
		msg += " id " + e.ID
	}
	if e.Attempts > 1 {
		msg += fmt.Sprintf(" after %d attempts", e.Attempts)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether sending again may succeed: the service was
// overloaded (429) or failing (5xx), or the request never got an answer.
func (e *Error) Temporary() bool {
	if e.Status == http.StatusTooManyRequests || e.Status >= 500 {
		return true
	}
	if e.Status != 0 || e.Err == nil || errors.Is(e.Err, ErrUnregistered) {
		return false
	}
	if errors.Is(e.Err, context.Canceled) || errors.Is(e.Err, context.DeadlineExceeded) {
		return false
	}
	// A certificate the roots do not trust stays untrusted.
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	return !errors.As(e.Err, &verify) && !errors.As(e.Err, &unknown) && !errors.As(e.Err, &hostname)
}

// HTTPClient is the client a provider uses when none is configured: TLS
// with roots (the system's when nil), HTTP/2 when the server offers it.
func HTTPClient(roots *x509.CertPool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	// A custom TLSClientConfig turns HTTP/2 off unless asked for again;
	// APNs speaks nothing else.
	t.ForceAttemptHTTP2 = true
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}
