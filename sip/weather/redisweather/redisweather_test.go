package redisweather

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/calls"
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

// flushing is a Buffer over a Store that flushes after every few adds, so
// queries see cells partly in Redis, partly held.
type flushing struct {
	*weather.Buffer
	every int64
	n     atomic.Int64
}

func (f *flushing) Add(ctx context.Context, r calls.Record) error {
	if err := f.Buffer.Add(ctx, r); err != nil {
		return err
	}
	if f.n.Add(1)%f.every == 0 {
		return f.Flush(ctx)
	}
	return nil
}

// backends are the ways a node uses a Store: direct (every record
// written), buffered and flushed every 3 records, buffered and never
// flushed before a query (it reads Redis and the cells held).
func backends(rdb redis.UniversalClient) map[string]weathertest.Open {
	var n atomic.Int64
	open := func(now func() time.Time, retention time.Duration) *Store {
		return New(rdb, Options{Prefix: fmt.Sprintf("t%d:", n.Add(1)), Now: now, Retention: retention})
	}
	return map[string]weathertest.Open{
		"direct": func(t *testing.T, now func() time.Time, retention time.Duration) weather.Aggregator {
			return open(now, retention)
		},
		"flushed": func(t *testing.T, now func() time.Time, retention time.Duration) weather.Aggregator {
			b := weather.NewBuffer(weather.BufferOptions{Store: open(now, retention), Now: now, Retention: retention})
			return &flushing{Buffer: b, every: 3}
		},
		"held": func(t *testing.T, now func() time.Time, retention time.Duration) weather.Aggregator {
			return weather.NewBuffer(weather.BufferOptions{Store: open(now, retention), Now: now, Retention: retention})
		},
	}
}

// TestContract runs the contract against a real redis-server; each case
// gets its own key prefix, an empty data set.
func TestContract(t *testing.T) {
	srv := redistest.Start(t)
	rdb := client(t, srv.Addr)
	for name, open := range backends(rdb) {
		t.Run(name, func(t *testing.T) { weathertest.Run(t, open) })
	}
}

// TestClusterContract: the same on a real 3-master Redis Cluster.
func TestClusterContract(t *testing.T) {
	cc := cluster(t)
	for name, open := range backends(cc) {
		t.Run(name, func(t *testing.T) { weathertest.Run(t, open) })
	}
}

func cluster(t *testing.T) *redis.ClusterClient {
	addrs := redistest.StartCluster(t, 3)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { cc.Close() })
	return cc
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

// TestCluster: on Redis Cluster a buffered node's flushed cells answer as
// memory does; one hour's cells spread over the masters, each with its
// shard's index in its slot.
func TestCluster(t *testing.T) {
	cc := cluster(t)
	base := weathertest.Base()
	now := func() time.Time { return base.Add(6 * time.Hour) }
	recs := weathertest.Records(8, 300, base)
	s := New(cc, Options{Now: now})
	b := weather.NewBuffer(weather.BufferOptions{Store: s, Now: now})
	for _, r := range recs {
		if err := b.Add(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(ctx); err != nil || b.Held() != 0 {
		t.Fatalf("flush: %v, %d held", err, b.Held())
	}
	m := memweather.New(memweather.Options{Now: now})
	for _, r := range recs {
		if err := m.Add(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	weathertest.Same(t, m, s, nil, base, base.Add(6*time.Hour))
	masters := map[string]bool{}
	for h := base; h.Before(base.Add(6 * time.Hour)); h = h.Add(time.Hour) {
		cells := 0
		for shard := range Shards {
			ids, err := cc.SMembers(ctx, s.IndexKey(h, shard)).Result()
			if err != nil {
				t.Fatal(err)
			}
			cells += len(ids)
			want := cc.ClusterKeySlot(ctx, s.IndexKey(h, shard)).Val()
			for _, id := range ids {
				if Shard(id) != shard {
					t.Fatalf("%s in shard %d's index", id, shard)
				}
				if slot := cc.ClusterKeySlot(ctx, s.CellKey(h, id)).Val(); slot != want {
					t.Fatalf("%s in slot %d, its index in %d", s.CellKey(h, id), slot, want)
				}
			}
			if len(ids) > 0 {
				if err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
					if n, _ := m.Exists(ctx, s.IndexKey(h, shard)).Result(); n == 1 {
						masters[m.Options().Addr] = true
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if cells == 0 {
			t.Fatalf("%v: no cells", h)
		}
	}
	if len(masters) != 3 {
		t.Fatalf("the cells are on %d masters, want all 3", len(masters))
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
	total, plan := "carrier%20a%2Fb/lte/uplink/", "carrier%20a%2Fb/lte/uplink/plan=lte-62"
	// FNV-1a of the ids, modulo 16.
	if Shard(total) != 9 || Shard(plan) != 15 {
		t.Fatalf("shards %d %d", Shard(total), Shard(plan))
	}
	want := []string{
		"sori:wx:{" + tag + ":9}:cells", "sori:wx:{" + tag + ":9}:c:" + total,
		"sori:wx:{" + tag + ":15}:cells", "sori:wx:{" + tag + ":15}:c:" + plan,
		"sori:wx:{" + tag + ":9}:w", "sori:wx:{" + tag + ":15}:w",
	}
	keys := rdb.Keys(ctx, "*").Val()
	slices.Sort(keys)
	if w := slices.Sorted(slices.Values(want)); !slices.Equal(keys, w) {
		t.Fatalf("keys %v, want %v", keys, w)
	}
	for i, id := range []string{total, plan} {
		if ids := rdb.SMembers(ctx, want[2*i]).Val(); !slices.Equal(ids, []string{id}) {
			t.Fatalf("%s: %v", want[2*i], ids)
		}
	}
	// Each shard's writers hash has this Store's last write.
	for _, k := range want[4:] {
		if w := rdb.HGetAll(ctx, k).Val(); len(w) != 1 {
			t.Fatalf("%s: %v, want one writer", k, w)
		}
	}
	h, err := rdb.HGetAll(ctx, want[1]).Result()
	if err != nil {
		t.Fatal(err)
	}
	// 2 % loss is bin 5 (1, 2]; jitter 12 bin 2 (10, 20]; MOS 4.1 bin 30 (4.0, 4.1].
	wantFields := map[string]string{"calls": "1", "exp": "1000", "lost": "20", "o1": "1", "l5": "1", "j2": "1", "js": "12", "m30": "1", "mn": "1", "ms": "410", "mq": "168100"}
	if fmt.Sprint(h) != fmt.Sprint(wantFields) {
		t.Fatalf("fields %v, want %v", h, wantFields)
	}
	wantExp := hour.Add(time.Hour + 72*time.Hour)
	for _, k := range want {
		ms, err := rdb.PExpireTime(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := time.UnixMilli(ms.Milliseconds()); !got.Equal(wantExp) {
			t.Fatalf("%s expires at %v, want %v", k, got, wantExp)
		}
	}
	// A record older than the retention writes nothing.
	if err := s.Add(ctx, weathertest.Record("k2", hour.Add(-80*time.Hour), side, nil)); err != nil {
		t.Fatal(err)
	}
	if n := len(rdb.Keys(ctx, "*").Val()); n != len(want) {
		t.Fatalf("%d keys after an old record", n)
	}
}

// TestLegacyKeys: the hours written before the shards (one {HOUR} tag) are
// read with the new ones and cleared with them.
func TestLegacyKeys(t *testing.T) {
	srv := redistest.Start(t)
	rdb := client(t, srv.Addr)
	hour := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	s := New(rdb, Options{})
	side := weathertest.Side("carrier-a", "lte", 1000, 20, 12, 4.1, nil)
	tag := hour.Format("2006010215")
	id := "carrier-a/lte/uplink/"
	rdb.SAdd(ctx, "sori:wx:{"+tag+"}:cells", id)
	rdb.HSet(ctx, "sori:wx:{"+tag+"}:c:"+id, "calls", 2, "exp", 500, "lost", 5)
	if err := s.Add(ctx, weathertest.Record("new", hour, side, nil)); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Query(ctx, weather.Query{From: hour, To: hour.Add(time.Hour)})
	if err != nil || len(rows) != 1 || rows[0].Calls != 3 || rows[0].Expected != 1500 || rows[0].Lost != 25 {
		t.Fatalf("rows %+v, %v", rows, err)
	}
	if err := s.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if keys := rdb.Keys(ctx, "*").Val(); len(keys) != 0 {
		t.Fatalf("left after clear: %v", keys)
	}
}

// TestAddCellsFailure: a write to a dead server returns every counter as
// unwritten, and a Buffer keeps them for the server's return.
func TestAddCellsFailure(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	base := weathertest.Base()
	now := func() time.Time { return base.Add(6 * time.Hour) }
	s := New(rdb, Options{Now: now})
	b := weather.NewBuffer(weather.BufferOptions{Store: s, Now: now})
	recs := weathertest.Records(9, 200, base)
	for _, r := range recs {
		if err := b.Add(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	held := b.Held()
	srv.Stop()
	if err := b.Flush(ctx); err == nil {
		t.Fatal("a flush to a dead server succeeded")
	}
	if b.Held() != held {
		t.Fatalf("%d cells held after the failure, %d before", b.Held(), held)
	}
	srv.Restart()
	if err := b.Flush(ctx); err != nil || b.Held() != 0 {
		t.Fatalf("flush after the restart: %v, %d held", err, b.Held())
	}
	m := memweather.New(memweather.Options{Now: now})
	for _, r := range recs {
		if err := m.Add(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	weathertest.Same(t, m, s, nil, base, base.Add(6*time.Hour))
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

// commands is the commands the server ran since the last reset (INFO
// commandstats), by name, and the µs it spent executing them; INFO and
// CONFIG themselves left out.
func commands(t *testing.T, rdb *redis.Client) (total int64, by map[string]int64, usec int64) {
	t.Helper()
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	by = map[string]int64{}
	for line := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		name = strings.TrimPrefix(name, "cmdstat_")
		if name == "info" || strings.HasPrefix(name, "config") {
			continue
		}
		calls, rest, _ := strings.Cut(rest, ",usec=")
		us, _, _ := strings.Cut(rest, ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		u, err := strconv.ParseInt(us, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		by[name] += n
		total += n
		usec += u
	}
	return total, by, usec
}

// TestCommandsPerCall measures the Redis commands per call: written
// record by record (what every call cost before the Buffer) and flushed
// after every 10, 100, 1000 and 10000 calls of one hour (a node's calls in one
// flush_every). go test -run CommandsPerCall -v ./sip/weather/redisweather/
func TestCommandsPerCall(t *testing.T) {
	srv := redistest.Start(t)
	rdb := client(t, srv.Addr)
	base := weathertest.Base()
	now := func() time.Time { return base.Add(2 * time.Hour) }
	const n = 10000
	recs := weathertest.Records(11, n, base)
	for i := range recs {
		at := base.Add(time.Duration(i%3600) * time.Second) // one hour
		recs[i].Answer = &at
	}
	measure := func(name string, perFlush int) float64 {
		t.Helper()
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		s := New(rdb, Options{Now: now})
		b := weather.NewBuffer(weather.BufferOptions{Store: s, Now: now})
		for i, r := range recs {
			var err error
			if perFlush == 0 {
				err = s.Add(ctx, r)
			} else if err = b.Add(ctx, r); err == nil && (i+1)%perFlush == 0 {
				err = b.Flush(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		total, by, usec := commands(t, rdb)
		per := float64(total) / n
		t.Logf("%s: %d commands for %d calls, %.2f per call, %.1f µs executing per call %v", name, total, n, per, float64(usec)/n, by)
		return per
	}
	direct := measure("every record written (Store.Add)", 0)
	f10 := measure("flushed every 10 calls", 10)
	f100 := measure("flushed every 100 calls", 100)
	f1000 := measure("flushed every 1000 calls", 1000)
	f10000 := measure("flushed every 10000 calls", 10000)
	if direct < 20 || !(f10 < direct && f100 < f10 && f1000 < f100 && f10000 < f1000) || f1000 > 10 || f10000 > 1 {
		t.Fatalf("per call: direct %.2f, flushed every 10/100/1000/10000 calls %.2f %.2f %.2f %.2f", direct, f10, f100, f1000, f10000)
	}
}

// cutProxy forwards TCP to addr; once armed, it passes the server's
// replies to the first pipeline of writes (HINCRBY in their script) only
// up to budget bytes, then closes the connection.
type cutProxy struct {
	ln     net.Listener
	addr   string
	armed  atomic.Bool
	budget int
}

func startCutProxy(t *testing.T, addr string, budget int) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, addr: addr, budget: budget}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *cutProxy) serve(c net.Conn) {
	s, err := net.Dial("tcp", p.addr)
	if err != nil {
		c.Close()
		return
	}
	var cutting atomic.Bool
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if p.armed.Load() && strings.Contains(strings.ToLower(string(buf[:n])), "hincrby") {
					p.armed.Store(false)
					cutting.Store(true) // before the server can answer
				}
				if _, werr := s.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				s.Close()
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	left := p.budget
	for {
		n, err := s.Read(buf)
		if n > 0 && cutting.Load() {
			_, _ = c.Write(buf[:min(n, left)])
			left -= min(n, left)
			if left == 0 {
				c.Close()
				s.Close()
				return
			}
			continue
		}
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				s.Close()
				return
			}
		}
		if err != nil {
			c.Close()
			return
		}
	}
}

// TestExactlyOnceAfterBrokenReplies: the connection breaks after Redis
// ran a write and before its reply reached sori. Whether the client sends
// the pipeline again by itself (MaxRetries 1) or AddCells returns the
// cells as unwritten and the Buffer adds them again later, with more
// counters merged in, every counter is in Redis exactly once.
func TestExactlyOnceAfterBrokenReplies(t *testing.T) {
	for _, tt := range []struct {
		name    string
		retries int
	}{{"client resends", 1}, {"AddCells fails", -1}} {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t)
			proxy := startCutProxy(t, srv.Addr, 0) // not a byte of the reply
			rdb := redis.NewClient(&redis.Options{Addr: proxy.ln.Addr().String(), MaxRetries: tt.retries, Protocol: 2, DisableIdentity: true})
			t.Cleanup(func() { rdb.Close() })
			hour := time.Now().UTC().Truncate(time.Hour)
			s := New(rdb, Options{})
			b := weather.NewBuffer(weather.BufferOptions{Store: s})
			rec := weathertest.Record("x", hour, weathertest.Side("carrier-a", "lte", 1000, 20, 12, 4.1, nil), nil)
			if err := b.Add(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if err := rdb.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			direct := client(t, srv.Addr)
			key := s.CellKey(hour, CellID(weather.Observe(rec)[0].Cell))
			proxy.armed.Store(true)
			err := b.Flush(ctx)
			if got := direct.HGet(ctx, key, "calls").Val(); got != "1" {
				t.Fatalf("calls = %q after the cut write, want 1 (Redis ran it)", got)
			}
			switch {
			case tt.retries > 0 && (err != nil || b.Held() != 0):
				t.Fatalf("the client's resend: %v, %d cells held", err, b.Held())
			case tt.retries < 0 && (err == nil || b.Held() != 1):
				t.Fatalf("a write whose reply was lost: %v, %d cells held", err, b.Held())
			}
			// A second call of the same cell, then the next flush.
			if err := b.Add(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if err := b.Flush(ctx); err != nil || b.Held() != 0 {
				t.Fatalf("the next flush: %v, %d held", err, b.Held())
			}
			if got := direct.HGet(ctx, key, "calls").Val(); got != "2" {
				t.Fatalf("calls = %q after two calls, want 2", got)
			}
			if got := direct.HGet(ctx, key, "exp").Val(); got != "2000" {
				t.Fatalf("exp = %q after two calls of 1000 packets, want 2000", got)
			}
		})
	}
}

// TestWriteInDoubtNotApplied: a write that never reached Redis (the
// connection broke before it was sent) is added again in full.
func TestWriteInDoubtNotApplied(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	hour := time.Now().UTC().Truncate(time.Hour)
	s := New(rdb, Options{})
	obs := weather.Observe(weathertest.Record("x", hour, weathertest.Side("carrier-a", "lte", 1000, 20, 12, 4.1, nil), nil))
	cctx, cancel := context.WithCancel(ctx)
	cancel() // fails like a lost reply, sent or not
	unwritten, err := s.AddCells(cctx, obs)
	if err == nil || len(unwritten) != len(obs) {
		t.Fatalf("a write on a cancelled context: %v, %d unwritten", err, len(unwritten))
	}
	if _, err := s.AddCells(ctx, unwritten); err != nil {
		t.Fatal(err)
	}
	direct := client(t, srv.Addr)
	if got := direct.HGet(ctx, s.CellKey(hour, CellID(obs[0].Cell)), "calls").Val(); got != "1" {
		t.Fatalf("calls = %q, want 1", got)
	}
}
