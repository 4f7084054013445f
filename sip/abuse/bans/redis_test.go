package bans

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

// Two nodes' lists share one redis-server: what one adds, removes or lets
// expire, the other sees within moments (by pub/sub: the periodic re-read is
// an hour away).
func TestRedisListsShareBans(t *testing.T) {
	rs := redistest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func(node string) *List {
		rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
		t.Cleanup(func() { rdb.Close() })
		l := New(node, NewRedis(rdb), slog.Default())
		go l.Run(ctx, time.Hour)
		select {
		case <-l.Ready():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not subscribed", node)
		}
		return l
	}
	a, b := start("a"), start("b")
	x := netip.MustParseAddr("198.51.100.4")
	within := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 2 s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	began := time.Now()
	a.Post(Ban{Address: x, Reason: "auth failures", Until: time.Now().Add(time.Hour)})
	within("b sees a's ban", func() bool { return b.Banned(x) })
	t.Logf("a ban posted on a was seen on b after %v", time.Since(began))
	if bs := b.List(time.Now()); len(bs) != 1 || bs[0].Node != "a" || bs[0].Reason != "auth failures" {
		t.Fatalf("b lists %+v", bs)
	}

	if _, err := b.Remove(ctx, x); err != nil {
		t.Fatal(err)
	}
	within("a sees b's removal", func() bool { return !a.Banned(x) })

	// A node that starts later reads the bans already there.
	y := netip.MustParseAddr("198.51.100.5")
	if err := a.Add(ctx, Ban{Address: y, Reason: "manual", Until: time.Now().Add(400 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	c := start("c")
	if !c.Banned(y) {
		t.Fatal("a node started later does not know the ban")
	}
	// Expiry: the ban ends everywhere, and Redis forgets it.
	within("y's ban ends on b and c", func() bool { return !b.Banned(y) && !c.Banned(y) })
	raw := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer raw.Close()
	all, err := NewRedis(raw).All(ctx, time.Now())
	if err != nil || len(all) != 0 {
		t.Fatalf("Redis still holds %+v (%v)", all, err)
	}
	if n := raw.ZCard(ctx, IndexKey).Val(); n != 0 {
		t.Fatalf("%s holds %d members after expiry", IndexKey, n)
	}
	if n := raw.Exists(ctx, detailPrefix+y.String()).Val(); n != 0 {
		t.Fatal("the ban's details outlived it")
	}
}
