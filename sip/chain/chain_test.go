package chain_test

import (
	"context"
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
func (t tag) Wrap(next chain.Handler) chain.Handler {
	return chain.HandlerFunc(func(ctx context.Context, w chain.ResponseWriter, r *sip.Request) {
		*t.seen = append(*t.seen, t.name)
		next.ServeSIP(ctx, w, r)
	})
}

func TestBuildRunsPluginsInOrderThenFinal(t *testing.T) {
	var seen []string
	final := chain.HandlerFunc(func(context.Context, chain.ResponseWriter, *sip.Request) { seen = append(seen, "final") })
	h := chain.Build(final, tag{"a", nil, &seen}, tag{"b", nil, &seen})
	h.ServeSIP(context.Background(), &chaintest.Recorder{}, chaintest.Request(t, chaintest.Raw("OPTIONS", "sip:sori.test")))
	if len(seen) != 3 || seen[0] != "a" || seen[1] != "b" || seen[2] != "final" {
		t.Fatalf("order %v", seen)
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
