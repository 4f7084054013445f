package sdp

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// A browser's max-bundle offer: audio and a bundle-only video, one
// transport, the mid extension, declared sources.
const bundledOffer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE a v\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=mid:a\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n" +
	"a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\na=rtcp-mux\r\n" +
	"a=rtpmap:111 opus/48000/2\r\na=ssrc:1111 cname:x\r\na=ssrc:1111 msid:s a\r\n" +
	"m=video 0 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=bundle-only\r\na=mid:v\r\na=extmap:4/sendrecv urn:ietf:params:rtp-hdrext:sdes:mid\r\n" +
	"a=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=ssrc:2222 cname:x\r\na=ssrc:3333 cname:x\r\na=ssrc-group:FID 2222 3333\r\n"

func TestBundleAttributes(t *testing.T) {
	s, err := ParseString(bundledOffer)
	if err != nil {
		t.Fatal(err)
	}
	if s.Media[0].BundleOnly || !s.Media[1].BundleOnly || !s.Media[1].Enabled() || s.Media[1].Port != 0 {
		t.Fatalf("bundle-only: %+v", s.Media)
	}
	for i, want := range []struct {
		mid   string
		ext   int
		ssrcs []uint32
		pts   []uint8
	}{{"a", 4, []uint32{1111}, []uint8{111, 0}}, {"v", 4, []uint32{2222, 3333}, []uint8{96, 97}}} {
		if got := s.Mid(i); got != want.mid {
			t.Errorf("section %d: mid %q, want %q", i, got, want.mid)
		}
		if got := s.MidExtension(i); got != want.ext {
			t.Errorf("section %d: mid extension %d, want %d", i, got, want.ext)
		}
		if got := s.SSRCs(i); !slices.Equal(got, want.ssrcs) {
			t.Errorf("section %d: ssrcs %v, want %v", i, got, want.ssrcs)
		}
		if got := s.PayloadTypes(i); !slices.Equal(got, want.pts) {
			t.Errorf("section %d: payload types %v, want %v", i, got, want.pts)
		}
		if g := s.BundleOf(i); !slices.Equal(g, []string{"a", "v"}) {
			t.Errorf("section %d: group %q", i, g)
		}
	}
	// Toward a phone the bundle-only section gets its own port and loses
	// the attribute.
	out := string(s.Rewrite(Rewrite{Addr: netip.MustParseAddr("127.0.0.9"), Ports: []Ports{{RTP: 4000, RTCP: 4001}, {RTP: 4002, RTCP: 4003}}, RemoveICE: true}))
	if !strings.Contains(out, "m=video 4002 UDP/TLS/RTP/SAVPF 96 97\r\n") || strings.Contains(out, "a=bundle-only") {
		t.Fatalf("rewrite:\n%s", out)
	}
}

// The anchor's answer to that offer: both sections on one transport, one
// group listing both mids, the same port, credentials and fingerprint,
// the mids kept, rtcp-mux, and the mid extension where the section had
// none.
func TestWithTransportOneTransportForTheGroup(t *testing.T) {
	phone := "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n" +
		"m=audio 5000 RTP/AVP 0\r\na=mid:a\r\nm=video 5002 RTP/AVP 96\r\na=mid:v\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
	s, err := ParseString(phone)
	if err != nil {
		t.Fatal(err)
	}
	cand := netip.MustParseAddrPort("127.0.0.30:30000")
	body := s.Rewrite(Rewrite{Addr: cand.Addr(), Ports: []Ports{{RTP: 30000, RTCP: 30000}, {RTP: 30000, RTCP: 30000}}})
	tr := Transport{Ufrag: "u0", Pwd: "anchorpasswordof24chars+", Fingerprint: Fingerprint{Hash: "sha-256", Value: "01:02"}, Setup: "passive", Candidate: cand, Bundle: "a v", MidExtension: 4}
	out, err := WithTransport(body, []Transport{tr, tr})
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	if n := strings.Count(text, "a=group:BUNDLE a v\r\n"); n != 1 || strings.Count(text, "a=group:") != 1 {
		t.Fatalf("groups:\n%s", text)
	}
	if strings.Count(text, "a=extmap:4 "+MidURI) != 2 {
		t.Errorf("mid extension not once per section:\n%s", text)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	w0, _ := back.WebRTC(0)
	w1, _ := back.WebRTC(1)
	if back.Media[0].Port != 30000 || back.Media[1].Port != 30000 || w0.Ufrag != w1.Ufrag || w0.Pwd != w1.Pwd || w0.Fingerprint != w1.Fingerprint ||
		!w0.Mux || !w1.Mux || w0.Mid != "a" || w1.Mid != "v" || w0.Bundle != "a v" || w1.Bundle != "a v" {
		t.Fatalf("sections %+v %+v\n%s", w0, w1, text)
	}
}
