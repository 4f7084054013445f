package proxy

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

const benchInvite = "INVITE sip:user0001@sori.test SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5171;branch=z9hG4bK-1-2-3;rport\r\n" +
	"From: <sip:user1001@sori.test>;tag=1-2-3\r\n" +
	"To: <sip:user0001@sori.test>\r\n" +
	"Call-ID: 1-2-3@127.0.0.1\r\n" +
	"CSeq: 2 INVITE\r\n" +
	"Contact: <sip:user1001@127.0.0.1:5171>\r\n" +
	"Max-Forwards: 70\r\n" +
	"Proxy-Authorization: Digest username=\"user1001\", realm=\"sori.test\", nonce=\"abc\", uri=\"sip:user0001@sori.test\", response=\"0123456789abcdef0123456789abcdef\"\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 128\r\n\r\n" +
	"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"

func benchRequest(b *testing.B) *sip.Request {
	m, err := sip.ParseMessage([]byte(benchInvite))
	if err != nil {
		b.Fatal(err)
	}
	return m.(*sip.Request)
}

// BenchmarkForwardCopy is prepare's copy of the incoming request; Clone
// what it replaced.
func BenchmarkForwardCopy(b *testing.B) {
	in := benchRequest(b)
	b.Run("forwardCopy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = forwardCopy(in)
		}
	})
	b.Run("Clone", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = in.Clone()
		}
	})
}

func TestForwardCopyLeavesTheIncomingRequest(t *testing.T) {
	m, err := sip.ParseMessage([]byte(benchInvite))
	if err != nil {
		t.Fatal(err)
	}
	in := m.(*sip.Request)
	before := in.String()
	out := forwardCopy(in)
	if out.String() != before {
		t.Fatalf("copy differs:\n%s\nfrom\n%s", out, before)
	}
	out.Via().Params.Add("received", "10.0.0.1")
	out.Contact().Address.UriParams.Add("alias", "x")
	out.RemoveHeader("Proxy-Authorization")
	out.SetBody([]byte("v=0\r\n"))
	if in.String() != before {
		t.Fatalf("the incoming request changed:\n%s", in)
	}
	if strings.Contains(in.String(), "received") {
		t.Fatal("Via shared")
	}
}
