package sdp

import (
	"net/netip"
	"testing"
)

var benchOffer = []byte("v=0\r\no=- 1 1 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n" +
	"m=audio 4000 RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n" +
	"a=rtpmap:101 telephone-event/48000\r\na=sendrecv\r\n")

// BenchmarkParseRewrite: an offer's SDP as the anchor reads it and writes
// it back pointing at its ports (twice per call: offer and answer).
func BenchmarkParseRewrite(b *testing.B) {
	rw := Rewrite{Addr: netip.MustParseAddr("203.0.113.1"), RemoveICE: true, ReplaceOrigin: true,
		Ports: []Ports{{RTP: 40000, RTCP: 40001}}, Media: []MediaRewrite{{}}}
	b.ReportAllocs()
	for b.Loop() {
		s, err := Parse(benchOffer)
		if err != nil {
			b.Fatal(err)
		}
		if out := s.Rewrite(rw); len(out) == 0 {
			b.Fatal("empty")
		}
	}
}
