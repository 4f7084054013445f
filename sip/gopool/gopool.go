// Package gopool runs sori's per-message work (a request through the
// chain, a response into its transaction, a branch waiting for its
// answers) on long-lived goroutines.
//
// Why: a fresh goroutine starts with a small stack, and the chain's calls
// (SIP parsing, digest, the store, an ng round trip to the anchor) grow it
// two or three times, each a copy. With a goroutine per message,
// runtime.newstack and copystack were 5.6 % of sori's CPU at 800 anchored
// calls/s in memory and 11 % with Redis (go tool pprof, make load-calls
// MEDIA=1). A goroutine of the pool keeps its grown stack for the next job.
//
// The idle goroutines are taken last-in first-out, so a busy pool keeps
// using the same few hot ones (their stacks grown, their caches warm) and
// the rest stay idle until they are retired.
package gopool

import (
	"sync"
	"time"
)

// Pool is a set of goroutines running the functions given to Go.
type Pool struct {
	keep, max int
	idleFor   time.Duration

	mu     sync.Mutex
	idle   []*runner // last in, first out; idle[0] has waited longest
	n      int       // goroutines of the pool, busy and idle
	closed bool
	stop   chan struct{}
}

type runner struct {
	job   chan func() // one slot: Go never waits for the runner
	since time.Time   // idle since
}

// New returns a pool of up to most goroutines. Goroutines beyond keep end
// once idle for idle (0: never); when all are busy, Go starts a plain goroutine.
func New(keep, most int, idle time.Duration) *Pool {
	most = max(most, 1)
	p := &Pool{keep: min(keep, most), max: most, idleFor: idle, stop: make(chan struct{})}
	if idle > 0 {
		go p.retire()
	}
	return p
}

// Go runs f on an idle goroutine of the pool, or a new one.
func (p *Pool) Go(f func()) {
	p.mu.Lock()
	if k := len(p.idle); k > 0 {
		r := p.idle[k-1]
		p.idle[k-1] = nil
		p.idle = p.idle[:k-1]
		p.mu.Unlock()
		r.job <- f
		return
	}
	if p.closed || p.n >= p.max {
		p.mu.Unlock()
		go f()
		return
	}
	p.n++
	p.mu.Unlock()
	go p.run(&runner{job: make(chan func(), 1)}, f)
}

func (p *Pool) run(r *runner, f func()) {
	for f != nil {
		f()
		f = p.wait(r)
	}
}

// wait puts r back among the idle and returns its next job; nil when it
// is retired or the pool closed.
func (p *Pool) wait(r *runner) func() {
	p.mu.Lock()
	if p.closed {
		p.n--
		p.mu.Unlock()
		return nil
	}
	r.since = time.Now()
	p.idle = append(p.idle, r)
	p.mu.Unlock()
	return <-r.job
}

// retire ends goroutines beyond keep that have been idle for idleFor: the
// longest idle are at the bottom of the stack.
func (p *Pool) retire() {
	t := time.NewTicker(max(p.idleFor/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.mu.Lock()
			k := 0
			for k < len(p.idle) && p.n-k > p.keep && now.Sub(p.idle[k].since) >= p.idleFor {
				p.idle[k].job <- nil
				k++
			}
			if k > 0 {
				p.n -= k
				p.idle = append(p.idle[:0], p.idle[k:]...)
			}
			p.mu.Unlock()
		}
	}
}

// Size is how many goroutines the pool has, and how many of them are idle.
func (p *Pool) Size() (n, idle int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n, len(p.idle)
}

// Close ends the idle goroutines, and each busy one when its job returns;
// Go then starts plain goroutines.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	close(p.stop)
	for i, r := range p.idle {
		r.job <- nil
		p.idle[i] = nil
	}
	p.n -= len(p.idle)
	p.idle = p.idle[:0]
}
