// Package trunks knows the carriers sori peers with: which gateways to try,
// in which order, for a number, and which user owns a number.
package trunks

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/sori-voice/sori/sip/numbers"
)

// Gateway is one address of a trunk.
type Gateway struct {
	Trunk     string
	Addr      netip.AddrPort
	Transport string // UDP or TCP
	Priority  int
	Weight    int
}

// Trunk is a carrier.
type Trunk struct {
	Name     string
	Gateways []Gateway
}

// Table routes numbers.
type Table struct {
	plan   numbers.Plan
	routes *numbers.Table
	trunks map[string]Trunk
	owners map[string]string // E.164 -> user
	users  map[string]string // user -> first number
}

// New builds a Table. Gateways are ordered by priority, then weight.
func New(plan numbers.Plan, trunks []Trunk, routes []numbers.Route, userNumbers map[string][]string) *Table {
	t := &Table{plan: plan, routes: numbers.NewTable(routes), trunks: map[string]Trunk{}, owners: map[string]string{}, users: map[string]string{}}
	for _, tr := range trunks {
		gws := slices.Clone(tr.Gateways)
		slices.SortStableFunc(gws, func(a, b Gateway) int {
			if a.Priority != b.Priority {
				return a.Priority - b.Priority
			}
			return b.Weight - a.Weight
		})
		for i := range gws {
			gws[i].Trunk = tr.Name
			gws[i].Transport = strings.ToUpper(gws[i].Transport)
		}
		t.trunks[tr.Name] = Trunk{Name: tr.Name, Gateways: gws}
	}
	for user, ns := range userNumbers {
		for i, n := range ns {
			t.owners[n] = user
			if i == 0 {
				t.users[user] = n
			}
		}
	}
	return t
}

// Plan is the numbering plan.
func (t *Table) Plan() numbers.Plan { return t.plan }

// Owner is the user who owns a number.
func (t *Table) Owner(e164 string) (string, bool) {
	u, ok := t.owners[e164]
	return u, ok
}

// NumberOf is a user's (first) number, for P-Asserted-Identity.
func (t *Table) NumberOf(user string) (string, bool) {
	n, ok := t.users[user]
	return n, ok
}

// Outbound lists the gateways to try for a number, trunk by trunk in the
// route's order; none when no route matches.
func (t *Table) Outbound(e164 string) []Gateway {
	names, ok := t.routes.Lookup(e164)
	if !ok {
		return nil
	}
	var out []Gateway
	for _, n := range names {
		out = append(out, t.trunks[n].Gateways...)
	}
	return out
}
