package networks

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	c := New([]Network{
		{Name: "carrier-a", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, PLMNs: []string{"45005"}},
		{Name: "carrier-a-lte-pool", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.128/25")}},
		{Name: "carrier-b", Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:b::/48")}, PLMNs: []string{"45008", "310410"}},
	})
	tests := []struct {
		name, addr, pani, want string
	}{
		{"by address", "203.0.113.7", "", "carrier-a"},
		{"the longest prefix wins", "203.0.113.200", "", "carrier-a-lte-pool"},
		{"IPv6", "2001:db8:b::99", "", "carrier-b"},
		{"v4-mapped", "::ffff:203.0.113.7", "", "carrier-a"},
		{"unknown address", "198.51.100.1", "", ""},
		{"PANI beats the address (roaming, a tunnel)", "203.0.113.7", "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=45008001a2b3c4d5", "carrier-b"},
		{"PANI with a 3-digit MNC", "198.51.100.1", "3GPP-NR-FDD;utran-cell-id-3gpp=310410000001", "carrier-b"},
		{"PANI of GERAN, quoted", "198.51.100.1", `3GPP-GERAN; cgi-3gpp="45005123456789"`, "carrier-a"},
		{"PANI of Wi-Fi: no cell, the address decides", "203.0.113.7", "IEEE-802.11; i-wlan-node-id=ffeeddccbbaa", "carrier-a"},
		{"PANI of an unknown PLMN", "198.51.100.1", "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=26201000", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Classify(netip.MustParseAddr(tt.addr), tt.pani); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	var none *Classifier
	if none.Classify(netip.MustParseAddr("203.0.113.7"), "") != "" {
		t.Fatal("a nil classifier named a network")
	}
}
