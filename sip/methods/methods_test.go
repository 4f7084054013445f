package methods

import (
	"context"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/chain/chaintest"
)

// serve runs h and writes its result as the server does.
func serve(t *testing.T, h chain.Handler, rec *chaintest.Recorder, req *sip.Request) {
	t.Helper()
	if err := chain.Answer(rec, req, h.ServeSIP(context.Background(), rec, &chain.Request{Request: req}), 5); err != nil {
		t.Fatal(err)
	}
}

func TestNotAllowed(t *testing.T) {
	h := NotAllowed{Allow: "OPTIONS, REGISTER"}
	for _, m := range []string{"INVITE", "FOO", "PUBLISH"} {
		rec := &chaintest.Recorder{}
		serve(t, h, rec, chaintest.Request(t, chaintest.Raw(m, "sip:sori.test")))
		if len(rec.Responses) != 1 || rec.Responses[0].StatusCode != 405 {
			t.Fatalf("%s: %v", m, rec.Responses)
		}
		if a := rec.Responses[0].GetHeader("Allow"); a == nil || a.Value() != "OPTIONS, REGISTER" {
			t.Fatalf("%s: Allow = %v", m, a)
		}
	}
	rec := &chaintest.Recorder{}
	serve(t, h, rec, chaintest.Request(t, chaintest.Raw("ACK", "sip:bob@sori.test")))
	if len(rec.Responses) != 0 {
		t.Fatalf("ACK answered: %v", rec.Responses)
	}
}

// A method the sender made up shares one metric label: a scanner's
// invented methods would otherwise each keep a histogram series.
func TestMethodLabel(t *testing.T) {
	for m, want := range map[sip.RequestMethod]string{
		sip.INVITE: "INVITE", sip.REGISTER: "REGISTER", sip.PUBLISH: "PUBLISH",
		"NEWMETHOD": "other", "invite": "other", "": "other", "X-\xc3": "other",
	} {
		if got := Label(m); got != want {
			t.Errorf("Label(%q) = %q, want %q", m, got, want)
		}
	}
}
