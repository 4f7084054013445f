// Package chain is how a SIP request flows through sori: a list of small
// handlers, each with one job, each either answering the request or passing
// it to the next (as CoreDNS plugins do). The transport and transaction layers
// (sipgo) stay below it; routing logic lives in the handlers.
package chain

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// ErrCanceled is the cause of a request context ended by a matching CANCEL
// (context.Cause tells it apart from a shutdown or deadline).
var ErrCanceled = errors.New("request canceled by CANCEL")

// ResponseWriter sends responses within the request's server transaction.
type ResponseWriter interface {
	Respond(res *sip.Response) error
}

// Handler serves one request.
type Handler interface {
	ServeSIP(ctx context.Context, w ResponseWriter, req *sip.Request)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, w ResponseWriter, req *sip.Request)

// ServeSIP calls f.
func (f HandlerFunc) ServeSIP(ctx context.Context, w ResponseWriter, req *sip.Request) {
	f(ctx, w, req)
}

// Plugin is one link: it wraps the rest of the chain.
type Plugin interface {
	// Wrap returns a handler that serves what this plugin handles and
	// passes everything else to next.
	Wrap(next Handler) Handler
	// Methods lists the methods this plugin answers (for Allow).
	Methods() []string
}

// Build links plugins in order; the first sees every request first. final
// serves what no plugin took.
func Build(final Handler, plugins ...Plugin) Handler {
	h := final
	for i := len(plugins) - 1; i >= 0; i-- {
		h = plugins[i].Wrap(h)
	}
	return h
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

// Reply answers req with code and reason, adding the given headers.
func Reply(w ResponseWriter, req *sip.Request, code int, reason string, headers ...sip.Header) error {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
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
	var out []sip.Header
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			out = append(out, h)
		}
	}
	return out
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
