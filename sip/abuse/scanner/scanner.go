// Package scanner recognises the User-Agents of SIP scanners and
// password crackers (SIPVicious' "friendly-scanner", sipcli, ...): their
// requests deserve no answer at all.
package scanner

import "strings"

// Default is the built-in list: substrings of User-Agents only scanning and
// cracking tools send.
var Default = []string{
	"friendly-scanner", // SIPVicious svmap/svwar/svcrack
	"sipvicious",
	"sipcli",
	"sip-scan",
	"vaxsipuseragent",
	"iwar",
	"sundayddr",
	"sivus",
	"smap",
	"pplsip",
	"siparmyknife",
}

// Matcher tells scanner User-Agents apart, case-insensitively.
type Matcher struct{ patterns []string }

// New returns a Matcher for these substrings (case-insensitive); empty
// ones are left out.
func New(patterns []string) *Matcher {
	m := &Matcher{}
	for _, p := range patterns {
		if p = strings.ToLower(strings.TrimSpace(p)); p != "" {
			m.patterns = append(m.patterns, p)
		}
	}
	return m
}

// Match reports whether ua contains one of the patterns.
func (m *Matcher) Match(ua string) bool {
	if len(m.patterns) == 0 || ua == "" {
		return false
	}
	// Lower-case into a stack buffer: no allocation for any real User-Agent.
	var buf [256]byte
	var low string
	if len(ua) <= len(buf) {
		b := buf[:len(ua)]
		for i := 0; i < len(ua); i++ {
			c := ua[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b[i] = c
		}
		low = unsafeString(b)
	} else {
		low = strings.ToLower(ua)
	}
	for _, p := range m.patterns {
		if strings.Contains(low, p) {
			return true
		}
	}
	return false
}
