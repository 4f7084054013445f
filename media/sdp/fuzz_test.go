package sdp

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// seedSDP adds every offer in testdata/sdp and the SDP bodies of the
// torture messages that carry one.
func seedSDP(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "sdp", "*.sdp"))
	more, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "torture", "cases", "*", "*"))
	for _, name := range append(files, more...) {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		if i := bytes.Index(b, []byte("\nv=0")); i >= 0 && filepath.Ext(name) != ".sdp" {
			b = b[i+1:]
		} else if filepath.Ext(name) != ".sdp" {
			continue
		}
		f.Add(b)
	}
	f.Add([]byte("v=0\r\nm=audio 1 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\na=fingerprint:sha-256 AA\r\na=setup:holdconn\r\n"))
	f.Add([]byte("v=0\nc=IN IP4 0.0.0.0\nm=audio 0/2 RTP/AVP\na=rtcp:9 IN IP4 0.0.0.0\n"))
}

// FuzzParse runs what the anchor does with an SDP body it receives:
// Parse, each section's WebRTC attributes, the rewrite toward the anchor
// and the WebRTC transport swaps. Nothing panics, and what a rewrite
// writes parses again to the same sections, with the anchor's ports.
func FuzzParse(f *testing.F) {
	seedSDP(f)
	anchor := netip.MustParseAddr("203.0.113.5")
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := Parse(body)
		if err != nil {
			// The other entry points refuse it too, or (WithoutDTLS) only drop lines.
			if _, err := WithTransport(body, nil); err == nil {
				t.Fatal("WithTransport takes a body Parse refuses")
			}
			if _, err := WithoutTransport(body); err == nil {
				t.Fatal("WithoutTransport takes a body Parse refuses")
			}
			_ = WithoutDTLS(body)
			return
		}
		var ports []Ports
		var media []MediaRewrite
		var transports []Transport
		for i, m := range s.Media {
			if m.Port < 0 || m.Port > 65535 || m.RTCPPort < 0 || m.RTCPPort > 65535 {
				t.Fatalf("section %d: ports %d/%d", i, m.Port, m.RTCPPort)
			}
			if w, err := s.WebRTC(i); err == nil {
				_, _, _ = AnswerSetup(w.Setup)
			}
			ports = append(ports, Ports{RTP: 30000 + 2*i, RTCP: 30001 + 2*i})
			media = append(media, MediaRewrite{SetCrypto: i%2 == 0, Crypto: []string{"1 AES_CM_128_HMAC_SHA1_80 inline:AAAA"}})
			transports = append(transports, Transport{Ufrag: "u", Pwd: "p", Fingerprint: Fingerprint{"sha-256", "AA"}, Setup: "passive",
				Candidate: netip.AddrPortFrom(anchor, uint16(30000+2*i)), Mid: "0"})
		}
		if _, err := s.WebRTC(len(s.Media)); err == nil {
			t.Fatal("WebRTC of a section past the last")
		}
		for _, rw := range []Rewrite{
			{Addr: anchor, Ports: ports, ReplaceOrigin: true},
			{Addr: netip.MustParseAddr("2001:db8::5"), Ports: ports, RemoveICE: true, Proto: "RTP/AVP", Media: media},
			{Addr: anchor, Ports: ports[:len(ports)/2]},
		} {
			out := s.Rewrite(rw)
			again, err := Parse(out)
			if err != nil {
				t.Fatalf("rewritten body does not parse: %v\n%q", err, out)
			}
			if len(again.Media) != len(s.Media) {
				t.Fatalf("rewrite made %d sections of %d\n%q", len(again.Media), len(s.Media), out)
			}
			for i, m := range again.Media {
				want := s.Media[i].Port
				if i < len(rw.Ports) && want != 0 {
					want = rw.Ports[i].RTP
				}
				if m.Port != want {
					t.Fatalf("section %d: port %d, want %d\n%q", i, m.Port, want, out)
				}
			}
			// Rewriting what was rewritten changes nothing more.
			if twice := again.Rewrite(rw); !bytes.Equal(twice, out) {
				t.Fatalf("rewrite is not idempotent:\n%q\n%q", out, twice)
			}
		}
		for _, tr := range [][]Transport{nil, transports} {
			out, err := WithTransport(body, tr)
			if err != nil {
				t.Fatalf("WithTransport refuses what Parse takes: %v", err)
			}
			if again, err := Parse(out); err != nil || len(again.Media) != len(s.Media) {
				t.Fatalf("WithTransport's body: %v\n%q", err, out)
			}
		}
		out, err := WithoutTransport(body)
		if err != nil {
			t.Fatalf("WithoutTransport refuses what Parse takes: %v", err)
		}
		if again, err := Parse(out); err != nil || len(again.Media) != len(s.Media) {
			t.Fatalf("WithoutTransport's body: %v\n%q", err, out)
		}
		if again, err := Parse(WithoutDTLS(body)); err != nil || len(again.Media) != len(s.Media) {
			t.Fatalf("WithoutDTLS's body: %v", err)
		}
	})
}
