package pushtest

import (
	"context"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/push"
)

func TestWaitsRecordedNotSpent(t *testing.T) {
	var w Waits
	b := w.Backoff(push.Backoff{Base: time.Hour, Max: time.Hour})
	if b.Base != time.Hour || b.Max != time.Hour {
		t.Fatalf("Backoff changed the delays: %+v", b)
	}
	calls := 0
	start := time.Now()
	err := push.Retry(context.Background(), 3, b, func(context.Context) error {
		calls++
		if calls == 1 {
			return &push.Error{Status: 503, RetryAfter: 2 * time.Second}
		}
		return &push.Error{Status: 503}
	})
	if err == nil || calls != 3 || time.Since(start) > time.Minute {
		t.Fatalf("Retry: %v after %d sends and %s", err, calls, time.Since(start))
	}
	if got := w.All(); len(got) != 2 || got[0] != 2*time.Second || got[1] < 30*time.Minute || got[1] > time.Hour {
		t.Fatalf("waits %v: want the Retry-After, then a backoff delay of the hour", got)
	}
	w.Check(t, []time.Duration{2 * time.Second, -1}, func(i int, d time.Duration) bool { return i == 1 && d <= time.Hour })
}
