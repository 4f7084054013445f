// Package memweather keeps the weather cells in the process: for one node,
// or for a command that rebuilds them from a call-record file.
package memweather

import (
	"context"
	"sync"
	"time"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/weather"
)

// Options configure a Memory.
type Options struct {
	// Retention: hours whose end is older are dropped and records in them
	// ignored. 0 is weather.DefaultRetention; negative keeps everything.
	Retention time.Duration
	Now       func() time.Time // default time.Now
}

// Memory implements weather.Aggregator and weather.Clearer.
type Memory struct {
	retention time.Duration
	now       func() time.Time

	mu     sync.Mutex
	hours  map[time.Time]map[weather.Cell]*weather.Counters
	pruned time.Time // the oldest retained hour at the last prune
}

// New returns an empty Memory.
func New(o Options) *Memory {
	m := &Memory{retention: o.Retention, now: o.Now, hours: map[time.Time]map[weather.Cell]*weather.Counters{}}
	if m.retention == 0 {
		m.retention = weather.DefaultRetention
	}
	if m.now == nil {
		m.now = time.Now
	}
	return m
}

// oldest is the first retained hour at now; the zero time without retention.
func (m *Memory) oldest() time.Time {
	if m.retention < 0 {
		return time.Time{}
	}
	return weather.OldestRetained(m.now(), m.retention)
}

// prune drops hours before oldest, once per hour that becomes old (the
// walk over the hours is then rare, not per record). m.mu is held.
func (m *Memory) prune(oldest time.Time) {
	if !oldest.After(m.pruned) {
		return
	}
	for h := range m.hours {
		if h.Before(oldest) {
			delete(m.hours, h)
		}
	}
	m.pruned = oldest
}

// Add implements weather.Aggregator.
func (m *Memory) Add(_ context.Context, r calls.Record) error {
	obs := weather.Observe(r)
	if len(obs) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	oldest := m.oldest()
	m.prune(oldest)
	for i := range obs {
		o := &obs[i]
		if o.Cell.Hour.Before(oldest) {
			continue
		}
		cells := m.hours[o.Cell.Hour]
		if cells == nil {
			cells = map[weather.Cell]*weather.Counters{}
			m.hours[o.Cell.Hour] = cells
		}
		c := cells[o.Cell]
		if c == nil {
			c = new(weather.Counters)
			cells[o.Cell] = c
		}
		c.Add(&o.Counters)
	}
	return nil
}

// Query implements weather.Aggregator.
func (m *Memory) Query(_ context.Context, q weather.Query) ([]weather.Row, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	oldest := m.oldest()
	m.prune(oldest)
	// The hours held are few (the retention's), a query's range may be
	// long: walk the former. Group keeps only q's hours.
	// The same hours as weather.Query.Hours would list.
	from, to := q.From.UTC().Truncate(time.Hour), q.To
	if ahead := m.now().Add(24 * time.Hour); to.After(ahead) {
		to = ahead
	}
	var obs []weather.Observation
	for h, cells := range m.hours {
		if h.Before(oldest) || h.Before(from) || !h.Before(to) {
			continue
		}
		for cell, c := range cells {
			if q.Wants(cell.Tag) {
				obs = append(obs, weather.Observation{Cell: cell, Counters: *c})
			}
		}
	}
	m.mu.Unlock()
	return weather.Group(q, obs), nil
}

// Clear implements weather.Clearer.
func (m *Memory) Clear(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.hours)
	return nil
}

// Hours is the number of hours held (for tests and metrics).
func (m *Memory) Hours() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.hours)
}
