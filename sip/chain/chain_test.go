package chain_test

import (
	"context"
	"slices"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/chain/chaintest"
)

// tag is a plugin that records its name and passes the request on.
type tag struct {
	name    string
	methods []string
	seen    *[]string
}

func (t tag) Methods() []string { return t.methods }

// Handles: a tag with methods acts only on those.
func (t tag) Handles(r *chain.Request) bool {
	return len(t.methods) == 0 || slices.Contains(t.methods, string(r.Method))
}

func (t tag) Serve(ctx context.Context, w chain.ResponseWriter, r *chain.Request, next chain.Handler) chain.Result {
	*t.seen = append(*t.seen, t.name)
	return next.ServeSIP(ctx, w, r)
}

func TestBuildRunsPluginsInOrderThenFinal(t *testing.T) {
	var seen []string
	final := chain.HandlerFunc(func(context.Context, chain.ResponseWriter, *chain.Request) chain.Result {
		seen = append(seen, "final")
		return chain.Done
	})
	h := chain.Build(final, tag{"a", nil, &seen}, tag{"r", []string{"REGISTER"}, &seen}, tag{"b", nil, &seen})
	h.ServeSIP(context.Background(), &chaintest.Recorder{}, &chain.Request{Request: chaintest.Request(t, chaintest.Raw("OPTIONS", "sip:sori.test"))})
	if !slices.Equal(seen, []string{"a", "b", "final"}) {
		t.Fatalf("order %v (a link that does not handle OPTIONS must be passed by)", seen)
	}
}

func TestAnswerWritesRefusalsWithRetryAfterOn503(t *testing.T) {
	req := chaintest.Request(t, chaintest.Raw("INVITE", "sip:bob@sori.test"))
	for _, tt := range []struct {
		result     chain.Result
		code       int
		retryAfter string
	}{
		{chain.Done, 0, ""},
		{chain.Refuse(404, "Not Found"), 404, ""},
		{chain.Unavailable(""), 503, "9"},
		{chain.Refuse(503, "Busy Here", sip.NewHeader("Retry-After", "30")), 503, "30"},
		{chain.Refuse(420, "Bad Extension", sip.NewHeader("Unsupported", "foo")), 420, ""},
	} {
		rec := &chaintest.Recorder{}
		if err := chain.Answer(rec, req, tt.result, 9); err != nil {
			t.Fatal(err)
		}
		if tt.code == 0 {
			if len(rec.Responses) != 0 {
				t.Fatalf("Done answered %v", rec.Responses)
			}
			continue
		}
		res := rec.Responses[0]
		ra := ""
		if h := res.GetHeader("Retry-After"); h != nil {
			ra = h.Value()
		}
		if len(rec.Responses) != 1 || res.StatusCode != tt.code || ra != tt.retryAfter || len(res.GetHeaders("Retry-After")) > 1 {
			t.Fatalf("%+v: %v", tt.result, res)
		}
		if tt.code == 420 && res.GetHeader("Unsupported").Value() != "foo" {
			t.Fatalf("420 without its header: %v", res)
		}
	}
	rec := &chaintest.Recorder{}
	_ = chain.Answer(rec, chaintest.Request(t, chaintest.Raw("ACK", "sip:bob@sori.test")), chain.Refuse(404, "Not Found"), 5)
	if len(rec.Responses) != 0 {
		t.Fatal("an ACK was answered")
	}
}

func TestAllowListsEachMethodOnce(t *testing.T) {
	var seen []string
	got := chain.Allow(tag{"a", []string{"OPTIONS"}, &seen}, tag{"b", []string{"REGISTER", "OPTIONS"}, &seen}, tag{"c", nil, &seen})
	if got != "OPTIONS, REGISTER" {
		t.Fatalf("Allow = %q", got)
	}
}

func TestReplyAddsHeaders(t *testing.T) {
	rec := &chaintest.Recorder{}
	req := chaintest.Request(t, chaintest.Raw("OPTIONS", "sip:sori.test"))
	if err := chain.Reply(rec, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "5")); err != nil {
		t.Fatal(err)
	}
	res := rec.Responses[0]
	if res.StatusCode != 503 || res.GetHeader("Retry-After").Value() != "5" || res.CallID().Value() != "test-call" {
		t.Fatalf("reply %v", res)
	}
}

func TestHeadersLookup(t *testing.T) {
	req := chaintest.Request(t, chaintest.Raw("REGISTER", "sip:sori.test",
		"authorization: Digest a=1", "Authorization: Digest b=2", "m: <sip:a@10.0.0.1>", "Contact: <sip:a@10.0.0.2>", "EXPIRES: 60"))
	auths := chain.Headers(req, "Authorization")
	if len(auths) != 2 || auths[0].Value() != "Digest a=1" || auths[1].Value() != "Digest b=2" {
		t.Fatalf("Authorization headers %v", auths)
	}
	if cs := chain.Headers(req, "Contact"); len(cs) != 2 { // the compact "m" is parsed into a typed Contact
		t.Fatalf("Contact headers %v", cs)
	}
	if h := chain.Header(req, "Expires"); h == nil || h.Value() != "60" {
		t.Fatalf("Expires = %v", h)
	}
	if h := chain.Header(req, "Path"); h != nil {
		t.Fatalf("Path = %v", h)
	}
}
