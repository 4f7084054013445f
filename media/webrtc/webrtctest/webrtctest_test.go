package webrtctest

import (
	"strings"
	"testing"
)

func TestBrowserOffersOpusOnLoopback(t *testing.T) {
	offer := NewBrowser(t).Offer()
	for _, want := range []string{"UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1", "a=setup:actpass", "a=fingerprint:", "a=end-of-candidates"} {
		if !strings.Contains(offer, want) {
			t.Errorf("the offer has no %q:\n%s", want, offer)
		}
	}
	n := 0
	for _, l := range strings.Split(offer, "\r\n") {
		if strings.HasPrefix(l, "a=candidate:") {
			n++
			if !strings.Contains(l, " 127.0.0.1 ") || !strings.Contains(l, " udp ") {
				t.Errorf("a candidate not UDP on 127.0.0.1: %s", l)
			}
		}
	}
	if n == 0 {
		t.Errorf("no candidate in the offer:\n%s", offer)
	}
}
