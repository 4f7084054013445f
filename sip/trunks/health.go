package trunks

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Gateway health, as Kamailio's dispatcher keeps it: a gateway that does
// not answer OPTIONS, or answers a call with 503 and Retry-After, is taken
// out and skipped until it answers again (or the Retry-After is over).

type health struct {
	mu    sync.Mutex
	down  map[string]time.Time // gateway key -> until when (zero: until a ping answers)
	state map[string]bool      // gateway key -> up, after the last ping
}

func key(g Gateway) string { return g.Trunk + "/" + g.Transport + ":" + g.Addr.String() }

// Down reports whether a gateway is out of service now.
func (t *Table) Down(g Gateway, now time.Time) bool {
	t.h.mu.Lock()
	defer t.h.mu.Unlock()
	until, ok := t.h.down[key(g)]
	return ok && (until.IsZero() || now.Before(until))
}

// Unavailable takes a gateway out for d after a 503 with Retry-After.
func (t *Table) Unavailable(g Gateway, d time.Duration, now time.Time) {
	t.h.mu.Lock()
	defer t.h.mu.Unlock()
	t.h.down[key(g)] = now.Add(d)
}

// Pinged records a ping's outcome.
func (t *Table) Pinged(g Gateway, up bool) {
	t.h.mu.Lock()
	defer t.h.mu.Unlock()
	t.h.state[key(g)] = up
	switch {
	case !up:
		t.h.down[key(g)] = time.Time{}
	case t.h.down[key(g)].IsZero():
		delete(t.h.down, key(g)) // back; a Retry-After still running stays
	}
}

// Gateways lists every gateway.
func (t *Table) Gateways() []Gateway {
	var out []Gateway
	names := make([]string, 0, len(t.trunks))
	for n := range t.trunks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, t.trunks[n].Gateways...)
	}
	return out
}

// Status is one gateway's state, for metrics and `sori trunk status`.
type Status struct {
	Trunk    string `json:"trunk"`
	Gateway  string `json:"gateway"`
	Priority int    `json:"priority"`
	Weight   int    `json:"weight"`
	Up       bool   `json:"up"`
	Calls    int    `json:"trunk_calls"`
	MaxCalls int    `json:"trunk_max_calls"`
}

// Status lists every gateway with its state.
func (t *Table) Status(now time.Time) []Status {
	var out []Status
	for _, g := range t.Gateways() {
		out = append(out, Status{Trunk: g.Trunk, Gateway: g.Transport + ":" + g.Addr.String(), Priority: g.Priority, Weight: g.Weight,
			Up: !t.Down(g, now), Calls: t.Calls(g.Trunk), MaxCalls: t.trunks[g.Trunk].MaxCalls})
	}
	return out
}

// Pinger asks a gateway whether it is up (an OPTIONS, sip/uac).
type Pinger interface {
	Ping(ctx context.Context, g Gateway) error
}

// Monitor pings every gateway each interval, until ctx ends. Gateways
// start up, as Kamailio's dispatcher has them: the first ping is one
// interval after start.
func (t *Table) Monitor(ctx context.Context, interval time.Duration, p Pinger) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var wg sync.WaitGroup
		for _, g := range t.Gateways() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, min(interval, 5*time.Second))
				defer cancel()
				t.Pinged(g, p.Ping(pctx, g) == nil)
			}()
		}
		wg.Wait()
	}
}

// RetryAfter reads a Retry-After value in seconds (RFC 3261 §20.33).
func RetryAfter(v string) (time.Duration, bool) {
	for i, c := range v {
		if c < '0' || c > '9' {
			v = v[:i]
			break
		}
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}
