package proxy

import (
	"hash/fnv"
	"strconv"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
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

// loopHashFNV is loopHash as it was written with hash/fnv.
func loopHashFNV(req *sip.Request) string {
	h := fnv.New64a()
	w := func(s string) { _, _ = h.Write([]byte(s)); _, _ = h.Write([]byte{0}) }
	w(req.Recipient.String())
	if f := req.From(); f != nil {
		w(f.Params.GetOr("tag", ""))
	}
	if t := req.To(); t != nil {
		w(t.Params.GetOr("tag", ""))
	}
	if c := req.CallID(); c != nil {
		w(c.Value())
	}
	if c := req.CSeq(); c != nil {
		w(strconv.FormatUint(uint64(c.SeqNo), 10))
	}
	for _, hd := range chain.Headers(req, "Proxy-Require") {
		w(hd.Value())
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

// The hand-written FNV-1a gives hash/fnv's hash: a loop through a node of
// the previous version is still seen.
func TestLoopHashIsFNV(t *testing.T) {
	for _, raw := range []string{
		chaintest.Raw("INVITE", "sip:bob@sori.test"),
		chaintest.Raw("INVITE", "sip:+4930123@198.51.100.7:5080;user=phone;transport=tcp", "CSeq: 4711 INVITE", "Proxy-Require: foo", "Proxy-Require: bar"),
		chaintest.Raw("OPTIONS", "sips:[2001:db8::1]:5061"),
	} {
		req := chaintest.Request(t, raw)
		if got, want := loopHash(req), loopHashFNV(req); got != want {
			t.Fatalf("%s: %s, hash/fnv %s", raw, got, want)
		}
	}
}

func BenchmarkLoopHash(b *testing.B) {
	req := chaintest.Request(b, chaintest.Raw("INVITE", "sip:bob@sori.test;transport=udp", "CSeq: 314159 INVITE"))
	b.ReportAllocs()
	for b.Loop() {
		_ = loopHash(req)
	}
}
