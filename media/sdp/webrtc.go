package sdp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// WebRTC legs (RFC 8829): DTLS-SRTP (RFC 5763, 5764) over ICE (RFC 8839),
// with RTCP multiplexed on the RTP port.

// Fingerprint is an a=fingerprint (RFC 8122 §5).
type Fingerprint struct {
	Hash  string // sha-256, sha-1, ...: lower case
	Value string // colon-separated hex bytes
}

// WebRTC is what a WebRTC peer's SDP says about one m= section's
// transport; media-level attributes override session-level ones.
type WebRTC struct {
	Fingerprint Fingerprint
	Setup       string // a=setup: actpass, active, passive, holdconn; "" absent
	Ufrag, Pwd  string // a=ice-ufrag, a=ice-pwd
	Lite        bool   // the peer is ICE-lite
	Mux         bool   // a=rtcp-mux
	Mid         string // a=mid
	// Bundle is the session's a=group:BUNDLE (RFC 8843) the section's mid
	// is in, its mids as written ("0 1"); "" none.
	Bundle string
}

// DTLSProto reports whether an m= protocol is DTLS-SRTP (RFC 5764 §8,
// RFC 8843's UDP/TLS/RTP/SAVPF that browsers send).
func DTLSProto(proto string) bool {
	switch strings.ToUpper(proto) {
	case "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF":
		return true
	}
	return false
}

// WebRTC reads m= section i's DTLS and ICE attributes.
func (s *Session) WebRTC(i int) (WebRTC, error) {
	if i < 0 || i >= len(s.Media) {
		return WebRTC{}, fmt.Errorf("sdp: no m= section %d", i)
	}
	var session, media WebRTC
	end := len(s.lines)
	if i+1 < len(s.starts) {
		end = s.starts[i+1]
	}
	first := len(s.lines)
	if len(s.starts) > 0 {
		first = s.starts[0]
	}
	for j, l := range s.lines[:first] {
		if err := readWebRTC(&session, l); err != nil {
			return WebRTC{}, fmt.Errorf("sdp: line %d: %w", j+1, err)
		}
	}
	for j := s.starts[i]; j < end; j++ {
		if err := readWebRTC(&media, s.lines[j]); err != nil {
			return WebRTC{}, fmt.Errorf("sdp: line %d: %w", j+1, err)
		}
	}
	if media.Fingerprint == (Fingerprint{}) {
		media.Fingerprint = session.Fingerprint
	}
	if media.Setup == "" {
		media.Setup = session.Setup
	}
	if media.Ufrag == "" && media.Pwd == "" {
		media.Ufrag, media.Pwd = session.Ufrag, session.Pwd
	}
	media.Lite = session.Lite // session-level only (RFC 8839 §5.3)
	if media.Mid != "" {
		for _, g := range s.Bundles() {
			for _, mid := range g {
				if mid == media.Mid {
					media.Bundle = strings.Join(g, " ")
				}
			}
		}
	}
	return media, nil
}

// Bundles are the session's a=group:BUNDLE groups, each its mids.
func (s *Session) Bundles() [][]string {
	var groups [][]string
	for _, l := range s.lines {
		if strings.HasPrefix(l, "m=") {
			break
		}
		if g, ok := bundleGroup(l); ok {
			groups = append(groups, g)
		}
	}
	return groups
}

func bundleGroup(l string) ([]string, bool) {
	v, ok := strings.CutPrefix(l, "a=group:")
	if !ok {
		return nil, false
	}
	f := strings.Fields(v)
	if len(f) == 0 || !strings.EqualFold(f[0], "BUNDLE") {
		return nil, false
	}
	return f[1:], true
}

func readWebRTC(w *WebRTC, l string) error {
	if !strings.HasPrefix(l, "a=") {
		return nil
	}
	name, value, _ := strings.Cut(l[2:], ":")
	value = strings.TrimSpace(value)
	switch name {
	case "fingerprint":
		h, v, ok := strings.Cut(value, " ")
		v = strings.TrimSpace(v)
		if !ok || h == "" || v == "" {
			return fmt.Errorf("bad a=fingerprint %q", value)
		}
		// RFC 8122 §5 allows several; the first with a hash both
		// sides know is as good as any: WebRTC sends one, sha-256.
		if w.Fingerprint == (Fingerprint{}) {
			w.Fingerprint = Fingerprint{Hash: strings.ToLower(h), Value: strings.ToUpper(v)}
		}
	case "setup":
		switch v := strings.ToLower(value); v {
		case "actpass", "active", "passive", "holdconn":
			w.Setup = v
		default:
			return fmt.Errorf("bad a=setup %q", value)
		}
	case "ice-ufrag":
		w.Ufrag = value
	case "ice-pwd":
		w.Pwd = value
	case "ice-lite":
		w.Lite = true
	case "rtcp-mux":
		w.Mux = true
	case "mid":
		w.Mid = value
	}
	return nil
}

// ErrHoldconn: the peer wants no DTLS connection (a=setup:holdconn).
var ErrHoldconn = errors.New("sdp: a=setup:holdconn, no connection wanted")

// AnswerSetup is the a=setup the anchor answers an offer's with (RFC 5763
// §5, RFC 4145 §4.1), and whether that makes it the DTLS client. It prefers
// passive, so that the browser, which has its address from ICE already,
// sends the first flight.
func AnswerSetup(offer string) (answer string, client bool, err error) {
	switch strings.ToLower(offer) {
	case "actpass", "active", "":
		// Absent means active (RFC 4145 §4).
		return "passive", false, nil
	case "passive":
		return "active", true, nil
	case "holdconn":
		return "", false, ErrHoldconn
	}
	return "", false, fmt.Errorf("sdp: unknown a=setup %q", offer)
}

// Transport is the anchor's side of one m= section toward a WebRTC peer.
type Transport struct {
	Ufrag, Pwd  string
	Fingerprint Fingerprint
	Setup       string         // actpass in an offer; passive or active in an answer
	Candidate   netip.AddrPort // the anchor's host candidate: its advertised address and RTP port
	// Candidates are more host candidates, after Candidate (the anchor's
	// address of the other family), each one preference lower.
	Candidates []netip.AddrPort
	Mid        string // written as a=mid when the section has none (the offer's mid)
	// Bundle names the BUNDLE group (RFC 8843) the section goes in; ""
	// none. The sections with the same Bundle are one group, listing
	// their mids in section order: the caller gives them one transport
	// (the same Ufrag, Fingerprint and Candidate port; RFC 8843 §7),
	// or a Bundle each.
	Bundle string
	// MidExtension, when not 0, is written as the section's a=extmap of
	// MidURI unless it maps that URI or that id already: the browser
	// then tags its RTP with the section's mid (RFC 8843 §15.2).
	MidExtension int
}

// hostPriority is RFC 8445 §5.1.2.1's priority of a host candidate of
// component 1: type preference 126, local preference 65535.
const hostPriority = 126<<24 | 65535<<8 | (256 - 1)

// Lines are t's attributes for one m= section, without "a=rtcp-mux"
// and a=mid, which WithTransport adds only when the section lacks them.
func (t Transport) Lines() []string {
	lines := []string{
		"a=ice-ufrag:" + t.Ufrag,
		"a=ice-pwd:" + t.Pwd,
		"a=fingerprint:" + t.Fingerprint.Hash + " " + t.Fingerprint.Value,
		"a=setup:" + t.Setup,
	}
	// Host candidates, component 1 only: RTCP is multiplexed.
	for i, c := range append([]netip.AddrPort{t.Candidate}, t.Candidates...) {
		if !c.IsValid() {
			continue
		}
		prio := hostPriority - i<<8 // local preference 65535-i
		lines = append(lines, "a=candidate:"+strconv.Itoa(i+1)+" 1 udp "+strconv.Itoa(prio)+" "+c.Addr().String()+" "+strconv.Itoa(int(c.Port()))+" typ host")
	}
	return append(lines, "a=end-of-candidates")
}

// transportLine: an attribute WithTransport and WithoutTransport replace.
func transportLine(l string) bool {
	if iceLine(l) {
		return true
	}
	for _, p := range []string{"a=fingerprint:", "a=setup:", "a=tls-id:", "a=crypto:"} {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

// WithTransport makes a body fit for a WebRTC peer: a=ice-lite at
// session level, and in each m= section t's attributes in place of any
// ICE, DTLS or SDES (a=crypto) ones, plus a=rtcp-mux (RFC 8829 requires
// it). Sections beyond t, disabled (port 0) or whose Transport has no
// Ufrag only lose the old attributes. It does not change the m= protocol
// (Rewrite's Proto does).
func WithTransport(body []byte, t []Transport) ([]byte, error) {
	s, err := Parse(body)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	line := func(l string) {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	first := len(s.lines)
	if len(s.starts) > 0 {
		first = s.starts[0]
	}
	// The mid of each section that gets a transport: its own a=mid, or
	// t's.
	mids := make([]string, len(s.starts))
	for i, start := range s.starts {
		if i >= len(t) || s.Media[i].Port == 0 || t[i].Ufrag == "" {
			continue
		}
		end := len(s.lines)
		if i+1 < len(s.starts) {
			end = s.starts[i+1]
		}
		mids[i] = t[i].Mid
		for _, l := range s.lines[start:end] {
			if v, ok := strings.CutPrefix(l, "a=mid:"); ok {
				mids[i] = strings.TrimSpace(v)
				break
			}
		}
	}
	// The body's own BUNDLE groups are its writer's transports': t's
	// replace them.
	for _, l := range s.lines[:first] {
		if _, bundle := bundleGroup(l); !transportLine(l) && !bundle {
			line(l)
		}
	}
	grouped := map[string]bool{}
	for i, mid := range mids {
		if mid == "" || t[i].Bundle == "" || grouped[t[i].Bundle] {
			continue
		}
		grouped[t[i].Bundle] = true
		g := "a=group:BUNDLE " + mid
		for j := i + 1; j < len(mids); j++ {
			if mids[j] != "" && t[j].Bundle == t[i].Bundle {
				g += " " + mids[j]
			}
		}
		line(g)
	}
	line("a=ice-lite")
	for i, start := range s.starts {
		end := len(s.lines)
		if i+1 < len(s.starts) {
			end = s.starts[i+1]
		}
		mux, mid, ext := false, false, false
		for _, l := range s.lines[start:end] {
			mux = mux || l == "a=rtcp-mux"
			mid = mid || strings.HasPrefix(l, "a=mid:")
			if v, ok := strings.CutPrefix(l, "a=extmap:"); ok && i < len(t) && t[i].MidExtension != 0 {
				id, _, _ := strings.Cut(v, " ")
				id, _, _ = strings.Cut(id, "/")
				ext = ext || id == strconv.Itoa(t[i].MidExtension) || strings.Contains(v, MidURI)
			}
			if !transportLine(l) {
				line(l)
			}
		}
		if i >= len(t) || s.Media[i].Port == 0 || t[i].Ufrag == "" {
			continue
		}
		if t[i].Mid != "" && !mid {
			line("a=mid:" + t[i].Mid)
		}
		if t[i].MidExtension != 0 && !ext {
			line("a=extmap:" + strconv.Itoa(t[i].MidExtension) + " " + MidURI)
		}
		for _, l := range t[i].Lines() {
			line(l)
		}
		if !mux {
			line("a=rtcp-mux")
		}
	}
	return []byte(b.String()), nil
}

// WithoutTransport removes a WebRTC peer's ICE, DTLS and SDES attributes
// from a body going to a peer that speaks plain RTP (or gets its own
// a=crypto added after).
func WithoutTransport(body []byte) ([]byte, error) {
	s, err := Parse(body)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	for _, l := range s.lines {
		if transportLine(l) {
			continue
		}
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	return []byte(b.String()), nil
}

// WithoutDTLS removes a=fingerprint, a=setup and a=tls-id (RFC 8842),
// session or media level, from a body going to a leg that does not
// speak DTLS-SRTP; ICE lines are Rewrite's RemoveICE, a=crypto its
// MediaRewrite's.
func WithoutDTLS(body []byte) []byte {
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if strings.HasPrefix(l, "a=fingerprint:") || strings.HasPrefix(l, "a=setup:") || strings.HasPrefix(l, "a=tls-id:") {
			continue
		}
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	return []byte(b.String())
}
