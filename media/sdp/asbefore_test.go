package sdp

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The Parse and Rewrite of before 2026-12-04's allocation cuts, kept to
// show the new ones read and write every body byte for byte the same.

func parseRef(body []byte) (*Session, error) {
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	text = strings.TrimRight(text, "\n")
	if text == "" {
		return nil, errors.New("sdp: empty body")
	}
	s := &Session{lines: strings.Split(text, "\n")}
	if !strings.HasPrefix(s.lines[0], "v=") {
		return nil, errors.New("sdp: does not start with v=")
	}
	var sessionAddr netip.Addr
	cur := -1
	for i, l := range s.lines {
		if len(l) < 2 || l[1] != '=' {
			return nil, fmt.Errorf("sdp: line %d is not type=value: %q", i+1, l)
		}
		switch {
		case strings.HasPrefix(l, "m="):
			f := strings.Fields(l[2:])
			if len(f) < 3 {
				return nil, fmt.Errorf("sdp: line %d: bad m= line", i+1)
			}
			portText, _, _ := strings.Cut(f[1], "/")
			port, err := strconv.Atoi(portText)
			if err != nil || port < 0 || port > 65535 {
				return nil, fmt.Errorf("sdp: line %d: bad m= port %q", i+1, f[1])
			}
			s.Media = append(s.Media, Media{Type: f[0], Port: port, Proto: f[2], Formats: f[3:], Addr: sessionAddr, OpusPT: -1})
			s.starts = append(s.starts, i)
			cur = len(s.Media) - 1
		case strings.HasPrefix(l, "c="):
			a := connAddrRef(l)
			if cur < 0 {
				sessionAddr = a
			} else {
				s.Media[cur].Addr = a
			}
		case cur >= 0 && strings.HasPrefix(l, "a=rtcp:"):
			f := strings.Fields(l[len("a=rtcp:"):])
			if len(f) > 0 {
				if p, err := strconv.Atoi(f[0]); err == nil && p > 0 && p <= 65535 {
					s.Media[cur].RTCPPort = p
				}
			}
		case cur >= 0 && strings.HasPrefix(l, "a=rtpmap:"):
			// a=rtpmap:111 opus/48000/2
			pt, enc, _ := strings.Cut(l[len("a=rtpmap:"):], " ")
			if n, err := strconv.Atoi(pt); err == nil && strings.HasPrefix(strings.ToLower(strings.TrimSpace(enc)), "opus/48000") {
				s.Media[cur].OpusPT = n
			}
		case cur >= 0 && l == "a=rtcp-mux":
			s.Media[cur].Mux = true
		case cur >= 0 && strings.HasPrefix(l, "a=crypto:"):
			s.Media[cur].Crypto = append(s.Media[cur].Crypto, strings.TrimSpace(l[len("a=crypto:"):]))
		case strings.HasPrefix(l, "a=fingerprint:"):
			if cur >= 0 {
				s.Media[cur].DTLS = true
			} else {
				s.dtls = true
			}
		case iceLine(l):
			if cur >= 0 {
				s.Media[cur].ICE = true
			}
		}
	}
	for i := range s.Media {
		s.Media[i].DTLS = s.Media[i].DTLS || s.dtls
	}
	return s, nil
}

func connAddrRef(l string) netip.Addr {
	f := strings.Fields(l[2:])
	if len(f) < 3 {
		return netip.Addr{}
	}
	host, _, _ := strings.Cut(f[2], "/")
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func (s *Session) rewriteRef(r Rewrite) []byte {
	ipv := "IP4"
	if r.Addr.Is6() {
		ipv = "IP6"
	}
	addr := r.Addr.String()
	var b strings.Builder
	cur := -1
	mr := func(i int) MediaRewrite {
		if i >= 0 && i < len(r.Media) {
			return r.Media[i]
		}
		return MediaRewrite{}
	}
	written := false // the current section's new a=crypto lines
	writeCrypto := func() {
		if m := mr(cur); m.SetCrypto && !written {
			for _, c := range m.Crypto {
				b.WriteString("a=crypto:" + c + "\r\n")
			}
		}
		written = true
	}
	for i, l := range s.lines {
		if cur+1 < len(s.starts) && s.starts[cur+1] == i {
			if cur >= 0 {
				writeCrypto()
			}
			cur++
			written = false
		}
		switch {
		case cur >= 0 && strings.HasPrefix(l, "a=crypto:") && mr(cur).SetCrypto:
			writeCrypto()
			continue
		case strings.HasPrefix(l, "o=") && r.ReplaceOrigin:
			if f := strings.Fields(l[2:]); len(f) == 6 {
				f[4], f[5] = ipv, addr
				l = "o=" + strings.Join(f, " ")
			}
		case strings.HasPrefix(l, "c="):
			if a := connAddrRef(l); !a.IsValid() || !a.IsUnspecified() || slices.ContainsFunc(s.lines, func(l string) bool { return strings.HasPrefix(l, "a=ice-ufrag:") }) { // c=0.0.0.0 is an old-style hold: kept, but not an ICE placeholder
				l = "c=IN " + ipv + " " + addr
			}
		case strings.HasPrefix(l, "m=") && cur < len(r.Ports):
			f := strings.Fields(l[2:])
			if s.Media[cur].Port != 0 {
				f[1] = strconv.Itoa(r.Ports[cur].RTP)
			}
			if r.Proto != "" {
				f[2] = r.Proto
			}
			if p := mr(cur).Proto; p != "" {
				f[2] = p
			}
			l = "m=" + strings.Join(f, " ")
		case strings.HasPrefix(l, "a=rtcp:") && cur >= 0 && cur < len(r.Ports):
			l = "a=rtcp:" + strconv.Itoa(r.Ports[cur].RTCP)
			if strings.Contains(s.lines[i], " IN ") {
				l += " IN " + ipv + " " + addr
			}
		case r.RemoveICE && iceLine(l):
			continue
		}
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	if cur >= 0 {
		writeCrypto()
	}
	return []byte(b.String())
}

func TestParseRewriteAsBefore(t *testing.T) {
	var bodies []string
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "sdp", "*.sdp"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, string(b))
	}
	bodies = append(bodies, string(benchOffer), "", "\r\n", "v=0", "v=0\r\n\r\n", "v=0\n\r", "v=0\r\r\n", "x=0\r\n",
		"v=0\r\nc=IN  IP4\t10.0.0.1/127\r\nm=audio\t 5000/2  RTP/AVP 0 8 \r\na=rtcp:5001  IN IP4 10.0.0.1\r\n",
		"v=0\r\nc=IN IP4 10.0.0.1\u00a0x\r\nm=audio 5000 RTP/AVP\u00850\r\no=a b c IN IP4 1.2.3.4\r\n",
		"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 0 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\na=crypto:2 y\r\nm=video 6000 RTP/AVP 96\r\na=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\nc=IN IP6 ::1\r\n")
	rng := rand.New(rand.NewPCG(1, 2))
	n := len(bodies)
	for i := 0; i < 3000; i++ { // mutated bodies: bytes swapped for separators
		b := []byte(bodies[rng.IntN(n)])
		for k := rng.IntN(6); k >= 0 && len(b) > 0; k-- {
			const seps = " \t\r\n=/:a0m"
			b[rng.IntN(len(b))] = seps[rng.IntN(len(seps))]
		}
		bodies = append(bodies, string(b))
	}
	rws := []Rewrite{
		{Addr: netip.MustParseAddr("203.0.113.1")},
		{Addr: netip.MustParseAddr("2001:db8::1"), RemoveICE: true, ReplaceOrigin: true, Proto: "RTP/SAVP",
			Ports: []Ports{{40000, 40001}, {40002, 40002}}, Media: []MediaRewrite{{SetCrypto: true, Crypto: []string{"1 AES_CM_128_HMAC_SHA1_80 inline:k"}}, {Proto: "RTP/AVPF"}}},
		{Addr: netip.MustParseAddr("203.0.113.1"), RemoveICE: true, Ports: []Ports{{40000, 40001}}, Media: []MediaRewrite{{SetCrypto: true}}},
	}
	for _, body := range bodies {
		want, werr := parseRef([]byte(body))
		got, gerr := Parse([]byte(body))
		if fmt.Sprint(werr) != fmt.Sprint(gerr) {
			t.Fatalf("%q: error %v, before %v", body, gerr, werr)
		}
		if werr != nil {
			continue
		}
		if !reflect.DeepEqual(normal(got), normal(want)) {
			t.Fatalf("%q: parsed\n%#v\nbefore\n%#v", body, got, want)
		}
		for _, rw := range rws {
			if g, w := got.Rewrite(rw), want.rewriteRef(rw); string(g) != string(w) {
				t.Fatalf("%q: rewritten\n%q\nbefore\n%q", body, g, w)
			}
		}
	}
}

// normal makes empty and nil slices alike.
func normal(s *Session) Session {
	c := *s
	c.Media = append([]Media(nil), s.Media...)
	for i := range c.Media {
		if len(c.Media[i].Formats) == 0 {
			c.Media[i].Formats = nil
		}
	}
	return c
}
