package sanity

import (
	"testing"

	"github.com/sori-voice/sori/sip/chain/chaintest"
	"github.com/sori-voice/sori/sip/local"
)

func TestSanity(t *testing.T) {
	p := Plugin{Supported: []string{"path"}}
	tests := []sanityCase{
		{"plain OPTIONS passes", chaintest.Raw("OPTIONS", "sip:sori.test"), 0, ""},
		{"supported Require passes", chaintest.Raw("REGISTER", "sip:sori.test", "Require: path"), 0, ""},
		{"unknown Require", chaintest.Raw("REGISTER", "sip:sori.test", "Require: path, 100rel, foo"), 420, "100rel, foo"},
		{"Require on CANCEL is ignored", chaintest.Raw("CANCEL", "sip:bob@sori.test", "Require: foo"), 0, ""},
		{"ACK always passes", chaintest.Raw("ACK", "sip:bob@sori.test", "Require: foo"), 0, ""},
		{"CSeq method mismatch", chaintest.Raw("OPTIONS", "sip:sori.test", "CSeq: 1 INVITE"), 400, ""},
		{"unsupported URI scheme", chaintest.Raw("OPTIONS", "mailto:bob@sori.test"), 416, ""},
		{"tel URI passes", chaintest.Raw("OPTIONS", "tel:+821011112222"), 0, ""},
		{"unknown Proxy-Require", chaintest.Raw("INVITE", "sip:bob@sori.test", "Proxy-Require: foo"), 420, "foo"},
	}
	check(t, p, tests)

	// With an identity, Require on a request to forward is the callee's business.
	self := local.New("sori.test", "127.0.0.1:5060")
	check(t, Plugin{Supported: []string{"path"}, Self: self}, []sanityCase{
		{"Require on a forwarded INVITE passes", chaintest.Raw("INVITE", "sip:bob@sori.test", "Require: 100rel"), 0, ""},
		{"Proxy-Require on a forwarded INVITE", chaintest.Raw("INVITE", "sip:bob@sori.test", "Proxy-Require: foo"), 420, "foo"},
		{"Require on REGISTER", chaintest.Raw("REGISTER", "sip:sori.test", "Require: foo"), 420, "foo"},
		{"Require on OPTIONS to the server", chaintest.Raw("OPTIONS", "sip:sori.test", "Require: foo"), 420, "foo"},
	})
}

type sanityCase struct {
	name        string
	raw         string
	code        int // 0: passed on
	unsupported string
}

func check(t *testing.T, p Plugin, tests []sanityCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, passed := chaintest.Serve(t, p, chaintest.Request(t, tt.raw))
			if tt.code == 0 {
				if !passed || res != nil {
					t.Fatalf("not passed on: %v", res)
				}
				return
			}
			if passed || res == nil || res.StatusCode != tt.code {
				t.Fatalf("passed=%v res=%v, want %d", passed, res, tt.code)
			}
			if tt.unsupported != "" {
				if h := res.GetHeader("Unsupported"); h == nil || h.Value() != tt.unsupported {
					t.Fatalf("Unsupported = %v, want %q", h, tt.unsupported)
				}
			}
		})
	}
}
