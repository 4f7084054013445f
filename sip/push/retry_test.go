package push

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, value string
		want        time.Duration
	}{
		{"absent", "", 0},
		{"seconds", "3", 3 * time.Second},
		{"seconds with spaces", " 120 ", 2 * time.Minute},
		{"zero", "0", 0},
		{"negative", "-5", 0},
		{"garbage", "soon", 0},
		{"an HTTP date ahead", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"an HTTP date past", now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"a year is a day", "31536000", 24 * time.Hour},
		{"overflowing seconds", "99999999999999999999", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseRetryAfter(tc.value, now); got != tc.want {
				t.Errorf("ParseRetryAfter(%q) = %s, want %s", tc.value, got, tc.want)
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for _, tc := range []struct {
		retry int
		full  time.Duration // the delay before jitter
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{60, time.Second},
	} {
		for range 50 {
			if d := b.Delay(tc.retry); d < tc.full/2 || d > tc.full {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", tc.retry, d, tc.full/2, tc.full)
			}
		}
	}
	if d := (Backoff{}).Delay(1); d < DefaultBase/2 || d > DefaultBase {
		t.Errorf("the default first delay is %s, want within [%s, %s]", d, DefaultBase/2, DefaultBase)
	}
}

func TestRetry(t *testing.T) {
	overloaded := &Error{Provider: "test", Status: 429}
	failing := &Error{Provider: "test", Status: 500}
	unavailableFor := func(d time.Duration) *Error { return &Error{Provider: "test", Status: 503, RetryAfter: d} }
	refused := &Error{Provider: "test", Status: 400, Reason: "BadRequest"}
	gone := &Error{Provider: "test", Status: 410, Err: ErrUnregistered}
	unanswered := &Error{Provider: "test", Reason: "no answer", Err: io.ErrUnexpectedEOF}
	plain := errors.New("not a push error")

	for _, tc := range []struct {
		name         string
		answers      []error // one per send; nil is success
		maxAttempts  int
		wantSends    int
		wantWaits    []time.Duration // exact ones; -1 is a backoff delay
		wantErr      error
		wantAttempts int
	}{
		{name: "first send succeeds", answers: []error{nil}, wantSends: 1},
		{name: "429 then success", answers: []error{overloaded, nil}, wantSends: 2, wantWaits: []time.Duration{-1}},
		{name: "Retry-After is honoured", answers: []error{unavailableFor(2 * time.Second), nil}, wantSends: 2, wantWaits: []time.Duration{2 * time.Second}},
		{name: "5xx until the attempts run out", answers: []error{failing, failing, failing, failing}, maxAttempts: 3, wantSends: 3,
			wantWaits: []time.Duration{-1, -1}, wantErr: failing, wantAttempts: 3},
		{name: "the default is three attempts", answers: []error{failing, failing, failing, failing}, wantSends: 3,
			wantWaits: []time.Duration{-1, -1}, wantErr: failing, wantAttempts: 3},
		{name: "a 4xx is final", answers: []error{refused, nil}, wantSends: 1, wantErr: refused, wantAttempts: 1},
		{name: "unregistered is final", answers: []error{gone, nil}, wantSends: 1, wantErr: ErrUnregistered, wantAttempts: 1},
		{name: "no answer is retried", answers: []error{unanswered, nil}, wantSends: 2, wantWaits: []time.Duration{-1}},
		{name: "another error is final", answers: []error{plain, nil}, wantSends: 1, wantErr: plain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var waits []time.Duration
			b := Backoff{Base: 10 * time.Millisecond, Max: 40 * time.Millisecond,
				Wait: func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }}
			sends := 0
			err := Retry(context.Background(), tc.maxAttempts, b, func(context.Context) error {
				sends++
				return tc.answers[sends-1]
			})
			if sends != tc.wantSends {
				t.Errorf("%d sends, want %d", sends, tc.wantSends)
			}
			if tc.wantErr == nil && err != nil {
				t.Errorf("err = %v, want none", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if len(waits) != len(tc.wantWaits) {
				t.Fatalf("waits %v, want %v", waits, tc.wantWaits)
			}
			for i, w := range tc.wantWaits {
				if w == -1 && (waits[i] < 5*time.Millisecond || waits[i] > 40*time.Millisecond) {
					t.Errorf("wait %d is %s, not a backoff delay", i, waits[i])
				}
				if w != -1 && waits[i] != w {
					t.Errorf("wait %d is %s, want %s", i, waits[i], w)
				}
			}
			var pe *Error
			if tc.wantAttempts != 0 && (!errors.As(err, &pe) || pe.Attempts != tc.wantAttempts) {
				t.Errorf("err %v does not say %d attempts", err, tc.wantAttempts)
			}
		})
	}
}

func TestRetryStopsWithItsContext(t *testing.T) {
	t.Run("a wait past the deadline is not begun", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		waited := false
		b := Backoff{Wait: func(context.Context, time.Duration) error { waited = true; return nil }}
		sends := 0
		err := Retry(ctx, 5, b, func(context.Context) error {
			sends++
			return &Error{Provider: "test", Status: 503, RetryAfter: time.Hour}
		})
		if sends != 1 || waited || err == nil || !strings.Contains(err.Error(), "deadline") {
			t.Errorf("sends %d, waited %v, err %v: want one send, no wait, an error naming the deadline", sends, waited, err)
		}
	})
	t.Run("cancelling ends the wait", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		waiting := make(chan struct{})
		b := Backoff{Base: time.Hour, Max: time.Hour}
		done := make(chan error, 1)
		sends := 0
		go func() {
			done <- Retry(ctx, 5, b, func(context.Context) error {
				sends++
				close(waiting)
				return &Error{Provider: "test", Status: 500}
			})
		}()
		<-waiting
		cancel()
		err := <-done
		var pe *Error
		if !errors.Is(err, context.Canceled) || !errors.As(err, &pe) || pe.Status != 500 || sends != 1 {
			t.Errorf("err %v after %d sends, want the 500 and context.Canceled after one", err, sends)
		}
	})
}

func TestError(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       *Error
		text      []string
		temporary bool
	}{
		{"unregistered", &Error{Provider: "apns", Status: 410, Reason: "Unregistered", ID: "abc", Err: ErrUnregistered},
			[]string{"apns", "410", "Unregistered", "abc", ErrUnregistered.Error()}, false},
		{"overloaded", &Error{Provider: "fcm", Status: 429, Reason: "QUOTA_EXCEEDED", Attempts: 3},
			[]string{"fcm", "429", "QUOTA_EXCEEDED", "after 3 attempts"}, true},
		{"failing", &Error{Provider: "webhook", Status: 502}, []string{"webhook", "502"}, true},
		{"refused", &Error{Provider: "webhook", Status: 403, Reason: "Forbidden"}, []string{"403", "Forbidden"}, false},
		{"unanswered", &Error{Provider: "apns", Reason: "no answer", Err: io.ErrUnexpectedEOF}, []string{"no answer", "unexpected EOF"}, true},
		{"cancelled", &Error{Provider: "apns", Reason: "no answer", Err: context.Canceled}, []string{"canceled"}, false},
		{"refused here", &Error{Provider: "apns", Reason: "no device token (pn-prid)"}, []string{"pn-prid"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range tc.text {
				if !strings.Contains(tc.err.Error(), s) {
					t.Errorf("%q does not say %q", tc.err.Error(), s)
				}
			}
			if tc.err.Temporary() != tc.temporary {
				t.Errorf("Temporary() = %v, want %v", !tc.temporary, tc.temporary)
			}
		})
	}
}
