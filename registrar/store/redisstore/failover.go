package redisstore

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// followFailover makes a cluster client follow a failover: when a command
// cannot reach the node its slot map names, the map is reloaded at once, and
// if the masters changed the command is sent again, to the new map.
//
// go-redis (v9.23) reloads the map on MOVED, ASK and READONLY replies, and
// otherwise only every ClusterStateReloadInterval (60 s). A connection error
// just marks the node failing, which steers reads between replicas but not
// writes: a command still goes to the slot's master in the cached map. So
// after a master dies, its slots keep routing to the dead address for up to a
// minute, although its replica took over within the cluster's failover window
// and no node is left to answer MOVED (redis/go-redis#3979).
//
// During the window the reloaded map still names the dead master, so the
// command fails as fast as the dial does (the registrar answers 503 with
// Retry-After). The first command after the promotion reloads a map without
// it, and its resend succeeds: no failure after the window, however little
// traffic there was. Like go-redis's own resend after a lost connection, a
// command may run twice if the master died after running it; the store's
// scripts are idempotent for one Call-ID and CSeq.
type followFailover struct {
	cc *redis.ClusterClient
	// changes counts reloads that found other masters than the one before.
	changes atomic.Uint64
	// reloads coalesces concurrent reloads into one CLUSTER SLOTS.
	reloads singleflight.Group
	mu      sync.Mutex
	masters string // the masters of the last reload, sorted and joined
}

// reload reloads the slot map and counts a change of masters.
func (f *followFailover) reload(ctx context.Context) {
	_, _, _ = f.reloads.Do("", func() (any, error) {
		var (
			mu    sync.Mutex
			addrs []string
		)
		// ForEachMaster reloads the map before it runs (ReloadOrGet); fn
		// only notes the addresses, it sends nothing.
		err := f.cc.ForEachMaster(context.WithoutCancel(ctx), func(_ context.Context, c *redis.Client) error {
			mu.Lock()
			addrs = append(addrs, c.Options().Addr)
			mu.Unlock()
			return nil
		})
		if err != nil {
			return nil, err
		}
		slices.Sort(addrs)
		masters := strings.Join(addrs, ",")
		f.mu.Lock()
		if masters != f.masters {
			f.masters = masters
			f.changes.Add(1)
		}
		f.mu.Unlock()
		return nil, nil
	})
}

func (f *followFailover) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *followFailover) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		seen := f.changes.Load()
		err := next(ctx, cmd)
		if !unreachable(err) {
			return err
		}
		if f.reload(ctx); f.changes.Load() == seen {
			return err // the map still names that node: the cluster is failing over
		}
		return next(ctx, cmd)
	}
}

func (f *followFailover) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		seen := f.changes.Load()
		err := next(ctx, cmds)
		if err == nil {
			return nil
		}
		// A pipeline spans nodes, and its error is only the first command's.
		var failed []redis.Cmder
		for _, cmd := range cmds {
			if unreachable(cmd.Err()) {
				failed = append(failed, cmd)
			}
		}
		if len(failed) == 0 {
			return err
		}
		f.reload(ctx)
		// A transaction (this hook wraps those too) is not resent piecemeal.
		if f.changes.Load() == seen || cmds[0].Name() == "multi" {
			return err
		}
		// Resend what failed, as go-redis resends a pipeline's failed commands.
		_ = next(ctx, failed)
		for _, cmd := range cmds {
			if err := cmd.Err(); err != nil {
				return err
			}
		}
		return nil
	}
}

// unreachable tells whether err is a failure to reach a node or a lost
// connection (a dead or partitioned server), not a reply from Redis.
func unreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
