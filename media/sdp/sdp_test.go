package sdp

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func load(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "sdp", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseRealWorldOffers(t *testing.T) {
	tests := []struct {
		file  string
		media []Media
	}{
		{"baresip.sdp", []Media{{Type: "audio", Port: 10000, Proto: "RTP/AVP", Formats: []string{"111", "9", "0", "8", "101"}, Addr: netip.MustParseAddr("192.168.1.20"), Mux: true, OpusPT: 111}}},
		{"linphone.sdp", []Media{{Type: "audio", Port: 7078, Proto: "RTP/AVP", Formats: []string{"96", "97", "98", "0", "8", "101", "99", "100"}, Addr: netip.MustParseAddr("10.0.0.23"), RTCPPort: 7079, OpusPT: 96}}},
		{"zoiper.sdp", []Media{{Type: "audio", Port: 8000, Proto: "RTP/AVP", Formats: []string{"106", "9", "98", "101", "0", "8", "3"}, Addr: netip.MustParseAddr("172.16.5.9"), Mux: true, OpusPT: 106}}},
		{"carrier.sdp", []Media{
			{Type: "audio", Port: 20346, Proto: "RTP/AVP", Formats: []string{"8", "0", "18", "9", "4", "101"}, Addr: netip.MustParseAddr("198.51.100.40"), OpusPT: -1},
			{Type: "video", Port: 0, Proto: "RTP/AVP", Formats: []string{"96"}, Addr: netip.MustParseAddr("198.51.100.40"), OpusPT: -1},
		}},
		{"ipv6.sdp", []Media{{Type: "audio", Port: 40000, Proto: "RTP/AVP", Formats: []string{"111", "101"}, Addr: netip.MustParseAddr("2001:db8::20"), RTCPPort: 40001, OpusPT: 111}}},
		{"ice.sdp", []Media{{Type: "audio", Port: 52535, Proto: "RTP/AVPF", Formats: []string{"111", "0", "8"}, Addr: netip.MustParseAddr("203.0.113.77"), RTCPPort: 9, Mux: true, ICE: true, OpusPT: 111}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			s, err := Parse(load(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(s.Media, tt.media, func(a, b Media) bool {
				return a.Type == b.Type && a.Port == b.Port && a.Proto == b.Proto && slices.Equal(a.Formats, b.Formats) &&
					a.Addr == b.Addr && a.RTCPPort == b.RTCPPort && a.Mux == b.Mux && a.ICE == b.ICE && a.OpusPT == b.OpusPT
			}) {
				t.Fatalf("media\n got %+v\nwant %+v", s.Media, tt.media)
			}
		})
	}
}

func TestRewritePointsMediaAtTheAnchorAndKeepsTheRest(t *testing.T) {
	anchor := netip.MustParseAddr("203.0.113.5")
	anchor6 := netip.MustParseAddr("2001:db8::5")
	tests := []struct {
		file    string
		rw      Rewrite
		changed map[string]string // original line -> rewritten line ("" : removed)
	}{
		{"baresip.sdp", Rewrite{Addr: anchor, Ports: []Ports{{30000, 30000}}, ReplaceOrigin: true}, map[string]string{
			"o=- 1185484891 3847318396 IN IP4 192.168.1.20": "o=- 1185484891 3847318396 IN IP4 203.0.113.5",
			"c=IN IP4 192.168.1.20":                         "c=IN IP4 203.0.113.5",
			"m=audio 10000 RTP/AVP 111 9 0 8 101":           "m=audio 30000 RTP/AVP 111 9 0 8 101",
		}},
		{"linphone.sdp", Rewrite{Addr: anchor, Ports: []Ports{{30002, 30003}}}, map[string]string{
			"c=IN IP4 10.0.0.23":                           "c=IN IP4 203.0.113.5",
			"m=audio 7078 RTP/AVP 96 97 98 0 8 101 99 100": "m=audio 30002 RTP/AVP 96 97 98 0 8 101 99 100",
			"a=rtcp:7079":                                  "a=rtcp:30003",
		}},
		{"carrier.sdp", Rewrite{Addr: anchor, Ports: []Ports{{30004, 30005}, {30006, 30007}}}, map[string]string{
			"c=IN IP4 198.51.100.40":               "c=IN IP4 203.0.113.5",
			"m=audio 20346 RTP/AVP 8 0 18 9 4 101": "m=audio 30004 RTP/AVP 8 0 18 9 4 101",
		}},
		{"ipv6.sdp", Rewrite{Addr: anchor6, Ports: []Ports{{30008, 30009}}, ReplaceOrigin: true}, map[string]string{
			"o=- 3947 3947 IN IP6 2001:db8::20": "o=- 3947 3947 IN IP6 2001:db8::5",
			"c=IN IP6 2001:db8::20":             "c=IN IP6 2001:db8::5",
			"m=audio 40000 RTP/AVP 111 101":     "m=audio 30008 RTP/AVP 111 101",
			"a=rtcp:40001 IN IP6 2001:db8::20":  "a=rtcp:30009 IN IP6 2001:db8::5",
		}},
		{"ipv6.sdp", Rewrite{Addr: anchor, Ports: []Ports{{30010, 30011}}}, map[string]string{
			"c=IN IP6 2001:db8::20":            "c=IN IP4 203.0.113.5",
			"m=audio 40000 RTP/AVP 111 101":    "m=audio 30010 RTP/AVP 111 101",
			"a=rtcp:40001 IN IP6 2001:db8::20": "a=rtcp:30011 IN IP4 203.0.113.5",
		}},
		{"ice.sdp", Rewrite{Addr: anchor, Ports: []Ports{{30012, 30012}}, RemoveICE: true, Proto: "RTP/AVP"}, map[string]string{
			"m=audio 52535 RTP/AVPF 111 0 8": "m=audio 30012 RTP/AVP 111 0 8",
			"c=IN IP4 203.0.113.77":          "c=IN IP4 203.0.113.5",
			"a=rtcp:9 IN IP4 0.0.0.0":        "a=rtcp:30012 IN IP4 203.0.113.5",
			"a=candidate:2609552855 1 udp 2122260223 10.100.1.218 58275 typ host generation 0 network-id 1":                                 "",
			"a=candidate:1838867459 1 udp 1686052607 203.0.113.77 52535 typ srflx raddr 10.100.1.218 rport 58275 generation 0 network-id 1": "",
			"a=ice-ufrag:4ZcD":                   "",
			"a=ice-pwd:2/1muCWoOi3uLifh0NuRHlYJ": "",
			"a=ice-options:trickle":              "",
			"a=end-of-candidates":                "",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			in := load(t, tt.file)
			s, err := Parse(in)
			if err != nil {
				t.Fatal(err)
			}
			out := s.Rewrite(tt.rw)
			if !strings.HasSuffix(string(out), "\r\n") || strings.Contains(strings.ReplaceAll(string(out), "\r\n", ""), "\n") {
				t.Fatal("output lines must end in CRLF")
			}
			var want []string
			for _, l := range strings.Split(strings.TrimRight(string(in), "\r\n"), "\r\n") {
				if n, ok := tt.changed[l]; ok {
					if n != "" {
						want = append(want, n)
					}
					continue
				}
				want = append(want, l) // every other line byte for byte
			}
			got := strings.Split(strings.TrimRight(string(out), "\r\n"), "\r\n")
			if !slices.Equal(got, want) {
				t.Fatalf("rewritten\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			again, err := Parse(out)
			if err != nil {
				t.Fatalf("the rewritten body does not parse: %v", err)
			}
			for i, m := range again.Media {
				if s.Media[i].Port != 0 && (m.Port != tt.rw.Ports[i].RTP || m.Addr != tt.rw.Addr) {
					t.Fatalf("media %d points at %s:%d", i, m.Addr, m.Port)
				}
				if tt.rw.RemoveICE && m.ICE {
					t.Fatalf("media %d still carries ICE", i)
				}
			}
		})
	}
}

// c=0.0.0.0 is an old-style hold and kept, except in an ICE agent's SDP,
// where it is the placeholder for the addresses in its candidates (a
// browser's before its gathering ends): that one is rewritten.
func TestOldStyleHoldAddressIsKept(t *testing.T) {
	for _, tt := range []struct {
		name, media, want string
	}{
		{"plain phone on hold", "m=audio 4000 RTP/AVP 0\r\n", "c=IN IP4 0.0.0.0\r\n"},
		{"ICE placeholder", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:Xy7q\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n" +
			"a=candidate:1 1 udp 2122260223 192.0.2.7 50000 typ host\r\n", "c=IN IP4 203.0.113.5\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse([]byte("v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n" + tt.media))
			if err != nil {
				t.Fatal(err)
			}
			out := string(s.Rewrite(Rewrite{Addr: netip.MustParseAddr("203.0.113.5"), Ports: []Ports{{30000, 30001}}}))
			if !strings.Contains(out, tt.want) || strings.Contains(out, "0.0.0.0") != (tt.want == "c=IN IP4 0.0.0.0\r\n") || !strings.Contains(out, "m=audio 30000 ") {
				t.Fatalf("%s", out)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for name, body := range map[string]string{
		"empty":             "",
		"no version":        "o=- 1 1 IN IP4 1.2.3.4\r\n",
		"not type=value":    "v=0\r\nhello\r\n",
		"short m= line":     "v=0\r\nm=audio 4000\r\n",
		"port out of range": "v=0\r\nm=audio 70000 RTP/AVP 0\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(body)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestRewriteCrypto(t *testing.T) {
	body := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" +
		"m=audio 4000 RTP/SAVP 111\r\na=rtpmap:111 opus/48000/2\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:BBBB\r\na=sendrecv\r\n" +
		"m=audio 4002 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n" +
		"m=video 4004 RTP/SAVP 96\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:CCCC\r\na=fingerprint:sha-256 AA\r\n"
	s, err := Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Media[0].Crypto) != 2 || s.Media[0].Crypto[1] != "2 AES_CM_128_HMAC_SHA1_32 inline:BBBB" || len(s.Media[1].Crypto) != 0 || s.Media[0].DTLS || !s.Media[2].DTLS {
		t.Fatalf("%+v", s.Media)
	}
	tests := []struct {
		name string
		rw   []MediaRewrite
		want []string // lines of the result that must be there, in order
		not  []string
	}{
		{"replaced where they were", []MediaRewrite{{SetCrypto: true, Crypto: []string{"5 AES_CM_128_HMAC_SHA1_80 inline:XXXX"}}},
			[]string{"m=audio 30000 RTP/SAVP 111", "a=rtpmap:111 opus/48000/2", "a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:XXXX", "a=sendrecv", "m=audio 30002 RTP/AVP"},
			[]string{"inline:AAAA", "inline:BBBB"}},
		{"removed, plain", []MediaRewrite{{Proto: "RTP/AVP", SetCrypto: true}},
			[]string{"m=audio 30000 RTP/AVP 111", "a=sendrecv", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:CCCC"}, []string{"inline:AAAA", "inline:BBBB"}},
		{"added at the end of a plain section", []MediaRewrite{{}, {Proto: "RTP/SAVP", SetCrypto: true, Crypto: []string{"1 AES_CM_128_HMAC_SHA1_80 inline:YYYY"}}},
			[]string{"m=audio 30002 RTP/SAVP 111", "a=rtpmap:111 opus/48000/2", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:YYYY", "m=video"}, nil},
		{"untouched", nil, []string{"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:BBBB"}, nil},
	}
	for _, tt := range tests {
		out := string(s.Rewrite(Rewrite{Addr: netip.MustParseAddr("203.0.113.5"), Ports: []Ports{{30000, 30001}, {30002, 30003}, {30004, 30005}}, Media: tt.rw}))
		at := 0
		for _, w := range tt.want {
			i := strings.Index(out[at:], w)
			if i < 0 {
				t.Fatalf("%s: %q missing after offset %d:\n%s", tt.name, w, at, out)
			}
			at += i + len(w)
		}
		for _, n := range tt.not {
			if strings.Contains(out, n) {
				t.Fatalf("%s: %q still there:\n%s", tt.name, n, out)
			}
		}
		if _, err := Parse([]byte(out)); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
	}
}
