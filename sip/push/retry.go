package push

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The defaults of Retry and Backoff: a push is for a call ringing now, so a
// few quick tries, not a long siege.
const (
	DefaultMaxAttempts = 3
	DefaultBase        = 200 * time.Millisecond
	DefaultMax         = 5 * time.Second
)

// Backoff is how long Retry waits between attempts: Base, doubled each
// time up to Max, the upper half of it at random so that pushes failed
// together do not come back together.
type Backoff struct {
	Base time.Duration // the first wait; 0 means DefaultBase
	Max  time.Duration // the longest wait but a Retry-After; 0 means DefaultMax
	// Wait waits d, or returns ctx's error when ctx ends first; nil means a
	// timer. Tests replace it to see the waits without spending them.
	Wait func(ctx context.Context, d time.Duration) error
}

// Delay is the wait before retry n (n ≥ 1) when the service named none.
func (b Backoff) Delay(n int) time.Duration {
	base, maxWait := b.Base, b.Max
	if base <= 0 {
		base = DefaultBase
	}
	if maxWait <= 0 {
		maxWait = DefaultMax
	}
	d := base
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	half := d / 2
	return half + rand.N(d-half+1)
}

func (b Backoff) wait(ctx context.Context, d time.Duration) error {
	if b.Wait != nil {
		return b.Wait(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Retry calls send until it succeeds, fails with an error that is not a
// temporary *Error (a 4xx other than 429 is final), maxAttempts sends were
// made (0 means DefaultMaxAttempts), or ctx ends. Between sends it waits the
// service's Retry-After when it gave one, else b's backoff; a wait that
// would end past ctx's deadline is not begun. The error returned is send's
// last, its *Error's Attempts set.
func Retry(ctx context.Context, maxAttempts int, b Backoff, send func(ctx context.Context) error) error {
	if maxAttempts <= 0 {
		maxAttempts = DefaultMaxAttempts
	}
	for attempt := 1; ; attempt++ {
		err := send(ctx)
		if err == nil {
			return nil
		}
		var pe *Error
		if !errors.As(err, &pe) {
			return err
		}
		pe.Attempts = attempt
		if !pe.Temporary() || attempt >= maxAttempts {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("%w (retry abandoned: %w)", err, cerr)
		}
		d := pe.RetryAfter
		if d <= 0 {
			d = b.Delay(attempt)
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < d {
			return fmt.Errorf("%w (a retry in %s would be past the deadline)", err, d)
		}
		if werr := b.wait(ctx, d); werr != nil {
			return fmt.Errorf("%w (retry abandoned: %w)", err, werr)
		}
	}
}

// ParseRetryAfter reads a Retry-After value (RFC 9110 §10.2.3): seconds, or
// an HTTP date, which is measured from now. It is 0 when v is empty, not
// understood, or already past, and a day at most.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		// Bounded so the multiplication cannot overflow; a wait of a day
		// is past any push's deadline anyway.
		return time.Duration(min(s, int64(24*time.Hour/time.Second))) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return max(t.Sub(now), 0)
}
