package server

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestFix2543(t *testing.T) {
	msg := func(via, cseq string) []byte {
		return []byte("INVITE sip:bob@sori.test SIP/2.0\r\nVia: " + via + "\r\nFrom: <sip:a@x>\r\nTo: <sip:bob@sori.test>\r\nCall-ID: c1\r\nCSeq: " + cseq + " INVITE\r\nContent-Length: 0\r\n\r\n")
	}
	if fix2543(msg("SIP/2.0/UDP h;branch=z9hG4bK-1", "1")) != nil {
		t.Fatal("RFC 3261 request rewritten")
	}
	branch := func(b []byte) string {
		m, err := sip.ParseMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := m.(*sip.Request).Via().Params.Get("branch")
		return v
	}
	a := fix2543(msg("SIP/2.0/UDP h", "1"))
	again := fix2543(msg("SIP/2.0/UDP h", "1"))
	other := fix2543(msg("SIP/2.0/UDP h", "2"))
	if a == nil || !strings.HasPrefix(branch(a), "z9hG4bK-2543-") {
		t.Fatalf("no derived branch: %s", a)
	}
	if branch(a) != branch(again) {
		t.Fatal("a retransmission derived another branch")
	}
	if branch(a) == branch(other) {
		t.Fatal("a new request (CSeq 2) derived the same branch")
	}
}
