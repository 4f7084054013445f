package numbers

import "strings"

// Route sends numbers starting with Prefix to Trunks, tried in order.
type Route struct {
	Prefix string // "+82", "+8210", "+" for everything
	Trunks []string
}

// Table finds routes by longest matching prefix.
type Table struct {
	routes []Route
}

// NewTable returns a Table (prefixes given without "+" get one).
func NewTable(rs []Route) *Table {
	t := &Table{}
	for _, r := range rs {
		if !strings.HasPrefix(r.Prefix, "+") {
			r.Prefix = "+" + r.Prefix
		}
		t.routes = append(t.routes, r)
	}
	return t
}

// Lookup returns the trunks for an E.164 number; ok is false when no
// route matches.
func (t *Table) Lookup(e164 string) ([]string, bool) {
	best := -1
	for i, r := range t.routes {
		if strings.HasPrefix(e164, r.Prefix) && (best < 0 || len(r.Prefix) > len(t.routes[best].Prefix)) {
			best = i
		}
	}
	if best < 0 {
		return nil, false
	}
	return t.routes[best].Trunks, true
}
