package call

import (
	"context"
	"sync"
)

// pending counts work going on in the background (endings, saves). It is
// a WaitGroup that may be waited on while more is added: an ending can
// start (from zero) while Wait runs, which sync.WaitGroup forbids (its
// Add from zero must happen before Wait; the race detector says so).
type pending struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0; nil: nobody waits
}

func (p *pending) Add(d int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += d
	if p.n < 0 {
		panic("call: pending count below zero")
	}
	if p.n == 0 && p.zero != nil {
		close(p.zero)
		p.zero = nil
	}
}

func (p *pending) Done() { p.Add(-1) }

// idle is closed once nothing is pending (at once if nothing is now).
func (p *pending) idle() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		return closed
	}
	if p.zero == nil {
		p.zero = make(chan struct{})
	}
	return p.zero
}

func (p *pending) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// waitAll waits until every one of ps has nothing pending at once (work
// of one may start work of another), or ctx ends.
func waitAll(ctx context.Context, ps ...*pending) error {
	for {
		busy := false
		for _, p := range ps {
			select {
			case <-p.idle():
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for _, p := range ps {
			busy = busy || p.count() > 0
		}
		if !busy {
			return nil
		}
	}
}
