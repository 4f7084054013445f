// Package trunks knows the carriers sori peers with: which gateways to try,
// in which order, for a number, and which user owns a number.
package trunks

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

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
	Name       string
	Gateways   []Gateway
	InboundACL []netip.Prefix // sources trusted for calls from the carrier
	MaxCalls   int            // concurrent answered calls; 0: no limit
}

// Table routes numbers.
type Table struct {
	plan   numbers.Plan
	routes *numbers.Table
	trunks map[string]Trunk

	mu    sync.Mutex
	calls map[string]int // trunk -> answered calls in progress

	h health
}

// New builds a Table. Gateways are ordered by priority, then weight.
func New(plan numbers.Plan, trunks []Trunk, routes []numbers.Route) *Table {
	t := &Table{plan: plan, routes: numbers.NewTable(routes), trunks: map[string]Trunk{},
		calls: map[string]int{}, h: health{down: map[string]time.Time{}, state: map[string]bool{}}}
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
		t.trunks[tr.Name] = Trunk{Name: tr.Name, Gateways: gws, InboundACL: tr.InboundACL, MaxCalls: tr.MaxCalls}
	}
	return t
}

// Plan is the numbering plan.
func (t *Table) Plan() numbers.Plan { return t.plan }

// Outbound lists the gateways to try for a number, trunk by trunk in the
// route's order, leaving out trunks at their call limit; routed is false
// when no route matches at all.
func (t *Table) Outbound(e164 string) (gws []Gateway, routed bool) {
	names, ok := t.routes.Lookup(e164)
	if !ok {
		return nil, false
	}
	now := time.Now()
	for _, n := range names {
		if t.Full(n) {
			continue
		}
		for _, g := range t.trunks[n].Gateways {
			if !t.Down(g, now) {
				gws = append(gws, g)
			}
		}
	}
	return gws, true
}

// Carrier is the trunk whose inbound ACL holds src.
func (t *Table) Carrier(src netip.Addr) (string, bool) {
	src = src.Unmap()
	for _, tr := range t.trunks {
		for _, p := range tr.InboundACL {
			if p.Contains(src) {
				return tr.Name, true
			}
		}
	}
	return "", false
}

// Full reports whether a trunk has as many calls as it may.
func (t *Table) Full(trunk string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	max := t.trunks[trunk].MaxCalls
	return max > 0 && t.calls[trunk] >= max
}

// Acquire takes one of a trunk's call slots (sip/call holds it for an
// answered call until the call ends, whichever way).
func (t *Table) Acquire(trunk string) {
	t.mu.Lock()
	t.calls[trunk]++
	t.mu.Unlock()
}

// Release gives a slot back.
func (t *Table) Release(trunk string) {
	t.mu.Lock()
	if t.calls[trunk] > 0 {
		t.calls[trunk]--
	}
	t.mu.Unlock()
}

// Calls is the number of answered calls on a trunk.
func (t *Table) Calls(trunk string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.calls[trunk]
}
