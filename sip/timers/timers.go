// Package timers arms the timers sori keeps for calls and forks (a call's
// expiry, timer C, a cancelled branch's wait) and counts those still
// pending, so that a timer outliving its call shows up in
// sori_timers_pending instead of hiding in the runtime.
package timers

import (
	"sync"
	"sync/atomic"
	"time"
)

// Set counts its pending timers. The zero value is ready.
type Set struct{ n atomic.Int64 }

// Pending is the number of timers armed and neither fired nor stopped.
func (s *Set) Pending() int64 { return s.n.Load() }

// AfterFunc calls f in its own goroutine after d, unless stopped first.
func (s *Set) AfterFunc(d time.Duration, f func()) *Timer {
	t := &Timer{s: s}
	s.n.Add(1)
	t.t = time.AfterFunc(d, func() {
		if t.settle() {
			f()
		}
	})
	return t
}

// Timer is one armed timer.
type Timer struct {
	s    *Set
	t    *time.Timer
	once sync.Once
	done atomic.Bool
}

// settle marks the timer no longer pending; true the first time.
func (t *Timer) settle() bool {
	first := false
	t.once.Do(func() {
		first = true
		t.done.Store(true)
		t.s.n.Add(-1)
	})
	return first
}

// Stop keeps f from being called; false when it already was (or is
// running). A nil Timer is stopped.
func (t *Timer) Stop() bool {
	if t == nil {
		return false
	}
	t.t.Stop()
	return t.settle()
}
