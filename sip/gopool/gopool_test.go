package gopool

import (
	"sync"
	"testing"
	"time"
)

// waitFor polls cond until it holds (5 s at most).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPoolReusesAnIdleGoroutine(t *testing.T) {
	p := New(4, 8, 0)
	defer p.Close()
	for range 100 {
		done := make(chan struct{})
		p.Go(func() { close(done) })
		<-done
		// The runner goes back to the idle list after its job returns.
		waitFor(t, "runner idle", func() bool { _, idle := p.Size(); return idle == 1 })
	}
	if n, _ := p.Size(); n != 1 {
		t.Fatalf("sequential jobs used %d goroutines, want 1", n)
	}
}

func TestPoolBounds(t *testing.T) {
	tests := []struct {
		name            string
		keep, max, jobs int
		wantN           int
	}{
		{"under the bound", 2, 8, 5, 5},
		{"at the bound", 2, 4, 4, 4},
		{"beyond the bound: plain goroutines", 2, 3, 7, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := New(tc.keep, tc.max, 0)
			defer p.Close()
			release := make(chan struct{})
			var started, finished sync.WaitGroup
			started.Add(tc.jobs)
			finished.Add(tc.jobs)
			for range tc.jobs {
				p.Go(func() {
					defer finished.Done()
					started.Done()
					<-release
				})
			}
			started.Wait() // every job runs, even beyond the bound
			if n, idle := p.Size(); n != tc.wantN || idle != 0 {
				t.Fatalf("size %d (%d idle), want %d busy", n, idle, tc.wantN)
			}
			close(release)
			finished.Wait()
			waitFor(t, "all idle", func() bool { n, idle := p.Size(); return n == tc.wantN && idle == tc.wantN })
		})
	}
}

func TestPoolRetiresIdleGoroutinesBeyondKeep(t *testing.T) {
	p := New(2, 16, 20*time.Millisecond)
	defer p.Close()
	release := make(chan struct{})
	var finished sync.WaitGroup
	finished.Add(6)
	for range 6 {
		p.Go(func() { defer finished.Done(); <-release })
	}
	close(release)
	finished.Wait()
	waitFor(t, "retired down to keep", func() bool { n, idle := p.Size(); return n == 2 && idle == 2 })
	// The ones kept still serve.
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
	waitFor(t, "kept runner idle", func() bool { n, idle := p.Size(); return n == 2 && idle == 2 })
}

func TestPoolCloseEndsIdleAndBusyGoroutines(t *testing.T) {
	p := New(4, 4, 0)
	release := make(chan struct{})
	busy := make(chan struct{})
	p.Go(func() { close(busy); <-release })
	<-busy
	idleDone := make(chan struct{})
	p.Go(func() { close(idleDone) })
	<-idleDone
	waitFor(t, "one idle", func() bool { _, idle := p.Size(); return idle == 1 })
	p.Close()
	if n, idle := p.Size(); n != 1 || idle != 0 {
		t.Fatalf("after Close: %d goroutines (%d idle), want the busy one only", n, idle)
	}
	close(release)
	waitFor(t, "busy one ended", func() bool { n, _ := p.Size(); return n == 0 })
	// A closed pool still runs what it is given.
	ran := make(chan struct{})
	p.Go(func() { close(ran) })
	<-ran
}
