// Package pushtest is what the push providers' tests share: a backoff
// whose waits are recorded instead of spent, and the check of them.
package pushtest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/push"
)

// Waits records the waits a provider's retries ask for.
type Waits struct {
	mu    sync.Mutex
	waits []time.Duration
}

// Backoff is b, its waits recorded by w and not spent.
func (w *Waits) Backoff(b push.Backoff) push.Backoff {
	b.Wait = func(_ context.Context, d time.Duration) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.waits = append(w.waits, d)
		return nil
	}
	return b
}

// All is the waits so far, in order.
func (w *Waits) All() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.waits...)
}

// Check requires the waits to be want, one for one: a want of -1 is one
// of the backoff's own delays, which backoff tells (i counts the waits
// from 0); any other is that wait exactly, a Retry-After.
func (w *Waits) Check(t testing.TB, want []time.Duration, backoff func(i int, d time.Duration) bool) {
	t.Helper()
	waits := w.All()
	if len(waits) != len(want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	for i, d := range want {
		if (d == -1 && !backoff(i, waits[i])) || (d != -1 && waits[i] != d) {
			t.Errorf("wait %d is %s, want %s (-1: the backoff's)", i, waits[i], d)
		}
	}
}
