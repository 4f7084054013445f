package redisnodes

import (
	"context"
	"slices"
	"strings"
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

// Gone lists the nodes seen, silent for longer than asked (on Redis's
// clock) and without a heartbeat; a node silent for forgetAfter is
// forgotten. On a Cluster too: the heartbeats are on many slots.
func TestGone(t *testing.T) {
	t.Run("one server", func(t *testing.T) {
		srv := redistest.Start(t)
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		defer rdb.Close()
		gone(t, rdb)
	})
	t.Run("cluster", func(t *testing.T) {
		addrs := redistest.StartCluster(t, 3)
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		defer rdb.Close()
		gone(t, rdb)
	})
}

func gone(t *testing.T, rdb redis.UniversalClient) {
	b := New(rdb, "")
	ctx := context.Background()
	for _, id := range []string{"up", "lapsed", "left", "stale"} {
		if _, err := b.Beat(ctx, id, "tcp:10.0.0.1:5060", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	score, err := rdb.ZScore(ctx, b.SeenKey(), "up").Result()
	if now := time.Now().UnixMilli(); err != nil || score < float64(now-5000) || score > float64(now+5000) {
		t.Fatalf("seen at %v (%v), now %v", score, err, now)
	}
	rdb.Del(ctx, b.Key("lapsed")) // its heartbeat expired
	if err := b.Leave(ctx, "left", "tcp:10.0.0.1:5060"); err != nil {
		t.Fatal(err)
	}
	old := float64(time.Now().Add(-forgetAfter - time.Hour).UnixMilli())
	rdb.ZAdd(ctx, b.SeenKey(), redis.Z{Score: old, Member: "stale"})
	rdb.Del(ctx, b.Key("stale"))
	// A node whose score alone is old still beats: it is up.
	rdb.ZAdd(ctx, b.SeenKey(), redis.Z{Score: float64(time.Now().Add(-time.Hour).UnixMilli()), Member: "up"})

	if ids, err := b.Gone(ctx, time.Minute); err != nil || len(ids) != 0 {
		t.Fatalf("gone for a minute: %q %v, want none", ids, err)
	}
	time.Sleep(20 * time.Millisecond)
	ids, err := b.Gone(ctx, 10*time.Millisecond)
	slices.Sort(ids)
	if err != nil || !slices.Equal(ids, []string{"lapsed", "left"}) {
		t.Fatalf("gone: %q %v, want lapsed and left", ids, err)
	}
	if n, _ := rdb.ZScore(ctx, b.SeenKey(), "stale").Result(); n != 0 {
		t.Fatal("a node silent for forgetAfter is remembered")
	}
	if err := rdb.Set(ctx, b.SeenKey(), "junk", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Gone(ctx, time.Minute); err == nil || !strings.Contains(err.Error(), "redis nodes") {
		t.Fatalf("a broken set: %v", err)
	}
}
