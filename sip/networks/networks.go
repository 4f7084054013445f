// Package networks names the network a phone is on, so call quality can be
// compared carrier by carrier: by the P-Access-Network-Info header it sent
// (RFC 7315; the cell identity starts with the PLMN, MCC+MNC), else by the
// address its media came from (the longest configured prefix).
package networks

import (
	"net/netip"
	"strings"
)

// Network is one named network.
type Network struct {
	Name     string
	Prefixes []netip.Prefix
	PLMNs    []string
}

// Classifier finds networks.
type Classifier struct {
	nets []Network
}

// New returns a Classifier over nets (nil: every phone is "").
func New(nets []Network) *Classifier { return &Classifier{nets: nets} }

// Classify names the network of a phone whose media came from addr and
// who sent pani ("" when it sent none); "" when none matches.
func (c *Classifier) Classify(addr netip.Addr, pani string) string {
	if c == nil {
		return ""
	}
	if cell := cellID(pani); cell != "" {
		for _, n := range c.nets {
			for _, p := range n.PLMNs {
				if strings.HasPrefix(cell, p) {
					return n.Name
				}
			}
		}
	}
	best, bits := "", -1
	addr = addr.Unmap()
	for _, n := range c.nets {
		for _, p := range n.Prefixes {
			if p.Contains(addr) && p.Bits() > bits {
				best, bits = n.Name, p.Bits()
			}
		}
	}
	return best
}

// cellID returns the cell identity of a P-Access-Network-Info value:
// "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=45005..." (LTE and NR), or
// "3GPP-GERAN; cgi-3gpp=..." (RFC 7315 §5.4).
func cellID(pani string) string {
	for _, part := range strings.Split(pani, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "utran-cell-id-3gpp", "cgi-3gpp", "utran-sai-3gpp":
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return ""
}
