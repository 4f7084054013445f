package sanity

import (
	"testing"

	"github.com/sori-voice/sori/sip/chain/chaintest"
)

func TestSanity(t *testing.T) {
	p := Plugin{Supported: []string{"path"}}
	tests := []struct {
		name        string
		raw         string
		code        int // 0: passed on
		unsupported string
	}{
		{"plain OPTIONS passes", chaintest.Raw("OPTIONS", "sip:sori.test"), 0, ""},
		{"supported Require passes", chaintest.Raw("REGISTER", "sip:sori.test", "Require: path"), 0, ""},
		{"unknown Require", chaintest.Raw("REGISTER", "sip:sori.test", "Require: path, 100rel, foo"), 420, "100rel, foo"},
		{"Require on CANCEL is ignored", chaintest.Raw("CANCEL", "sip:bob@sori.test", "Require: foo"), 0, ""},
		{"ACK always passes", chaintest.Raw("ACK", "sip:bob@sori.test", "Require: foo"), 0, ""},
		{"CSeq method mismatch", chaintest.Raw("OPTIONS", "sip:sori.test", "CSeq: 1 INVITE"), 400, ""},
		{"unsupported URI scheme", chaintest.Raw("OPTIONS", "mailto:bob@sori.test"), 416, ""},
		{"tel URI passes", chaintest.Raw("OPTIONS", "tel:+821011112222"), 0, ""},
	}
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
