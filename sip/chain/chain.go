// Package chain is how a SIP request flows through sori: a list of small
// links, each with one job, each either deciding the request or passing it
// to the next (as CoreDNS plugins do). A link that refuses a request
// returns the code; one place (Answer, called by sip/server) writes every
// such answer. The transport and transaction layers stay below the chain;
// routing logic lives in the links.
package chain

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/reply"
)

// ErrCanceled is the cause of a request context ended by a matching CANCEL
// (context.Cause tells it apart from a shutdown or deadline).
var ErrCanceled = errors.New("request canceled by CANCEL")

// ErrShutdown is the cause of a request context ended because sori is
// stopping: a request still waiting (a call ringing, a push wait) is
// answered now instead of holding the shutdown.
var ErrShutdown = errors.New("request ended: the server is shutting down")

// ResponseWriter sends responses within the request's server transaction.
type ResponseWriter interface {
	Respond(res *sip.Response) error
}

// Cancelable is a ResponseWriter whose request a CANCEL can end (an
// INVITE's server transaction).
type Cancelable interface {
	// OnCancel runs f when a CANCEL matches, before the 487 goes up: what
	// the call held (a trunk slot, a toll count) is given back before the
	// caller, told its call ended, can place the next one.
	OnCancel(f func())
}

// OnCancel registers f with w if a CANCEL can end its request.
func OnCancel(w ResponseWriter, f func()) {
	if c, ok := w.(Cancelable); ok {
		c.OnCancel(f)
	}
}

// Caller is who sent a request, as the links before the proxy found out.
type Caller struct {
	User  string // the user of our domain it was authenticated as; empty: none
	Trunk string // the carrier trunk whose inbound ACL holds its source; empty: none
}

// Request is a request on its way through the chain, with what the links
// learned about it. It is passed explicitly, never through the context.
type Request struct {
	*sip.Request
	Caller Caller
}

// Result is what a link decided. Code 0: the request is dealt with (the
// link answered it through the ResponseWriter, or dropped it on purpose).
// Otherwise the request is answered Code Reason with Header appended.
type Result struct {
	Code   int
	Reason string
	Header []sip.Header
}

// Done is the Result of a request a link answered itself.
var Done = Result{}

// Refuse is the Result that answers code and reason, with headers.
func Refuse(code int, reason string, headers ...sip.Header) Result {
	return Result{Code: code, Reason: reason, Header: headers}
}

// Unavailable is 503 for when something sori needs (the store, a media
// anchor) is not there; Answer adds the Retry-After.
func Unavailable(reason string) Result {
	if reason == "" {
		reason = "Service Unavailable"
	}
	return Result{Code: 503, Reason: reason}
}

// Handler serves one request.
type Handler interface {
	ServeSIP(ctx context.Context, w ResponseWriter, r *Request) Result
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, w ResponseWriter, r *Request) Result

// ServeSIP calls f.
func (f HandlerFunc) ServeSIP(ctx context.Context, w ResponseWriter, r *Request) Result {
	return f(ctx, w, r)
}

// Plugin is one link.
type Plugin interface {
	// Handles reports whether the link acts on r; the chain passes every
	// other request straight to the next link.
	Handles(r *Request) bool
	// Serve decides r, or passes it to next.
	Serve(ctx context.Context, w ResponseWriter, r *Request, next Handler) Result
	// Methods lists the methods this link answers (for Allow).
	Methods() []string
}

// Build links plugins in order; the first sees every request first. final
// serves what no plugin took.
func Build(final Handler, plugins ...Plugin) Handler {
	h := final
	for i := len(plugins) - 1; i >= 0; i-- {
		h = link{p: plugins[i], next: h}
	}
	return h
}

type link struct {
	p    Plugin
	next Handler
}

func (l link) ServeSIP(ctx context.Context, w ResponseWriter, r *Request) Result {
	if !l.p.Handles(r) {
		return l.next.ServeSIP(ctx, w, r)
	}
	return l.p.Serve(ctx, w, r, l.next)
}

// Allow returns the Allow header value for a set of plugins.
func Allow(plugins ...Plugin) string {
	var ms []string
	for _, p := range plugins {
		for _, m := range p.Methods() {
			if !slices.Contains(ms, m) {
				ms = append(ms, m)
			}
		}
	}
	return strings.Join(ms, ", ")
}

// Answer writes what a Result says to req (nothing for Done, nor ever for
// an ACK). A 503 carries Retry-After: retryAfter seconds unless the link
// gave its own.
func Answer(w ResponseWriter, req *sip.Request, r Result, retryAfter int) error {
	if r.Code == 0 || req.IsAck() {
		return nil
	}
	res := reply.New(req, r.Code, r.Reason)
	for _, h := range r.Header {
		res.AppendHeader(h)
	}
	if r.Code == 503 && res.GetHeader("Retry-After") == nil {
		res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(retryAfter)))
	}
	return w.Respond(res)
}

// Reply answers req with code and reason, adding the given headers: for
// answers that are not refusals (100 Trying, 200 to OPTIONS).
func Reply(w ResponseWriter, req *sip.Request, code int, reason string, headers ...sip.Header) error {
	res := reply.New(req, code, reason)
	for _, h := range headers {
		res.AppendHeader(h)
	}
	return w.Respond(res)
}

// HeaderList is a SIP request or response.
type HeaderList interface{ Headers() []sip.Header }

// Headers returns the headers called name (case-insensitive) in order. Unlike
// sipgo's GetHeaders it does not lowercase every header name on each call,
// which allocated on every REGISTER. Compact forms are not matched: use it
// for names that have none (Authorization, Expires, Require, Path, ...) or
// that sipgo parses into typed headers (Contact).
func Headers(m HeaderList, name string) []sip.Header {
	return AppendHeaders(nil, m, name)
}

// AppendHeaders appends the headers called name (see Headers) to dst. With
// dst a small array of the caller's, the usual one or two headers are found
// without allocating: on the REGISTER path (Contact twice, Authorization)
// that was 3 allocs/op of BenchmarkRegisterMemory (84 → 81, 2026-12-04;
// README "Performance").
func AppendHeaders(dst []sip.Header, m HeaderList, name string) []sip.Header {
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			dst = append(dst, h)
		}
	}
	return dst
}

// Header returns the first header called name (see Headers), or nil.
func Header(m HeaderList, name string) sip.Header {
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			return h
		}
	}
	return nil
}
