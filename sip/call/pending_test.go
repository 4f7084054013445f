package call

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Work starting from nothing while a Wait runs (what sync.WaitGroup
// forbids): Wait returns once all of it is done, never before.
func TestPendingAddsWhileWaiting(t *testing.T) {
	var p, q pending
	var done sync.WaitGroup
	var finished int
	var mu sync.Mutex
	for i := range 50 {
		done.Add(1)
		go func() {
			defer done.Done()
			p.Add(1)
			go func() {
				if i%2 == 0 {
					q.Add(1) // one kind of work starts another
					defer q.Done()
				}
				mu.Lock()
				finished++
				mu.Unlock()
				p.Done()
			}()
		}()
		if i == 10 {
			go func() { _ = waitAll(context.Background(), &p, &q) }() // a Wait in the middle of the Adds
		}
	}
	done.Wait() // every Add has happened
	if err := waitAll(context.Background(), &p, &q); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if finished != 50 || p.count() != 0 || q.count() != 0 {
		t.Fatalf("Wait returned with %d of 50 finished, %d and %d pending", finished, p.count(), q.count())
	}
}

func TestPendingWaitEndsWithItsContext(t *testing.T) {
	var p pending
	p.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := waitAll(ctx, &p); err == nil {
		t.Fatal("Wait returned nil with work pending")
	}
	p.Done()
	if err := waitAll(context.Background(), &p); err != nil {
		t.Fatal(err)
	}
}
