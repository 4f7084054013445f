package redisweather

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/weather"
	"github.com/sori-voice/sori/sip/weather/memweather"
	"github.com/sori-voice/sori/sip/weather/weathertest"
)

var ctx = context.Background()

func client(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestContract runs the contract against a real redis-server; each case
// gets its own key prefix, an empty data set.
func TestContract(t *testing.T) {
	srv := redistest.Start(t)
	rdb := client(t, srv.Addr)
	var n atomic.Int64
	weathertest.Run(t, func(t *testing.T, now func() time.Time, retention time.Duration) weather.Aggregator {
		return New(rdb, Options{Prefix: fmt.Sprintf("t%d:", n.Add(1)), Now: now, Retention: retention})
	})
}

// TestSameAsMemory: Redis and memory answer every grouping and metric
// identically for the same records.
func TestSameAsMemory(t *testing.T) {
	srv := redistest.Start(t)
	base := weathertest.Base()
	now := func() time.Time { return base.Add(6 * time.Hour) }
	recs := weathertest.Records(7, 600, base)
	weathertest.Same(t, memweather.New(memweather.Options{Now: now}), New(client(t, srv.Addr), Options{Now: now}), recs, base, base.Add(6*time.Hour))
}

// TestCluster: on Redis Cluster each record is one transaction in its
// hour's slot, and a query reads hours spread over the masters.
func TestCluster(t *testing.T) {
	addrs := redistest.StartCluster(t, 3)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { cc.Close() })
	base := weathertest.Base()
	now := func() time.Time { return base.Add(6 * time.Hour) }
	recs := weathertest.Records(8, 300, base)
	s := New(cc, Options{Now: now})
	weathertest.Same(t, memweather.New(memweather.Options{Now: now}), s, recs, base, base.Add(6*time.Hour))
	// Each hour's keys share one slot (the {HOUR} tag).
	for h := base; h.Before(base.Add(6 * time.Hour)); h = h.Add(time.Hour) {
		ids, err := cc.SMembers(ctx, s.IndexKey(h)).Result()
		if err != nil || len(ids) == 0 {
			t.Fatalf("%v: %v %v", h, ids, err)
		}
		want := cc.ClusterKeySlot(ctx, s.IndexKey(h)).Val()
		for _, id := range ids {
			if slot := cc.ClusterKeySlot(ctx, s.CellKey(h, id)).Val(); slot != want {
				t.Fatalf("%s in slot %d, its index in %d", s.CellKey(h, id), slot, want)
			}
		}
	}
	if err := s.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Query(ctx, weather.Query{From: base, To: base.Add(6 * time.Hour)})
	if err != nil || len(rows) != 0 {
		t.Fatalf("after clear: %+v, %v", rows, err)
	}
}

// TestKeyLayout pins the documented keys, fields and expiry.
func TestKeyLayout(t *testing.T) {
	srv := redistest.Start(t)
	rdb := client(t, srv.Addr)
	hour := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	s := New(rdb, Options{Retention: 72 * time.Hour})
	side := weathertest.Side("carrier a/b", "lte", 1000, 20, 12, 4.1, map[string]string{"plan": "lte-62"})
	if err := s.Add(ctx, weathertest.Record("k1", hour.Add(10*time.Minute), side, nil)); err != nil {
		t.Fatal(err)
	}
	tag := hour.Format("2006010215")
	idx := "sori:wx:{" + tag + "}:cells"
	ids, err := rdb.SMembers(ctx, idx).Result()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"carrier%20a%2Fb/lte/uplink/": true, "carrier%20a%2Fb/lte/uplink/plan=lte-62": true}
	if len(ids) != 2 || !want[ids[0]] || !want[ids[1]] {
		t.Fatalf("cells %v", ids)
	}
	h, err := rdb.HGetAll(ctx, "sori:wx:{"+tag+"}:c:carrier%20a%2Fb/lte/uplink/").Result()
	if err != nil {
		t.Fatal(err)
	}
	// 2 % loss is bin 5 (1, 2]; jitter 12 bin 2 (10, 20]; MOS 4.1 bin 30 (4.0, 4.1].
	wantFields := map[string]string{"calls": "1", "exp": "1000", "lost": "20", "o1": "1", "l5": "1", "j2": "1", "js": "12", "m30": "1", "mn": "1", "ms": "410", "mq": "168100"}
	if fmt.Sprint(h) != fmt.Sprint(wantFields) {
		t.Fatalf("fields %v, want %v", h, wantFields)
	}
	wantExp := hour.Add(time.Hour + 72*time.Hour)
	for _, k := range []string{idx, "sori:wx:{" + tag + "}:c:carrier%20a%2Fb/lte/uplink/plan=lte-62"} {
		ms, err := rdb.PExpireTime(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := time.UnixMilli(ms.Milliseconds()); !got.Equal(wantExp) {
			t.Fatalf("%s expires at %v, want %v", k, got, wantExp)
		}
	}
	for _, k := range rdb.Keys(ctx, "*").Val() {
		if !strings.HasPrefix(k, "sori:wx:{"+tag+"}:") {
			t.Fatalf("unexpected key %s", k)
		}
	}
	// A record older than the retention writes nothing.
	if err := s.Add(ctx, weathertest.Record("k2", hour.Add(-80*time.Hour), side, nil)); err != nil {
		t.Fatal(err)
	}
	if n := len(rdb.Keys(ctx, "*").Val()); n != 3 {
		t.Fatalf("%d keys after an old record", n)
	}
}

// TestRedisDown: a dead server is an error, not an empty answer.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	s := New(rdb, Options{})
	srv.Stop()
	base := weathertest.Base()
	if err := s.Add(ctx, weathertest.Record("x", base, weathertest.Side("a", "lte", 1, 0, 0, 4.4, nil), nil)); err == nil {
		t.Fatal("add to a dead server succeeded")
	}
	if _, err := s.Query(ctx, weather.Query{From: base, To: base.Add(time.Hour)}); err == nil {
		t.Fatal("query of a dead server succeeded")
	}
}

func TestCounterFields(t *testing.T) {
	var c weather.Counters
	c.Calls, c.Expected, c.Lost, c.Over1, c.Over5, c.JitterMS = 3, 300, 9, 2, 1, 40
	c.Loss[0], c.Loss[14], c.Jitter[12], c.MOS[0], c.MOS[34] = 1, 2, 3, 1, 2
	c.MOSCalls, c.MOSSum, c.MOSSumSq = 3, 1000, 340000
	f := fields(&c)
	h := map[string]string{}
	for i := 0; i < len(f); i += 2 {
		h[f[i].(string)] = fmt.Sprint(f[i+1])
	}
	h["x9"] = "5" // a field from a newer node is ignored
	got, err := counters(h)
	if err != nil || got != c {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := counters(map[string]string{"calls": "x"}); err == nil {
		t.Fatal("a bad number was accepted")
	}
	for _, id := range []string{"a/b/c", "a/b/c/d/e", "a/%zz/c/d"} {
		if _, err := parseID(time.Time{}, id); err == nil {
			t.Fatalf("%q parsed", id)
		}
	}
	cell := weather.Cell{Network: "x/y z", Access: "nr", Hop: weather.Downlink, Tag: "plan=a/b%c"}
	if got, err := parseID(time.Time{}, CellID(cell)); err != nil || got != cell {
		t.Fatalf("id round trip %+v %v", got, err)
	}
}
