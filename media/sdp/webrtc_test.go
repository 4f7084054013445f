package sdp

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestReadWebRTC(t *testing.T) {
	chromeFP := Fingerprint{Hash: "sha-256", Value: "4F:1A:0B:72:3C:9D:5E:E8:61:07:AA:93:2B:CC:40:D1:18:F6:75:0E:3A:9B:C2:D4:56:E7:08:19:2A:3B:4C:5D"}
	tests := []struct {
		name string
		body string
		want WebRTC
		err  bool
	}{
		{name: "chrome.sdp", body: string(load(t, "chrome.sdp")),
			want: WebRTC{Fingerprint: chromeFP, Setup: "actpass", Ufrag: "Gw3R", Pwd: "qLmQ2lV0s7wYdC6Xh0o5XzRk", Mux: true, Mid: "0", Bundle: "0"}},
		{name: "session-level attributes, media overrides setup",
			body: "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\na=ice-lite\r\na=fingerprint:SHA-1 ab:cd\r\na=setup:passive\r\na=ice-ufrag:sess\r\na=ice-pwd:sessionpasswordsession1\r\nt=0 0\r\nm=audio 4000 UDP/TLS/RTP/SAVP 0\r\nc=IN IP4 192.0.2.1\r\na=setup:active\r\n",
			want: WebRTC{Fingerprint: Fingerprint{Hash: "sha-1", Value: "AB:CD"}, Setup: "active", Ufrag: "sess", Pwd: "sessionpasswordsession1", Lite: true}},
		{name: "plain RTP", body: string(load(t, "baresip.sdp")), want: WebRTC{Mux: true}},
		{name: "bad setup", body: "v=0\r\nm=audio 4000 UDP/TLS/RTP/SAVPF 0\r\na=setup:sideways\r\n", err: true},
		{name: "fingerprint without a value", body: "v=0\r\nm=audio 4000 UDP/TLS/RTP/SAVPF 0\r\na=fingerprint:sha-256\r\n", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.WebRTC(0)
			if (err != nil) != tt.err {
				t.Fatalf("err %v, want error %v", err, tt.err)
			}
			if !tt.err && got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
	s, _ := Parse(load(t, "chrome.sdp"))
	if _, err := s.WebRTC(1); err == nil {
		t.Error("section 1 of a one-section body")
	}
	if !DTLSProto(s.Media[0].Proto) || DTLSProto("RTP/SAVPF") || DTLSProto("RTP/AVP") {
		t.Error("DTLSProto")
	}
}

func TestAnswerSetup(t *testing.T) {
	for _, tt := range []struct {
		offer, answer string
		client        bool
		err           error
	}{
		{"actpass", "passive", false, nil},
		{"ACTPASS", "passive", false, nil},
		{"active", "passive", false, nil},
		{"", "passive", false, nil},
		{"passive", "active", true, nil},
		{"holdconn", "", false, ErrHoldconn},
	} {
		a, c, err := AnswerSetup(tt.offer)
		if a != tt.answer || c != tt.client || !errors.Is(err, tt.err) {
			t.Errorf("%q: %q %v %v, want %q %v %v", tt.offer, a, c, err, tt.answer, tt.client, tt.err)
		}
	}
	if _, _, err := AnswerSetup("sideways"); err == nil {
		t.Error("unknown setup accepted")
	}
}

func TestWithTransport(t *testing.T) {
	tr := Transport{
		Ufrag: "anch", Pwd: "anchorpasswordof24chars+",
		Fingerprint: Fingerprint{Hash: "sha-256", Value: "01:02"},
		Setup:       "passive",
		Candidate:   netip.MustParseAddrPort("127.0.0.30:30000"),
		Mid:         "0",
	}
	tests := []struct {
		name    string
		body    []byte
		mid     bool // a=mid:0 is added
		hadMux  bool
		bundle  string   // the Transport's Bundle: a=group:BUNDLE 0 is written
		present []string // lines of the original that stay
		gone    []string // lines of the original that go
	}{
		// A SIP phone's answer towards a browser: no ICE, no mid.
		{name: "baresip.sdp", body: load(t, "baresip.sdp"), mid: true, hadMux: true, present: []string{"a=rtpmap:111 opus/48000/2"}},
		// The same made into an offer toward a browser: a BUNDLE group of
		// the one section, which pion and max-bundle stacks want.
		{name: "baresip.sdp bundled", body: load(t, "baresip.sdp"), mid: true, hadMux: true, bundle: "0", present: []string{"a=rtpmap:111 opus/48000/2"}},
		// An SDES phone: its a=crypto goes, no a=rtcp-mux of its own.
		{name: "sdes", body: []byte("v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\nm=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=rtpmap:0 PCMU/8000\r\n"), mid: true, present: []string{"a=rtpmap:0 PCMU/8000"}},
		// A browser's own offer re-sent to another browser: its ICE and
		// DTLS lines are replaced, its mid kept.
		{name: "chrome.sdp", body: load(t, "chrome.sdp"), hadMux: true, bundle: "0", present: []string{"a=mid:0", "a=group:BUNDLE 0", "a=rtcp-fb:111 transport-cc"}},
		// Toward a browser whose offer had no BUNDLE group: the body's own
		// group goes, an answer has none the offer lacked.
		{name: "chrome.sdp unbundled", body: load(t, "chrome.sdp"), hadMux: true, present: []string{"a=mid:0"}, gone: []string{"a=group:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := tr
			tr.Bundle = tt.bundle
			out, err := WithTransport(tt.body, []Transport{tr})
			if err != nil {
				t.Fatal(err)
			}
			text := string(out)
			if !strings.HasSuffix(text, "\r\n") || strings.Contains(strings.ReplaceAll(text, "\r\n", ""), "\n") {
				t.Error("not CRLF throughout")
			}
			lines := strings.Split(strings.TrimSuffix(text, "\r\n"), "\r\n")
			count := func(prefix string) int {
				n := 0
				for _, l := range lines {
					if strings.HasPrefix(l, prefix) {
						n++
					}
				}
				return n
			}
			for _, l := range tr.Lines() {
				if count(l) != 1 {
					t.Errorf("%q appears %d times", l, count(l))
				}
			}
			for prefix, want := range map[string]int{"a=candidate:": 1, "a=ice-ufrag:": 1, "a=fingerprint:": 1, "a=setup:": 1, "a=crypto:": 0, "a=ice-options:": 0, "a=ice-lite": 1, "a=rtcp-mux": 1, "a=mid:": 1} {
				if count(prefix) != want {
					t.Errorf("%d lines %q, want %d:\n%s", count(prefix), prefix, want, text)
				}
			}
			for _, l := range tt.present {
				if count(l) != 1 {
					t.Errorf("%q lost", l)
				}
			}
			for _, l := range tt.gone {
				if count(l) != 0 {
					t.Errorf("%q kept:\n%s", l, text)
				}
			}
			wantGroups := 0
			if tt.bundle != "" {
				wantGroups = 1
				if i := strings.Index(text, "a=group:BUNDLE 0\r\n"); i < 0 || i > strings.Index(text, "m=") {
					t.Errorf("no session-level a=group:BUNDLE 0:\n%s", text)
				}
			}
			if n := count("a=group:"); n != wantGroups {
				t.Errorf("%d a=group lines, want %d:\n%s", n, wantGroups, text)
			}
			s, err := Parse(out)
			if err != nil {
				t.Fatal(err)
			}
			if i := strings.Index(text, "a=ice-lite"); i < 0 || i > strings.Index(text, "m=") {
				t.Error("a=ice-lite is not at session level")
			}
			got, err := s.WebRTC(0)
			if err != nil {
				t.Fatal(err)
			}
			want := WebRTC{Fingerprint: tr.Fingerprint, Setup: "passive", Ufrag: tr.Ufrag, Pwd: tr.Pwd, Lite: true, Mux: true, Mid: "0", Bundle: tt.bundle}
			if got != want {
				t.Errorf("read back %+v\nwant %+v", got, want)
			}
			if !strings.Contains(text, "a=candidate:1 1 udp 2130706431 127.0.0.30 30000 typ host\r\n") {
				t.Errorf("no host candidate for 127.0.0.30:30000:\n%s", text)
			}
		})
	}
}

// Several sections: those with the same Bundle are one group (the
// caller gave them one transport, RFC 8843 §7), the others a group each.
func TestWithTransportBundlesSections(t *testing.T) {
	body := "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n" +
		"m=audio 5000 RTP/AVP 0\r\na=mid:voice\r\n" + // its mid is kept
		"m=audio 5002 RTP/AVP 0\r\n" +
		"m=video 0 RTP/AVP 96\r\n" // disabled: no mid, no group
	tr := func(i int, bundle string) Transport {
		return Transport{Ufrag: fmt.Sprintf("u%d", i), Pwd: "anchorpasswordof24chars+", Fingerprint: Fingerprint{Hash: "sha-256", Value: "01:02"}, Setup: "actpass",
			Candidate: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.30"), uint16(30000+2*i)), Mid: fmt.Sprint(i), Bundle: bundle}
	}
	for _, tt := range []struct {
		name    string
		bundles []string
		groups  []string
		read    []string // WebRTC(i).Bundle of the output
	}{
		// Sections on transports of their own: a group each.
		{name: "unbundled", bundles: []string{"0", "1", "2"}, groups: []string{"a=group:BUNDLE voice", "a=group:BUNDLE 1"}, read: []string{"voice", "1"}},
		// One transport for both (an offer, or the answer to an offer
		// that bundled both): one group listing both mids; the disabled
		// section has none.
		{name: "bundled", bundles: []string{"b", "b", "b"}, groups: []string{"a=group:BUNDLE voice 1"}, read: []string{"voice 1", "voice 1"}},
		{name: "answer", bundles: []string{"voice 1", "voice 1", ""}, groups: []string{"a=group:BUNDLE voice 1"}, read: []string{"voice 1", "voice 1"}},
		{name: "answer without BUNDLE", bundles: []string{"", "", ""}, read: []string{"", ""}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var ts []Transport
			for i, b := range tt.bundles {
				ts = append(ts, tr(i, b))
			}
			out, err := WithTransport([]byte(body), ts)
			if err != nil {
				t.Fatal(err)
			}
			text := string(out)
			session := text[:strings.Index(text, "m=")]
			var groups []string
			for _, l := range strings.Split(text, "\r\n") {
				if strings.HasPrefix(l, "a=group:") {
					groups = append(groups, l)
				}
			}
			if strings.Join(groups, "|") != strings.Join(tt.groups, "|") || strings.Count(session, "a=group:") != len(groups) {
				t.Errorf("groups %q, want %q:\n%s", groups, tt.groups, text)
			}
			if strings.Count(text, "a=mid:voice") != 1 || strings.Count(text, "a=mid:1\r\n") != 1 || strings.Contains(text, "a=mid:0") || strings.Contains(text, "a=mid:2") {
				t.Errorf("mids:\n%s", text)
			}
			s, err := Parse(out)
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range tt.read {
				if w, err := s.WebRTC(i); err != nil || w.Bundle != want {
					t.Errorf("section %d reads Bundle %q (%v), want %q", i, w.Bundle, err, want)
				}
			}
		})
	}
}

func TestWithTransportLeavesDisabledSections(t *testing.T) {
	out, err := WithTransport(load(t, "carrier.sdp"), []Transport{{Ufrag: "u1u1", Pwd: "p", Setup: "actpass", Candidate: netip.MustParseAddrPort("127.0.0.30:1")}, {Ufrag: "u2u2"}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(out), "a=ice-ufrag:") != 1 || strings.Contains(string(out), "u2u2") {
		t.Errorf("the disabled video section got ICE:\n%s", out)
	}
	if _, err := WithTransport([]byte("nonsense"), nil); err == nil {
		t.Error("bad body accepted")
	}
}

func TestWithoutTransport(t *testing.T) {
	out, err := WithoutTransport(load(t, "chrome.sdp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"a=candidate:", "a=ice-", "a=fingerprint:", "a=setup:", "a=end-of-candidates"} {
		if strings.Contains(string(out), gone) {
			t.Errorf("%q kept:\n%s", gone, out)
		}
	}
	for _, kept := range []string{"a=rtpmap:111 opus/48000/2\r\n", "a=fmtp:111 minptime=10;useinbandfec=1\r\n", "a=rtcp-mux\r\n", "a=mid:0\r\n", "m=audio 54321 UDP/TLS/RTP/SAVPF"} {
		if !strings.Contains(string(out), kept) {
			t.Errorf("%q lost", kept)
		}
	}
	s, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if s.Media[0].ICE {
		t.Error("still reads as ICE")
	}
}

func TestWithoutDTLS(t *testing.T) {
	body := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\na=fingerprint:sha-256 AB:CD\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=setup:actpass\r\na=tls-id:abc\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\na=rtpmap:0 PCMU/8000\r\n"
	out := string(WithoutDTLS([]byte(body)))
	want := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\na=rtpmap:0 PCMU/8000\r\n"
	if out != want {
		t.Errorf("got\n%q\nwant\n%q", out, want)
	}
}

func TestTransportCandidates(t *testing.T) {
	tr := Transport{Ufrag: "u", Pwd: "p", Setup: "actpass", Fingerprint: Fingerprint{Hash: "sha-256", Value: "01"},
		Candidate: netip.MustParseAddrPort("192.0.2.5:30000"), Candidates: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::5]:30000")}}
	var cands []string
	for _, l := range tr.Lines() {
		if strings.HasPrefix(l, "a=candidate:") {
			cands = append(cands, l)
		}
	}
	want := []string{"a=candidate:1 1 udp 2130706431 192.0.2.5 30000 typ host", "a=candidate:2 1 udp 2130706175 2001:db8::5 30000 typ host"}
	if strings.Join(cands, "|") != strings.Join(want, "|") {
		t.Errorf("candidates %q, want %q", cands, want)
	}
}
