package bans

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keys and channel of the shared ban list.
const (
	// IndexKey is a sorted set: member the address, score its end (unix ms).
	IndexKey = "sori:bans"
	// detailPrefix + address is a string with the ban as JSON, expiring
	// with the ban (PEXPIREAT).
	detailPrefix = "sori:ban:"
	// Channel carries every change as JSON: {"op":"add","ban":{...}} or
	// {"op":"remove","address":"..."}.
	Channel = "sori:bans:events"
)

// Redis is the Shared store in Redis.
type Redis struct{ rdb redis.UniversalClient }

// NewRedis returns the ban store in rdb.
func NewRedis(rdb redis.UniversalClient) *Redis { return &Redis{rdb: rdb} }

type message struct {
	Op      string `json:"op"`
	Ban     *Ban   `json:"ban,omitempty"`
	Address string `json:"address,omitempty"`
}

// Add implements Shared.
func (r *Redis) Add(ctx context.Context, b Ban) error {
	addr := b.Address.Unmap().String()
	detail, err := json.Marshal(b)
	if err != nil {
		return err
	}
	msg, _ := json.Marshal(message{Op: "add", Ban: &b})
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, IndexKey, redis.Z{Score: float64(b.Until.UnixMilli()), Member: addr})
		p.Set(ctx, detailPrefix+addr, detail, 0)
		p.PExpireAt(ctx, detailPrefix+addr, b.Until)
		p.Publish(ctx, Channel, msg)
		return nil
	})
	if err != nil {
		return fmt.Errorf("bans: add %s: %w", addr, err)
	}
	return nil
}

// Remove implements Shared.
func (r *Redis) Remove(ctx context.Context, a netip.Addr) error {
	addr := a.Unmap().String()
	msg, _ := json.Marshal(message{Op: "remove", Address: addr})
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, IndexKey, addr)
		p.Del(ctx, detailPrefix+addr)
		p.Publish(ctx, Channel, msg)
		return nil
	})
	if err != nil {
		return fmt.Errorf("bans: remove %s: %w", addr, err)
	}
	return nil
}

// All implements Shared; expired entries are removed from the index.
func (r *Redis) All(ctx context.Context, now time.Time) ([]Ban, error) {
	ms := strconv.FormatInt(now.UnixMilli(), 10)
	if err := r.rdb.ZRemRangeByScore(ctx, IndexKey, "-inf", ms).Err(); err != nil {
		return nil, fmt.Errorf("bans: expire: %w", err)
	}
	zs, err := r.rdb.ZRangeByScoreWithScores(ctx, IndexKey, &redis.ZRangeBy{Min: "(" + ms, Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("bans: read: %w", err)
	}
	if len(zs) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.StringCmd, len(zs))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, z := range zs {
			cmds[i] = p.Get(ctx, detailPrefix+z.Member.(string))
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("bans: read details: %w", err)
	}
	out := make([]Ban, 0, len(zs))
	for i, z := range zs {
		a, err := netip.ParseAddr(z.Member.(string))
		if err != nil {
			continue // not written by sori
		}
		b := Ban{}
		if raw, err := cmds[i].Bytes(); err != nil || json.Unmarshal(raw, &b) != nil {
			b = Ban{} // details lost: the index still bans it
		}
		b.Address, b.Until = a, time.UnixMilli(int64(z.Score))
		out = append(out, b)
	}
	return out, nil
}

// Watch implements Shared.
func (r *Redis) Watch(ctx context.Context, ready func(), fn func(Event)) error {
	sub := r.rdb.Subscribe(ctx, Channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		return fmt.Errorf("bans: subscribe: %w", err)
	}
	ready()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-ch:
			if !ok {
				return fmt.Errorf("bans: subscription closed")
			}
			var msg message
			if json.Unmarshal([]byte(m.Payload), &msg) != nil {
				continue
			}
			switch {
			case msg.Op == "add" && msg.Ban != nil && msg.Ban.Address.IsValid():
				fn(Event{Ban: *msg.Ban})
			case msg.Op == "remove":
				if a, err := netip.ParseAddr(msg.Address); err == nil {
					fn(Event{Ban: Ban{Address: a}, Removed: true})
				}
			}
		}
	}
}
