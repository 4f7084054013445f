// Package tollfraud caps what one user may spend on carrier trunks: calls
// out at once, and calls out per hour. A stolen password then costs the
// operator a few calls, not a night of premium-rate minutes.
//
// Calls in progress are counted on this node from the moment a call is sent
// to a trunk until End (any way the call ends), or until its deadline when
// End never comes. The hourly count is kept by an HourlyCounter: in this
// process, or in Redis so that every node counts against the same limit.
package tollfraud

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits for one user; 0 is no limit.
type Limits struct {
	MaxCalls     int // trunk calls at once
	CallsPerHour int // trunk calls started in one clock hour (UTC)
}

// HourlyCounter counts a user's calls in an hour.
type HourlyCounter interface {
	// Incr adds one call for user in hour (truncated to the hour) and
	// returns the count so far.
	Incr(ctx context.Context, user string, hour time.Time) (int64, error)
}

// LimitError is a call refused by a limit.
type LimitError struct {
	Limit string // "concurrent" or "hourly"
	Max   int
}

func (e *LimitError) Error() string { return e.Reason() }

// Reason is the SIP reason phrase of the refusal (after "Forbidden: ").
func (e *LimitError) Reason() string {
	if e.Limit == "concurrent" {
		return fmt.Sprintf("Trunk Call Limit (%d At Once)", e.Max)
	}
	return fmt.Sprintf("Hourly Trunk Call Limit (%d)", e.Max)
}

// Guard applies the limits.
type Guard struct {
	defaults Limits
	perUser  map[string]Limits
	hourly   HourlyCounter
	ttl      time.Duration
	now      func() time.Time
	refused  *prometheus.CounterVec

	mu     sync.Mutex
	byCall map[string]lease           // Call-ID -> its user
	byUser map[string]map[string]bool // user -> Call-IDs in progress
}

type lease struct {
	user     string
	deadline time.Time
}

// New returns a Guard. perUser overrides defaults for some users; ttl is
// the longest a call is counted without End (sip.dialog_timeout). reg may
// be nil.
func New(defaults Limits, perUser map[string]Limits, hourly HourlyCounter, ttl time.Duration, reg prometheus.Registerer) *Guard {
	if hourly == nil {
		hourly = NewMemoryCounter()
	}
	g := &Guard{defaults: defaults, perUser: perUser, hourly: hourly, ttl: ttl, now: time.Now,
		byCall: map[string]lease{}, byUser: map[string]map[string]bool{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_toll_limited_total",
			Help: "Trunk calls refused (403) by a per-user limit: concurrent or hourly.",
		}, []string{"limit"})}
	g.refused.WithLabelValues("concurrent")
	g.refused.WithLabelValues("hourly")
	if reg != nil {
		reg.MustRegister(g.refused)
	}
	return g
}

// Limits returns user's limits.
func (g *Guard) Limits(user string) Limits {
	if l, ok := g.perUser[user]; ok {
		return l
	}
	return g.defaults
}

// Begin counts a trunk call of user with callID. A *LimitError refuses
// it; another error means the hourly count could not be read (the call
// is refused too). A call Begun twice (a spiral) is counted once.
func (g *Guard) Begin(ctx context.Context, user, callID string) error {
	lim := g.Limits(user)
	now := g.now()
	g.mu.Lock()
	if _, ok := g.byCall[callID]; ok {
		g.mu.Unlock()
		return nil
	}
	calls := g.byUser[user]
	for id := range calls {
		if !now.Before(g.byCall[id].deadline) { // End never came
			delete(calls, id)
			delete(g.byCall, id)
		}
	}
	if lim.MaxCalls > 0 && len(calls) >= lim.MaxCalls {
		g.mu.Unlock()
		g.refused.WithLabelValues("concurrent").Inc()
		return &LimitError{Limit: "concurrent", Max: lim.MaxCalls}
	}
	if calls == nil {
		calls = map[string]bool{}
		g.byUser[user] = calls
	}
	calls[callID] = true
	g.byCall[callID] = lease{user: user, deadline: now.Add(g.ttl)}
	g.mu.Unlock()

	if lim.CallsPerHour > 0 {
		n, err := g.hourly.Incr(ctx, user, now.UTC().Truncate(time.Hour))
		if err == nil && n > int64(lim.CallsPerHour) {
			g.refused.WithLabelValues("hourly").Inc()
			err = &LimitError{Limit: "hourly", Max: lim.CallsPerHour}
		}
		if err != nil {
			g.End(callID)
			return err
		}
	}
	return nil
}

// Resume counts a call of user with callID that began on another node or
// before a restart (it was checked and counted in its hour then): it is in
// progress here until End, with no limit checked.
func (g *Guard) Resume(user, callID string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.byCall[callID]; ok {
		return
	}
	if g.byUser[user] == nil {
		g.byUser[user] = map[string]bool{}
	}
	g.byUser[user][callID] = true
	g.byCall[callID] = lease{user: user, deadline: g.now().Add(g.ttl)}
}

// End stops counting a call; calls not Begun are ignored.
func (g *Guard) End(callID string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	l, ok := g.byCall[callID]
	if !ok {
		return
	}
	delete(g.byCall, callID)
	delete(g.byUser[l.user], callID)
	if len(g.byUser[l.user]) == 0 {
		delete(g.byUser, l.user)
	}
}

// Active is the number of trunk calls user has in progress on this node.
func (g *Guard) Active(user string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.byUser[user])
}

// MemoryCounter counts in this process.
type MemoryCounter struct {
	mu sync.Mutex
	m  map[string]hourCount
}

type hourCount struct {
	hour time.Time
	n    int64
}

// NewMemoryCounter returns an empty counter.
func NewMemoryCounter() *MemoryCounter { return &MemoryCounter{m: map[string]hourCount{}} }

// Incr implements HourlyCounter. One entry per user: an older hour is reset.
func (c *MemoryCounter) Incr(_ context.Context, user string, hour time.Time) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.m[user]
	if !h.hour.Equal(hour) {
		h = hourCount{hour: hour}
	}
	h.n++
	c.m[user] = h
	return h.n, nil
}

// HourKey is the Redis key of user's count in hour: sori:toll:{USER}:YYYYMMDDHH.
func HourKey(user string, hour time.Time) string {
	return "sori:toll:{" + strings.ReplaceAll(user, "}", "") + "}:" + hour.UTC().Format("2006010215")
}
