package nodes

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

const signedInvite = "INVITE sip:bob@192.168.1.20:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-node-b-1\r\n" +
	"Via: SIP/2.0/UDP 198.51.100.7:40112;branch=z9hG4bK-phone;received=198.51.100.7;rport=40112\r\n" +
	"Route: <sip:f1abc@10.0.0.1:5060;lr;ob>\r\n" +
	"From: <sip:alice@sori.test>;tag=a1\r\n" +
	"To: <sip:bob@sori.test>\r\n" +
	"Call-ID: call-1@198.51.100.7\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Max-Forwards: 69\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 4\r\n" +
	"\r\n" +
	"v=0\n"

func parse(t *testing.T, raw string) sip.Message {
	t.Helper()
	m, err := sip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// signed is raw with b's signature made at `at`, as the transport writes
// it: in the header section, the message then parsed as the receiving
// node parses it.
func signed(t *testing.T, b *Signer, raw string, at time.Time) sip.Message {
	t.Helper()
	b.now = func() time.Time { return at }
	v := b.Sign(parse(t, raw))
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	return parse(t, head+"\r\n"+Header+": "+v+"\r\n\r\n"+body)
}

func TestSignature(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	peers := []Address{addr(t, "udp:10.0.0.1:5060"), addr(t, "udp:10.0.0.2:5060")}
	a := NewSigner(secret, peers[0], peers)
	a.now = func() time.Time { return now }
	b := NewSigner(secret, peers[1], peers)
	stranger := NewSigner([]byte("another secret"), peers[1], peers)

	if !a.Peer(netip.MustParseAddr("10.0.0.2")) || !a.Peer(netip.MustParseAddr("::ffff:10.0.0.2")) ||
		a.Peer(netip.MustParseAddr("10.0.0.1")) || a.Peer(netip.MustParseAddr("198.51.100.7")) {
		t.Fatal("Peer: only the other nodes' addresses are peers")
	}
	res := "SIP/2.0 180 Ringing\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-node-a-1\r\n" +
		"From: <sip:alice@sori.test>;tag=a1\r\n" +
		"To: <sip:bob@sori.test>;tag=b1\r\n" +
		"Call-ID: call-1@198.51.100.7\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Content-Length: 0\r\n\r\n"
	for _, c := range []struct {
		name string
		m    sip.Message
		want bool
	}{
		{"a request b signed", signed(t, b, signedInvite, now), true},
		{"a response b signed", signed(t, b, res, now), true},
		{"signed 29 s ago", signed(t, b, signedInvite, now.Add(-29*time.Second)), true},
		{"signed 31 s ago: a replay", signed(t, b, signedInvite, now.Add(-31*time.Second)), false},
		{"signed 31 s ahead", signed(t, b, signedInvite, now.Add(31*time.Second)), false},
		{"signed with another secret", signed(t, stranger, signedInvite, now), false},
		{"not signed", parse(t, signedInvite), false},
		{"another Call-ID", alter(t, b, now, "Call-ID: call-1@", "Call-ID: call-2@"), false},
		{"another CSeq", alter(t, b, now, "CSeq: 1 INVITE", "CSeq: 2 INVITE"), false},
		{"another method", alter(t, b, now, "INVITE sip:bob", "MESSAGE sip:bob"), false},
		{"another branch", alter(t, b, now, "branch=z9hG4bK-node-b-1", "branch=z9hG4bK-node-b-2"), false},
		{"another sent-by", alter(t, b, now, "UDP 10.0.0.2:5060;", "UDP 10.0.0.9:5060;"), false},
		{"another From tag", alter(t, b, now, "tag=a1", "tag=a2"), false},
		{"another To tag", alter(t, b, now, "To: <sip:bob@sori.test>", "To: <sip:bob@sori.test>;tag=x"), false},
		{"another body", alter(t, b, now, "v=0\n", "v=1\n"), false},
		{"two signatures", twice(t, b, now), false},
		{"a mangled signature", parse(t, strings.Replace(signedInvite, "\r\n\r\n", "\r\n"+Header+": t=x;mac=!!\r\n\r\n", 1)), false},
	} {
		if got := a.Verify(c.m); got != c.want {
			t.Errorf("%s: Verify %v, want %v", c.name, got, c.want)
		}
	}
	r := signed(t, b, res, now).(*sip.Response)
	r.StatusCode = 200
	if a.Verify(r) {
		t.Error("a 180's signature verified for a 200")
	}
}

// alter is signedInvite signed by b at now, then changed (old to new).
func alter(t *testing.T, b *Signer, now time.Time, old, new string) sip.Message {
	t.Helper()
	m := signed(t, b, signedInvite, now)
	return parse(t, strings.Replace(m.String(), old, new, 1))
}

// twice is signedInvite with b's signature twice over.
func twice(t *testing.T, b *Signer, now time.Time) sip.Message {
	t.Helper()
	m := signed(t, b, signedInvite, now)
	m.AppendHeader(sip.NewHeader(Header, m.GetHeaders(Header)[0].Value()))
	return m
}
