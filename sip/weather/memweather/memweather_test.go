package memweather

import (
	"context"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/weather"
	"github.com/sori-voice/sori/sip/weather/weathertest"
)

func TestContract(t *testing.T) {
	weathertest.Run(t, func(t *testing.T, now func() time.Time, retention time.Duration) weather.Aggregator {
		return New(Options{Now: now, Retention: retention})
	})
}

// TestRetentionFreesHours: dropped hours leave memory, not only answers.
func TestRetentionFreesHours(t *testing.T) {
	now := time.Date(2026, 12, 1, 14, 30, 0, 0, time.UTC)
	clock := weathertest.NewClock(now)
	m := New(Options{Now: clock.Now, Retention: 24 * time.Hour})
	ctx := context.Background()
	for h := range 10 {
		r := weathertest.Record("x", now.Add(-time.Duration(h)*time.Hour), weathertest.Side("a", "lte", 10, 0, 1, 4.4, nil), nil)
		if err := m.Add(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if m.Hours() != 10 {
		t.Fatalf("%d hours", m.Hours())
	}
	// At 10:30 the next day, the hours that ended by 10:30 today go: 05:00
	// to 09:00; 10:00 to 14:00 stay.
	clock.Set(now.Add(20 * time.Hour))
	if _, err := m.Query(ctx, weather.Query{From: now.Add(-time.Hour), To: now}); err != nil {
		t.Fatal(err)
	}
	if m.Hours() != 5 {
		t.Fatalf("%d hours after 20 h, want 5", m.Hours())
	}
	if err := m.Clear(ctx); err != nil || m.Hours() != 0 {
		t.Fatalf("clear: %v, %d hours", err, m.Hours())
	}
	// Negative retention keeps everything.
	all := New(Options{Now: clock.Now, Retention: -1})
	if err := all.Add(ctx, weathertest.Record("y", now.AddDate(-2, 0, 0), weathertest.Side("a", "lte", 10, 0, 1, 4.4, nil), nil)); err != nil || all.Hours() != 1 {
		t.Fatalf("no retention: %v, %d hours", err, all.Hours())
	}
}
