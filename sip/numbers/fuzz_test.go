package numbers

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// FuzzE164: any dialled user part is a number of 7 to 15 digits after a
// '+' or refused, and normalising a normalised number changes nothing;
// a URI's number is the same; the route table finds a route or none.
func FuzzE164(f *testing.F) {
	for _, s := range []string{"+82 10-1111-2222", "010-1111-2222", "0044 20 7946 0000", "00182101111", "alice", "+", "", "(0)10.1111.2222", "1234", "+1234567890123456", "+82１０", "010;phone-context=+82"} {
		f.Add(s, "82", "0", "00")
	}
	f.Add("001 555 0100 123", "1", "1", "011")
	f.Add("0000000000", "", "0", "0")
	table := NewTable([]Route{{Prefix: "+8210", Trunks: []string{"sip:a@192.0.2.1"}}, {Prefix: "+82", Trunks: []string{"sip:b@192.0.2.2"}}, {Prefix: "+", Trunks: []string{"sip:c@192.0.2.3"}}})
	f.Fuzz(func(t *testing.T, dialled, cc, national, international string) {
		p := Plan{CountryCode: cc, NationalPrefix: national, InternationalPrefix: international}
		if strings.Trim(cc+national+international, "0123456789") != "" {
			return // config refuses such a plan: its prefixes are digits
		}
		n, err := p.E164(dialled)
		if err == nil {
			if len(n) < 8 || len(n) > 16 || n[0] != '+' || strings.Trim(n[1:], "0123456789") != "" {
				t.Fatalf("E164(%q) = %q", dialled, n)
			}
			if again, err := p.E164(n); err != nil || again != n {
				t.Fatalf("E164(%q) = %q, %v: not idempotent", n, again, err)
			}
			if _, ok := table.Lookup(n); !ok {
				t.Fatalf("%q: no route, not even '+'", n)
			}
		}
		_, _ = table.Lookup(dialled)
		var u sip.Uri
		if sip.ParseUri("sip:"+dialled+"@sori.test", &u) == nil {
			_, _ = p.FromURI(u)
		}
		if sip.ParseUri("tel:"+dialled, &u) == nil {
			_, _ = p.FromURI(u)
		}
	})
}
