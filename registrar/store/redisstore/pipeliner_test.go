package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

var echoScript = redis.NewScript(`return {KEYS[1], ARGV[1]}`)

// roundTrips counts what reaches the server: single commands and pipelines.
type roundTrips struct{ single, pipelines, pipelined atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { r.single.Add(1); return next(ctx, cmd) }
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.pipelines.Add(1)
		r.pipelined.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func TestPipelinerAnswersEachCallerAndBatches(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	rt := &roundTrips{}
	rdb.AddHook(rt)
	p := newPipeliner(rdb)
	defer func() { p.close(); _ = rdb.Close() }()

	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key, arg := fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)
			res, err := p.run(context.Background(), echoScript, []string{key}, arg)
			if err != nil {
				errs <- err
				return
			}
			if len(res) != 2 || res[0] != key || res[1] != arg {
				errs <- fmt.Errorf("call %d got %v", i, res)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if rt.pipelines.Load() == 0 || rt.pipelined.Load() <= rt.pipelines.Load() {
		t.Fatalf("no batching: %d pipelines carrying %d calls, %d single commands", rt.pipelines.Load(), rt.pipelined.Load(), rt.single.Load())
	}
	t.Logf("%d calls: %d pipelines carrying %d, %d single commands", n, rt.pipelines.Load(), rt.pipelined.Load(), rt.single.Load())
}

func TestPipelinerSurvivesScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	p := newPipeliner(rdb)
	defer func() { p.close(); _ = rdb.Close() }()
	ctx := context.Background()
	if _, err := p.run(ctx, echoScript, []string{"a"}, "1"); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil { // what a Redis restart does to the cache
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, err := p.run(ctx, echoScript, []string{"a"}, fmt.Sprint(i)); err != nil || res[1] != fmt.Sprint(i) {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d calls failed after SCRIPT FLUSH", failed.Load())
	}
}

func TestPipelinerClosed(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	p := newPipeliner(rdb)
	p.close()
	if _, err := p.run(context.Background(), echoScript, []string{"a"}, "1"); !errors.Is(err, errClosed) {
		t.Fatalf("run after close: %v", err)
	}
}
