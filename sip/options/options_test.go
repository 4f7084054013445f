package options

import (
	"testing"

	"github.com/sori-voice/sori/sip/chain/chaintest"
	"github.com/sori-voice/sori/sip/local"
)

func TestOptions(t *testing.T) {
	p := Plugin{Self: local.New("sori.test", "127.0.0.1:5060"), Allow: "OPTIONS, REGISTER", Supported: "path"}
	tests := []struct {
		name     string
		raw      string
		answered bool
	}{
		{"to the domain", chaintest.Raw("OPTIONS", "sip:sori.test"), true},
		{"to our address", chaintest.Raw("OPTIONS", "sip:127.0.0.1:5060"), true},
		{"to a user is not ours to answer", chaintest.Raw("OPTIONS", "sip:bob@sori.test"), false},
		{"to another host", chaintest.Raw("OPTIONS", "sip:example.org"), false},
		{"other method", chaintest.Raw("INFO", "sip:sori.test"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, passed := chaintest.Serve(t, p, chaintest.Request(t, tt.raw))
			if !tt.answered {
				if !passed || res != nil {
					t.Fatalf("answered: %v", res)
				}
				return
			}
			if res == nil || res.StatusCode != 200 {
				t.Fatalf("got %v", res)
			}
			for h, want := range map[string]string{"Allow": "OPTIONS, REGISTER", "Supported": "path", "Accept": "application/sdp"} {
				if got := res.GetHeader(h); got == nil || got.Value() != want {
					t.Errorf("%s = %v, want %q", h, got, want)
				}
			}
		})
	}
}
