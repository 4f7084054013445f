// Package redisnodes keeps the nodes' heartbeats (sip/nodes) in Redis:
// single, Sentinel or Cluster, the registrar store's client.
//
// Key layout (PREFIX defaults to "sori:"):
//
//	PREFIX node:ID   string: the node's address (sip.node_address, "tcp:IP:PORT"); expires (PX) unless written again
//	PREFIX nodes     sorted set: every node that wrote a heartbeat, scored by when it wrote its last one (Unix ms, Redis's clock); a node gone for forgetAfter is forgotten
//
// The sorted set is how a node learns the ids of the others, which sip.nodes
// (addresses) does not give, to find those gone for good (Gone). Both its
// scripts read Redis's clock, so the nodes' clocks need not agree.
package redisnodes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/sip/nodes"
)

// claim sets the heartbeat if it is absent or already this address, and
// returns who holds it.
var claim = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return v`)

// leave deletes the heartbeat only if it is still this address's.
var leave = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// seen scores node ARGV[1] with Redis's clock.
var seen = redis.NewScript(`
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 1`)

// silent forgets the nodes silent for ARGV[2] ms and lists those silent
// for ARGV[1] ms, by Redis's clock.
var silent = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))`)

// forgetAfter is how long a node gone is remembered: far longer than
// the others take to adopt its calls (nodes.GoneAfter), so that only a
// node retired long ago is forgotten.
const forgetAfter = 7 * 24 * time.Hour

// Beats implements nodes.Beats.
type Beats struct {
	rdb    redis.UniversalClient
	prefix string
}

var _ nodes.Beats = (*Beats)(nil)

// New keeps heartbeats through rdb; prefix namespaces the keys ("sori:" when empty).
func New(rdb redis.UniversalClient, prefix string) *Beats {
	if prefix == "" {
		prefix = "sori:"
	}
	return &Beats{rdb: rdb, prefix: prefix}
}

// Key is node id's heartbeat key (documented layout).
func (b *Beats) Key(id string) string { return b.prefix + "node:" + id }

// SeenKey is the key of the nodes that wrote a heartbeat.
func (b *Beats) SeenKey() string { return b.prefix + "nodes" }

// Claim implements nodes.Beats.
func (b *Beats) Claim(ctx context.Context, id, address string, ttl time.Duration) (string, error) {
	v, err := claim.Run(ctx, b.rdb, []string{b.Key(id)}, address, ttl.Milliseconds()).Text()
	if err != nil {
		return "", fmt.Errorf("redis nodes: claim %s: %w", id, err)
	}
	return v, nil
}

// Beat implements nodes.Beats: SET with GET, and the node's score among
// those seen, one round trip.
func (b *Beats) Beat(ctx context.Context, id, address string, ttl time.Duration) (string, error) {
	var set *redis.StatusCmd
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		set = p.SetArgs(ctx, b.Key(id), address, redis.SetArgs{TTL: ttl, Get: true})
		// EVAL: a script not cached yet fails in a pipeline only once run.
		seen.Eval(ctx, p, []string{b.SeenKey()}, id)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("redis nodes: heartbeat %s: %w", id, err)
	}
	prev, err := set.Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("redis nodes: heartbeat %s: %w", id, err)
	}
	return prev, nil
}

// Gone implements nodes.Beats: the nodes seen last more than after ago
// whose heartbeat is not there (a node whose score was not written, the
// pipeline cut, is still up by its heartbeat).
func (b *Beats) Gone(ctx context.Context, after time.Duration) ([]string, error) {
	ids, err := silent.Run(ctx, b.rdb, []string{b.SeenKey()}, after.Milliseconds(), forgetAfter.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("redis nodes: nodes silent for %v: %w", after, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	// One EXISTS each: the heartbeats are on many Cluster slots.
	exists := make([]*redis.IntCmd, len(ids))
	if _, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			exists[i] = p.Exists(ctx, b.Key(id))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("redis nodes: heartbeats of the nodes silent for %v: %w", after, err)
	}
	var gone []string
	for i, id := range ids {
		if exists[i].Val() == 0 {
			gone = append(gone, id)
		}
	}
	return gone, nil
}

// Address implements nodes.Beats.
func (b *Beats) Address(ctx context.Context, id string) (string, error) {
	v, err := b.rdb.Get(ctx, b.Key(id)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("redis nodes: read %s: %w", id, err)
	}
	return v, nil
}

// Leave implements nodes.Beats.
func (b *Beats) Leave(ctx context.Context, id, address string) error {
	if err := leave.Run(ctx, b.rdb, []string{b.Key(id)}, address).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis nodes: leave %s: %w", id, err)
	}
	return nil
}
