package sdes

import (
	"slices"
	"strings"
)

// Flags are rtpengine's SDES options: the ng "SDES" list, and "flags"
// entries with an "SDES-" prefix (docs/ng_control_protocol.md).
type Flags struct {
	Off      bool            // off, no, disable: no a=crypto is offered
	No       map[string]bool // no-SUITE: never offered
	Only     map[string]bool // only-SUITE: offered, and no other
	Nonew    bool            // no suite is added to those received
	Order    []string        // order:A;B: these first, in this order
	Pref     []string        // offerer_pref:A;B: the offerer's suite, picked from these
	Pad      bool            // base64 keys keep their '=' padding
	Lifetime bool            // each key gets the lifetime 2^31
	// Session parameters forced on (true) or off (false); nil: copied
	// from the other side's crypto.
	UnencryptedSRTP, UnencryptedSRTCP, UnauthenticatedSRTP *bool
}

// ParseFlags reads the SDES list and the flags list of an ng request.
func ParseFlags(sdesList, flags []string) Flags {
	f := Flags{No: map[string]bool{}, Only: map[string]bool{}}
	opts := slices.Clone(sdesList)
	for _, fl := range flags {
		if len(fl) > 5 && strings.EqualFold(fl[:5], "SDES-") {
			opts = append(opts, fl[5:])
		}
		if strings.EqualFold(fl, "pad crypto") {
			opts = append(opts, "pad")
		}
	}
	on, off := true, false
	for _, o := range opts {
		lo := strings.ToLower(o)
		switch {
		case lo == "off" || lo == "no" || lo == "disable":
			f.Off = true
		case lo == "pad":
			f.Pad = true
		case lo == "lifetime":
			f.Lifetime = true
		case lo == "nonew":
			f.Nonew = true
		case lo == "unencrypted_srtp":
			f.UnencryptedSRTP = &on
		case lo == "encrypted_srtp":
			f.UnencryptedSRTP = &off
		case lo == "unencrypted_srtcp":
			f.UnencryptedSRTCP = &on
		case lo == "encrypted_srtcp":
			f.UnencryptedSRTCP = &off
		case lo == "unauthenticated_srtp":
			f.UnauthenticatedSRTP = &on
		case lo == "authenticated_srtp":
			f.UnauthenticatedSRTP = &off
		case strings.HasPrefix(lo, "no-"):
			f.No[strings.ToUpper(o[3:])] = true
		case strings.HasPrefix(lo, "only-"):
			f.Only[strings.ToUpper(o[5:])] = true
		case strings.HasPrefix(lo, "order:"):
			f.Order = suiteList(o[6:])
		case strings.HasPrefix(lo, "offerer_pref:"):
			f.Pref = suiteList(o[13:])
		}
	}
	return f
}

func suiteList(s string) []string {
	var out []string
	for _, n := range strings.Split(s, ";") {
		if n = strings.ToUpper(strings.TrimSpace(n)); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// allowed: the suite may be offered (only- takes precedence over no-).
func (f Flags) allowed(s Suite) bool {
	if len(f.Only) > 0 {
		return f.Only[s.Name]
	}
	return !f.No[s.Name] && !s.null()
}

// params applies the forced session parameters to p.
func (f Flags) params(p Params) Params {
	if f.UnencryptedSRTP != nil {
		p.UnencryptedSRTP = *f.UnencryptedSRTP
	}
	if f.UnencryptedSRTCP != nil {
		p.UnencryptedSRTCP = *f.UnencryptedSRTCP
	}
	if f.UnauthenticatedSRTP != nil {
		p.UnauthenticatedSRTP = *f.UnauthenticatedSRTP
	}
	return p
}

// Offer makes the anchor's own cryptos for the side an offer goes to,
// with fresh keys: the suites received from the offerer (same tags, same
// session parameters) that the flags allow, then, unless nonew, every
// other allowed suite with the next tags; order: moves those it names to
// the front. received is empty when the offerer spoke plain RTP.
func (f Flags) Offer(received []Crypto) ([]Crypto, error) {
	if f.Off {
		return nil, nil
	}
	var out []Crypto
	seen := map[string]bool{}
	next := 1
	for _, r := range received {
		next = max(next, r.Tag+1)
		keep := !f.No[r.Suite.Name] // a NULL suite the phone offered stays
		if len(f.Only) > 0 {
			keep = f.Only[r.Suite.Name]
		}
		if !keep || seen[r.Suite.Name] {
			continue
		}
		c, err := Generate(r.Tag, r.Suite, f.params(r.Params))
		if err != nil {
			return nil, err
		}
		out = append(out, f.lifetime(c))
		seen[r.Suite.Name] = true
	}
	if !f.Nonew {
		var base Params
		if len(received) > 0 {
			base = received[0].Params
		}
		for _, s := range Suites {
			if seen[s.Name] || !f.allowed(s) {
				continue
			}
			c, err := Generate(next, s, f.params(base))
			if err != nil {
				return nil, err
			}
			next++
			out = append(out, f.lifetime(c))
			seen[s.Name] = true
		}
	}
	if len(f.Order) > 0 {
		rank := func(c Crypto) int {
			if i := slices.Index(f.Order, c.Suite.Name); i >= 0 {
				return i
			}
			return len(f.Order)
		}
		slices.SortStableFunc(out, func(a, b Crypto) int { return rank(a) - rank(b) })
	}
	return out, nil
}

// lifetime writes 2^31 when asked: written, not enforced (the anchor
// never rekeys, and 2^31 packets are 1.3 years of 20 ms audio).
func (f Flags) lifetime(c Crypto) Crypto {
	if f.Lifetime {
		c.Lifetime = "2^31"
	}
	return c
}

// Pick chooses, among the offerer's cryptos, the one the anchor answers
// it with: the first of offerer_pref the offerer offered, else the suite
// the other side chose (when the offerer offered it too), else the
// offerer's first. false when the offerer offered none.
func (f Flags) Pick(offered []Crypto, chosen string) (Crypto, bool) {
	for _, name := range f.Pref {
		for _, c := range offered {
			if c.Suite.Name == name {
				return c, true
			}
		}
	}
	for _, c := range offered {
		if c.Suite.Name == chosen {
			return c, true
		}
	}
	if len(offered) == 0 {
		return Crypto{}, false
	}
	return offered[0], true
}

// Answer makes the anchor's crypto answering the offerer's crypto c: the
// same tag and suite, a fresh key, c's session parameters unless the
// flags force them.
func (f Flags) Answer(c Crypto) (Crypto, error) {
	a, err := Generate(c.Tag, c.Suite, f.params(c.Params))
	if err != nil {
		return Crypto{}, err
	}
	return f.lifetime(a), nil
}
