package redisnodes

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

func TestBeats(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	b := New(rdb, "")
	ctx := context.Background()
	const a, other = "tcp:10.0.0.1:5060", "tcp:10.0.0.9:5060"

	if v, err := b.Address(ctx, "n1"); err != nil || v != "" {
		t.Fatalf("no heartbeat yet: %q %v", v, err)
	}
	if v, err := b.Claim(ctx, "n1", a, 3*time.Second); err != nil || v != a {
		t.Fatalf("claim: %q %v", v, err)
	}
	if v, err := b.Claim(ctx, "n1", other, 3*time.Second); err != nil || v != a {
		t.Fatalf("claim of a held id: %q %v, want the holder %q", v, err, a)
	}
	if v, err := b.Claim(ctx, "n1", a, 3*time.Second); err != nil || v != a {
		t.Fatalf("claim again by its holder: %q %v", v, err)
	}
	if prev, err := b.Beat(ctx, "n2", a, 3*time.Second); err != nil || prev != "" {
		t.Fatalf("first beat: %q %v", prev, err)
	}
	if prev, err := b.Beat(ctx, "n2", a, 2*time.Second); err != nil || prev != a {
		t.Fatalf("second beat: %q %v", prev, err)
	}
	if ttl := rdb.PTTL(ctx, "sori:node:n2").Val(); ttl <= 0 || ttl > 2*time.Second {
		t.Fatalf("heartbeat TTL %v, want at most the last beat's 2s", ttl)
	}
	if v, err := b.Address(ctx, "n2"); err != nil || v != a {
		t.Fatalf("address: %q %v", v, err)
	}
	if err := b.Leave(ctx, "n2", other); err != nil || rdb.Exists(ctx, "sori:node:n2").Val() != 1 {
		t.Fatalf("another address left n2's heartbeat: %v", err)
	}
	if err := b.Leave(ctx, "n2", a); err != nil || rdb.Exists(ctx, "sori:node:n2").Val() != 0 {
		t.Fatalf("leave: %v", err)
	}
	if err := b.Leave(ctx, "n2", a); err != nil {
		t.Fatalf("leave with no heartbeat: %v", err)
	}
}
