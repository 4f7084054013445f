package sdp

import (
	"strconv"
	"strings"
)

// BUNDLE (RFC 8843, RFC 8859): the sections of one a=group:BUNDLE share
// one transport, and what arrives on it is told apart by the a=mid RTP
// header extension, else by SSRC (a=ssrc, RFC 5576), else by payload type
// (a bundle's sections have distinct ones).

// MidURI is the RTP header extension carrying a packet's a=mid (RFC 8843
// §15.2).
const MidURI = "urn:ietf:params:rtp-hdrext:sdes:mid"

// section is m= section i's lines.
func (s *Session) section(i int) []string {
	if i < 0 || i >= len(s.starts) {
		return nil
	}
	end := len(s.lines)
	if i+1 < len(s.starts) {
		end = s.starts[i+1]
	}
	return s.lines[s.starts[i]:end]
}

// MidExtension is the a=extmap id section i maps to MidURI; 0: none.
func (s *Session) MidExtension(i int) int {
	for _, l := range s.section(i) {
		v, ok := strings.CutPrefix(l, "a=extmap:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) < 2 || f[1] != MidURI {
			continue
		}
		id, _, _ := strings.Cut(f[0], "/") // a=extmap:4/sendrecv
		if n, err := strconv.Atoi(id); err == nil && n > 0 && n < 256 {
			return n
		}
	}
	return 0
}

// SSRCs are the sources section i declares (a=ssrc, RFC 5576), each once.
func (s *Session) SSRCs(i int) []uint32 {
	var out []uint32
	for _, l := range s.section(i) {
		v, ok := strings.CutPrefix(l, "a=ssrc:")
		if !ok {
			continue
		}
		id, _, _ := strings.Cut(v, " ")
		n, err := strconv.ParseUint(strings.TrimSpace(id), 10, 32)
		if err != nil {
			continue
		}
		seen := false
		for _, o := range out {
			seen = seen || o == uint32(n)
		}
		if !seen {
			out = append(out, uint32(n))
		}
	}
	return out
}

// PayloadTypes are section i's m= formats that are RTP payload types.
func (s *Session) PayloadTypes(i int) []uint8 {
	if i < 0 || i >= len(s.Media) {
		return nil
	}
	var out []uint8
	for _, f := range s.Media[i].Formats {
		if n, err := strconv.Atoi(f); err == nil && n >= 0 && n < 128 {
			out = append(out, uint8(n))
		}
	}
	return out
}

// Mid is section i's a=mid; "" none.
func (s *Session) Mid(i int) string {
	for _, l := range s.section(i) {
		if v, ok := strings.CutPrefix(l, "a=mid:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// BundleOf is the BUNDLE group section i's mid is in, its mids in the
// group's order; nil: none.
func (s *Session) BundleOf(i int) []string {
	mid := s.Mid(i)
	if mid == "" {
		return nil
	}
	for _, g := range s.Bundles() {
		for _, m := range g {
			if m == mid {
				return g
			}
		}
	}
	return nil
}
