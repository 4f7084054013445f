// Package chaintest helps handler tests: parse a raw request, run a handler,
// capture what it answered.
package chaintest

import (
	"context"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
)

// Recorder is a chain.ResponseWriter that keeps the responses.
type Recorder struct{ Responses []*sip.Response }

// Respond implements chain.ResponseWriter.
func (r *Recorder) Respond(res *sip.Response) error {
	r.Responses = append(r.Responses, res)
	return nil
}

// Request parses a raw request written with LF line ends.
func Request(t testing.TB, raw string) *sip.Request {
	t.Helper()
	msg, err := sip.ParseMessage([]byte(strings.ReplaceAll(raw, "\n", "\r\n")))
	if err != nil {
		t.Fatalf("parse request: %v\n%s", err, raw)
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		t.Fatalf("not a request:\n%s", raw)
	}
	req.SetSource("127.0.0.1:5099")
	req.SetTransport("UDP")
	return req
}

// Serve runs p in front of a final handler that records whether it was
// reached, and writes what p decided as sori's server does (chain.Answer,
// Retry-After 5). It returns the single response (nil if none) and whether
// the request passed through.
func Serve(t testing.TB, p chain.Plugin, req *sip.Request) (res *sip.Response, passed bool) {
	t.Helper()
	res, passed, _ = ServeAs(t, p, &chain.Request{Request: req})
	return res, passed
}

// ServeAs is Serve for a request whose caller is known; it also returns
// the request as the final handler saw it (nil when not reached).
func ServeAs(t testing.TB, p chain.Plugin, req *chain.Request) (res *sip.Response, passed bool, seen *chain.Request) {
	t.Helper()
	rec := &Recorder{}
	final := chain.HandlerFunc(func(_ context.Context, _ chain.ResponseWriter, r *chain.Request) chain.Result {
		passed, seen = true, r
		return chain.Done
	})
	result := chain.Build(final, p).ServeSIP(context.Background(), rec, req)
	if err := chain.Answer(rec, req.Request, result, 5); err != nil {
		t.Fatal(err)
	}
	if len(rec.Responses) > 1 {
		t.Fatalf("%d responses to one request", len(rec.Responses))
	}
	if len(rec.Responses) == 1 {
		res = rec.Responses[0]
	}
	return res, passed, seen
}

// Raw builds a request: METHOD URI with the usual headers plus extra lines.
func Raw(method, uri string, extra ...string) string {
	var b strings.Builder
	b.WriteString(method + " " + uri + " SIP/2.0\n")
	b.WriteString("Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-test;rport\n")
	b.WriteString("Max-Forwards: 70\nFrom: <sip:alice@sori.test>;tag=1\nTo: <sip:bob@sori.test>\nCall-ID: test-call\n")
	cseq := "CSeq: 1 " + method + "\n"
	for _, e := range extra {
		if strings.HasPrefix(e, "CSeq:") {
			cseq = ""
		}
	}
	b.WriteString(cseq)
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	b.WriteString("Content-Length: 0\n\n")
	return b.String()
}
