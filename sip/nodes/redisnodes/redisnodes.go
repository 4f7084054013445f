// Package redisnodes keeps the nodes' heartbeats (sip/nodes) in Redis:
// single, Sentinel or Cluster, the registrar store's client.
//
// Key layout (PREFIX defaults to "sori:"):
//
//	PREFIX node:ID   string: the node's address (sip.node_address, "tcp:IP:PORT"); expires (PX) unless written again
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

// Claim implements nodes.Beats.
func (b *Beats) Claim(ctx context.Context, id, address string, ttl time.Duration) (string, error) {
	v, err := claim.Run(ctx, b.rdb, []string{b.Key(id)}, address, ttl.Milliseconds()).Text()
	if err != nil {
		return "", fmt.Errorf("redis nodes: claim %s: %w", id, err)
	}
	return v, nil
}

// Beat implements nodes.Beats: SET with GET, one round trip.
func (b *Beats) Beat(ctx context.Context, id, address string, ttl time.Duration) (string, error) {
	prev, err := b.rdb.SetArgs(ctx, b.Key(id), address, redis.SetArgs{TTL: ttl, Get: true}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("redis nodes: heartbeat %s: %w", id, err)
	}
	return prev, nil
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
