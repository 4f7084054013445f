package proxy

import (
	"testing"

	"github.com/sori-voice/sori/sip/chain/chaintest"
	"github.com/sori-voice/sori/sip/local"
)

func TestHops(t *testing.T) {
	self := local.New("sori.test", "127.0.0.1:5060")
	h := Hops{Self: self}
	first := chaintest.Request(t, chaintest.Raw("INVITE", "sip:bob@sori.test"))
	ourVia := "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=" + branchPrefix + loopHash(first) + ".abc;rport"
	tests := []struct {
		name string
		raw  string
		code int // 0: passed on
	}{
		{"first time through", chaintest.Raw("INVITE", "sip:bob@sori.test"), 0},
		{"Max-Forwards 0", chaintest.Raw("INVITE", "sip:bob@sori.test", "Max-Forwards: 0"), 483},
		{"Max-Forwards 0 for sori itself is answered, not refused", chaintest.Raw("OPTIONS", "sip:127.0.0.1:5060", "Max-Forwards: 0"), 0},
		{"the same request back through us: a loop", chaintest.Raw("INVITE", "sip:bob@sori.test", ourVia), 482},
		{"a spiral: back with another Request-URI", chaintest.Raw("INVITE", "sip:carol@sori.test", ourVia), 0},
		{"the same request in another transaction", chaintest.Raw("INVITE", "sip:bob@sori.test", ourVia, "CSeq: 2 INVITE"), 0},
		{"someone else's Via with our prefix", chaintest.Raw("INVITE", "sip:bob@sori.test", "Via: SIP/2.0/UDP 198.51.100.7;branch="+branchPrefix+loopHash(first)+".x"), 0},
		{"ACK is never refused", chaintest.Raw("ACK", "sip:bob@sori.test", "Max-Forwards: 0"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, passed := chaintest.Serve(t, h, chaintest.Request(t, tt.raw))
			switch {
			case tt.code == 0 && (!passed || res != nil):
				t.Fatalf("answered %v", res)
			case tt.code != 0 && (passed || res == nil || res.StatusCode != tt.code):
				t.Fatalf("passed=%v res=%v, want %d", passed, res, tt.code)
			}
		})
	}
}
