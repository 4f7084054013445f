package redisstore

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
)

// pipeliner sends the script calls that concurrent REGISTERs make together.
// One call at a time costs a write and a read system call on both sides per
// REGISTER, which measured about a third of sori's CPU with the Redis store.
// Under load the pipeliner writes every call waiting at that moment in one
// pipeline (as rueidis's auto-pipelining does); a lone call goes out at once,
// so nothing waits to fill a batch.
type pipeliner struct {
	rdb   redis.UniversalClient
	calls chan *call
	wg    sync.WaitGroup
	once  sync.Once
	stop  chan struct{}
}

const (
	pipelineWorkers = 8   // pipelines in flight at once (each holds one connection)
	maxBatch        = 128 // calls per pipeline
)

type call struct {
	script *redis.Script
	keys   []string
	args   []any
	res    []string
	err    error
	done   chan struct{}
}

var errClosed = errors.New("redis store: closed")

func newPipeliner(rdb redis.UniversalClient) *pipeliner {
	p := &pipeliner{rdb: rdb, calls: make(chan *call), stop: make(chan struct{})}
	p.wg.Add(pipelineWorkers)
	for range pipelineWorkers {
		go p.loop()
	}
	return p
}

// run evaluates script and returns its reply as strings.
func (p *pipeliner) run(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &call{script: script, keys: keys, args: args, done: make(chan struct{})}
	select {
	case p.calls <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.stop:
		return nil, errClosed
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return nil, ctx.Err() // the call may still be applied: like any request already sent
	}
}

func (p *pipeliner) loop() {
	defer p.wg.Done()
	batch := make([]*call, 0, maxBatch)
	cmds := make([]*redis.Cmd, 0, maxBatch)
	for {
		select {
		case <-p.stop:
			return
		case c := <-p.calls:
			batch = append(batch[:0], c)
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case c := <-p.calls:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		cmds = p.exec(batch, cmds[:0])
	}
}

func (p *pipeliner) exec(batch []*call, cmds []*redis.Cmd) []*redis.Cmd {
	// The store's client timeouts bound this call; no caller's context
	// governs a shared pipeline.
	ctx := context.Background()
	if len(batch) == 1 {
		c := batch[0]
		c.res, c.err = c.script.Run(ctx, p.rdb, c.keys, c.args...).StringSlice()
		close(c.done)
		return cmds
	}
	pipe := p.rdb.Pipeline()
	for _, c := range batch {
		cmds = append(cmds, c.script.EvalSha(ctx, pipe, c.keys, c.args...))
	}
	_, _ = pipe.Exec(ctx) // errors are per command, read below
	for i, c := range batch {
		err := cmds[i].Err()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis lost its script cache (restart, SCRIPT FLUSH): Run loads it again.
			c.res, c.err = c.script.Run(ctx, p.rdb, c.keys, c.args...).StringSlice()
		} else {
			c.res, c.err = cmds[i].StringSlice()
		}
		close(c.done)
	}
	return cmds
}

func (p *pipeliner) close() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}
