package timers

import (
	"testing"
	"time"
)

func TestPendingCountsArmedTimersOnly(t *testing.T) {
	var s Set
	fired := make(chan struct{})
	a := s.AfterFunc(time.Hour, func() { t.Error("a stopped timer fired") })
	s.AfterFunc(time.Millisecond, func() { close(fired) })
	if n := s.Pending(); n != 2 {
		t.Fatalf("pending %d, want 2", n)
	}
	<-fired
	if !a.Stop() || a.Stop() {
		t.Fatal("Stop: true once, then false")
	}
	if n := s.Pending(); n != 0 {
		t.Fatalf("pending %d after one fired and one stopped", n)
	}
	var none *Timer
	if none.Stop() {
		t.Fatal("a nil timer stopped")
	}
}

func TestStopAfterFireIsFalse(t *testing.T) {
	var s Set
	done := make(chan struct{})
	x := s.AfterFunc(time.Millisecond, func() { close(done) })
	<-done
	if x.Stop() {
		t.Fatal("Stop after the timer fired reported true")
	}
	if s.Pending() != 0 {
		t.Fatal("still pending")
	}
}
