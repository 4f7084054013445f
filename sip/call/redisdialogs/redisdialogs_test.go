package redisdialogs

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/calls"
)

// open is the client a sori node opens for registrar.store = url, its
// calls saved as node's.
func open(t *testing.T, url, prefix, node string) (*Store, redis.UniversalClient) {
	t.Helper()
	rs, err := redisstore.Open(url, redisstore.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	return New(rs.Client(), prefix, node), rs.Client()
}

func answered(callID string, expiry time.Time) call.State {
	now := time.Now().Round(0)
	return call.State{Record: calls.Record{CallID: callID, Caller: "alice", Start: now, Answer: &now, Code: 200, Reason: "OK"},
		Phase: call.Answered, Dialog: true, Anchor: "127.0.0.1:22222", Trunk: "carrier", Expiry: expiry.Round(0),
		Caller: call.Side{Target: "sip:alice@127.0.0.1:5061", Dest: "127.0.0.1:5061", Transport: "UDP", Tag: "a", CSeq: 2},
		Callee: call.Side{Target: "sip:bob@127.0.0.1:5062", Dest: "127.0.0.1:5062", Transport: "UDP", Tag: "b",
			Route: []string{"<sip:edge.example;lr>"}}}
}

// contract is what sip/call relies on, on one Redis deployment.
func contract(t *testing.T, url string) {
	var n atomic.Int64
	next := func() (*Store, redis.UniversalClient) {
		s, rdb := open(t, url, "", "n1")
		s.prefix = "t" + string(rune('a'+n.Add(1))) + ":" // each subtest its own keys
		return s, rdb
	}
	// as is s as another node's store: the same keys, its own index.
	as := func(s *Store, node string) *Store { return &Store{rdb: s.rdb, prefix: s.prefix, node: node} }
	ctx := context.Background()

	t.Run("saved state loads as it was, with a TTL", func(t *testing.T) {
		s, rdb := next()
		for _, id := range []string{"plain@host", "br{ac}es}@host", "}lead", "pct%7D@host", "a}b"} {
			st := answered(id, time.Now().Add(time.Hour))
			if err := s.Save(ctx, st, 90*time.Minute); err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			got, ok, err := s.Load(ctx, id)
			if err != nil || !ok {
				t.Fatalf("%s: load %v %v", id, ok, err)
			}
			if got.Record.CallID != id || got.Callee.Route[0] != "<sip:edge.example;lr>" || got.Caller.CSeq != 2 || !got.Expiry.Equal(st.Expiry) ||
				got.Record.Answer == nil || !got.Record.Answer.Equal(*st.Record.Answer) || got.Trunk != "carrier" {
				t.Fatalf("%s: loaded %+v", id, got)
			}
			ttl, err := rdb.PTTL(ctx, s.StateKey(id)).Result()
			if err != nil || ttl <= 89*time.Minute || ttl > 90*time.Minute {
				t.Fatalf("%s: TTL %v %v", id, ttl, err)
			}
		}
		// Distinct Call-IDs never share a key, whatever their braces and escapes.
		if s.StateKey("a}b") == s.StateKey("a%7Db") {
			t.Fatal("two Call-IDs share a key")
		}
		if _, ok, err := s.Load(ctx, "never-saved"); ok || err != nil {
			t.Fatalf("unknown call: %v %v", ok, err)
		}
	})

	t.Run("the first end is the only one, and no save comes after it", func(t *testing.T) {
		s, rdb := next()
		id := "end{1}@host"
		if err := s.Save(ctx, answered(id, time.Now().Add(time.Hour)), time.Hour); err != nil {
			t.Fatal(err)
		}
		var firsts atomic.Int64
		var wg sync.WaitGroup
		for range 20 { // twenty nodes end it at once
			wg.Add(1)
			go func() {
				defer wg.Done()
				first, err := s.Delete(ctx, id, 2*time.Hour)
				if err != nil {
					t.Error(err)
				}
				if first {
					firsts.Add(1)
				}
			}()
		}
		wg.Wait()
		if firsts.Load() != 1 {
			t.Fatalf("%d first ends, want 1", firsts.Load())
		}
		if _, ok, _ := s.Load(ctx, id); ok {
			t.Fatal("the ended call still loads")
		}
		if err := s.Save(ctx, answered(id, time.Now().Add(time.Hour)), time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Load(ctx, id); ok {
			t.Fatal("a save after the end was written")
		}
		if ttl, err := rdb.PTTL(ctx, s.EndKey(id)).Result(); err != nil || ttl <= 119*time.Minute || ttl > 2*time.Hour {
			t.Fatalf("end claim TTL %v %v", ttl, err)
		}
		// A call never saved (or expired) still has one first end.
		if first, err := s.Delete(ctx, "unsaved@host", time.Minute); !first || err != nil {
			t.Fatalf("unsaved call: %v %v", first, err)
		}
	})

	t.Run("bad input is an error", func(t *testing.T) {
		s, rdb := next()
		if err := s.Save(ctx, call.State{}, time.Hour); err == nil {
			t.Fatal("saved a call without Call-ID")
		}
		if _, _, err := s.Load(ctx, ""); err == nil {
			t.Fatal("loaded an empty Call-ID")
		}
		if _, err := s.Delete(ctx, "", time.Hour); err == nil {
			t.Fatal("ended an empty Call-ID")
		}
		if err := rdb.Set(ctx, s.StateKey("junk"), "{not json", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := s.Load(ctx, "junk"); ok || err == nil {
			t.Fatalf("a corrupt state loaded: %v %v", ok, err)
		}
	})

	t.Run("each node's index holds the calls it saved last, and only those still saved", func(t *testing.T) {
		s, rdb := next()
		n2 := as(s, "n2")
		later := time.Now().Add(time.Hour)
		for _, id := range []string{"a{1}@host", "b@host", "c}@host", "moved@host", "ended@host"} {
			if err := s.Save(ctx, answered(id, later), time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		if err := n2.Save(ctx, answered("theirs@host", later), time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := n2.Save(ctx, answered("moved@host", later), time.Hour); err != nil { // n2 took it over
			t.Fatal(err)
		}
		if _, err := s.Delete(ctx, "ended@host", time.Hour); err != nil {
			t.Fatal(err)
		}
		// Stale entries, as a failed ZREM, an expiry or a corrupt state leave them.
		future := float64(time.Now().Add(time.Hour).UnixMilli())
		rdb.ZAdd(ctx, s.IndexKey("n1"), redis.Z{Score: future, Member: "gone@host"},
			redis.Z{Score: future, Member: "junk@host"}, redis.Z{Score: float64(time.Now().Add(-time.Second).UnixMilli()), Member: "past@host"})
		rdb.Set(ctx, s.StateKey("junk@host"), "{not json", time.Hour)
		if err := rdb.Set(ctx, s.StateKey("past@host"), `{"record":{"call_id":"past@host"}}`, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		// A state saved before there were indexes (no node) is adopted.
		rdb.ZAdd(ctx, s.IndexKey("n1"), redis.Z{Score: future, Member: "old@host"})
		old, _ := json.Marshal(answered("old@host", later))
		rdb.Set(ctx, s.StateKey("old@host"), old, time.Hour)

		for _, tt := range []struct {
			node  string
			want  []string
			index []string // the index left
		}{
			{"n1", []string{"a{1}@host", "b@host", "c}@host", "old@host"}, []string{"a{1}@host", "b@host", "c}@host", "old@host"}},
			{"n2", []string{"moved@host", "theirs@host"}, []string{"moved@host", "theirs@host"}},
			{"n3", nil, nil},
		} {
			owned, err := as(s, tt.node).Take(ctx, tt.node)
			if err != nil {
				t.Fatalf("%s: %v", tt.node, err)
			}
			var ids []string
			for _, st := range owned {
				if st.Phase != call.Answered || !st.Expiry.Equal(later.Round(0)) || st.Callee.Route[0] != "<sip:edge.example;lr>" {
					t.Fatalf("%s: owned %+v", tt.node, st)
				}
				ids = append(ids, st.Record.CallID)
			}
			slices.Sort(ids)
			if !slices.Equal(ids, tt.want) {
				t.Fatalf("%s owns %q, want %q", tt.node, ids, tt.want)
			}
			index, err := rdb.ZRange(ctx, s.IndexKey(tt.node), 0, -1).Result()
			if slices.Sort(index); err != nil || !slices.Equal(index, tt.index) {
				t.Fatalf("%s: index %q (%v) after Take, want %q", tt.node, index, err, tt.index)
			}
		}
		// An entry is scored by when the state expires.
		score, err := rdb.ZScore(ctx, s.IndexKey("n1"), "b@host").Result()
		if d := time.Until(time.UnixMilli(int64(score))); err != nil || d <= 59*time.Minute || d > time.Hour {
			t.Fatalf("b@host scored %v from now (%v), want its TTL", d, err)
		}
		// The stale states themselves are left to their TTL: the index only is pruned.
		if _, ok, _ := s.Load(ctx, "moved@host"); !ok {
			t.Fatal("pruning n1's index removed n2's call")
		}
	})

	t.Run("a missing index entry breaks nothing", func(t *testing.T) {
		s, rdb := next()
		id := "unindexed@host"
		if err := s.Save(ctx, answered(id, time.Now().Add(time.Hour)), time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := rdb.Del(ctx, s.IndexKey("n1")).Err(); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := s.Load(ctx, id); !ok || err != nil {
			t.Fatalf("load %v %v", ok, err)
		}
		if first, err := s.Delete(ctx, id, time.Hour); !first || err != nil {
			t.Fatalf("end %v %v", first, err)
		}
		// A save refused after the end adds no entry.
		if err := s.Save(ctx, answered(id, time.Now().Add(time.Hour)), time.Hour); err != nil {
			t.Fatal(err)
		}
		if n, err := rdb.ZCard(ctx, s.IndexKey("n1")).Result(); n != 0 || err != nil {
			t.Fatalf("index has %d entries (%v) after the end", n, err)
		}
		// A store without a node keeps no index.
		anon := as(s, "")
		if err := anon.Save(ctx, answered("anon@host", time.Now().Add(time.Hour)), time.Hour); err != nil {
			t.Fatal(err)
		}
		if keys, _ := rdb.Keys(ctx, s.prefix+"dlgs:*").Result(); len(keys) != 0 {
			t.Fatalf("index keys %q without a node", keys)
		}
	})

	t.Run("a restarted node adopts its calls and they end; a media timeout ends one another node saved", func(t *testing.T) {
		s, rdb := next()
		a, ra := newTable(s)
		for _, id := range []string{"r{1}@host", "r2@host", "mt@host"} {
			c := a.Begin(calls.Record{CallID: id, Caller: "alice"}, "a")
			c.Anchored(netip.MustParseAddrPort("127.0.0.1:22222"))
			c.Answered(call.Answer{Code: 200, Reason: "OK", Contact: "sip:bob@127.0.0.1:5062", Dialog: true,
				Caller: call.Side{Target: "sip:alice@127.0.0.1:5061", Tag: "a"}, Callee: call.Side{Target: "sip:bob@127.0.0.1:5062", Tag: "b"}})
		}
		if err := a.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		// a is gone (killed); another node hears of one call's media timeout.
		b, rb := newTable(as(s, "n2"))
		b.MediaTimeout(netip.MustParseAddrPort("127.0.0.1:22222"), "mt@host", nil)
		if err := b.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if rb.n() != 1 || rb.recs[0].Disposition != calls.MediaTimeout || b.Held() != 0 {
			t.Fatalf("b: %d records %+v, %d held", rb.n(), rb.recs, b.Held())
		}
		// a starts again with a short dialog timeout left for its calls.
		a2, ra2 := newTable(s)
		for _, id := range []string{"r{1}@host", "r2@host"} {
			st, _, _ := s.Load(ctx, id)
			st.Expiry = time.Now().Add(100 * time.Millisecond)
			if err := s.Save(ctx, st, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := a2.Adopt(ctx, "n1"); n != 2 || err != nil {
			t.Fatalf("adopted %d (%v), want 2", n, err)
		}
		for deadline := time.Now().Add(5 * time.Second); ra2.n() < 2; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d adopted calls ended, want 2", ra2.n())
			}
		}
		if err := a2.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if ra.n() != 0 || ra2.n() != 2 || ra2.recs[0].Disposition != calls.Expired || a2.Held() != 0 {
			t.Fatalf("records: a %d, a2 %+v; a2 holds %d", ra.n(), ra2.recs, a2.Held())
		}
		states, _ := rdb.Keys(ctx, s.prefix+"dlg:*").Result()
		for _, k := range states {
			if !strings.HasSuffix(k, ":end") {
				t.Fatalf("%s still saved", k)
			}
		}
		for _, node := range []string{"n1", "n2"} {
			if n, err := rdb.ZCard(ctx, s.IndexKey(node)).Result(); n != 0 || err != nil {
				t.Fatalf("index of %s: %d entries (%v), want 0", node, n, err)
			}
		}
	})

	t.Run("of the live nodes taking a gone node's calls at once, one takes each; the node come back takes none", func(t *testing.T) {
		s, rdb := next()
		later := time.Now().Add(time.Hour)
		var ids []string
		for i := range 300 { // more than one batch
			id := "gone{" + string(rune('a'+i%26)) + "}" + strconv.Itoa(i) + "@host"
			ids = append(ids, id)
			if err := s.Save(ctx, answered(id, later), time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		// One the gone node saved is another node's since; one ended.
		if err := as(s, "n7").Save(ctx, answered(ids[0], later), time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := as(s, "n7").Delete(ctx, ids[1], time.Hour); err != nil {
			t.Fatal(err)
		}
		want := ids[2:]
		scoreBefore, _ := rdb.ZScore(ctx, s.IndexKey("n1"), ids[5]).Result()
		var mu sync.Mutex
		takenBy := map[string][]string{}
		busy := 0
		var wg sync.WaitGroup
		for _, node := range []string{"n2", "n3", "n4", "n5"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sts, err := as(s, node).Take(ctx, "n1")
				mu.Lock()
				defer mu.Unlock()
				if errors.Is(err, call.ErrTaking) {
					busy++
					return
				}
				if err != nil {
					t.Error(node, err)
				}
				for _, st := range sts {
					takenBy[node] = append(takenBy[node], st.Record.CallID)
				}
			}()
		}
		wg.Wait()
		var all []string
		for node, got := range takenBy {
			all = append(all, got...)
			if len(got) > 0 {
				index, _ := rdb.ZRange(ctx, s.IndexKey(node), 0, -1).Result()
				slices.Sort(index)
				slices.Sort(got)
				if !slices.Equal(index, got) {
					t.Fatalf("%s took %d calls, indexes %d", node, len(got), len(index))
				}
				if score, _ := rdb.ZScore(ctx, s.IndexKey(node), ids[5]).Result(); len(got) == len(want) && score != scoreBefore {
					t.Fatalf("entry scored %v in the taker's index, %v in the gone node's", score, scoreBefore)
				}
			}
		}
		slices.Sort(all)
		wantSorted := slices.Clone(want)
		slices.Sort(wantSorted)
		if !slices.Equal(all, wantSorted) {
			t.Fatalf("%d calls taken in all (%d refused, lease held), want each of %d once", len(all), busy, len(want))
		}
		for node, got := range takenBy {
			if len(got) > 0 && len(got) != len(want) {
				t.Fatalf("%s took %d of %d: one taker takes them all", node, len(got), len(want))
			}
		}
		// Each state is its taker's, with the TTL it had.
		for node, got := range takenBy {
			for _, id := range got[:3] {
				blob, _ := rdb.Get(ctx, s.StateKey(id)).Bytes()
				var sv saved
				if err := json.Unmarshal(blob, &sv); err != nil || sv.Node != node {
					t.Fatalf("%s saved by %q (%v), want %s", id, sv.Node, err, node)
				}
				if ttl, _ := rdb.PTTL(ctx, s.StateKey(id)).Result(); ttl <= 59*time.Minute {
					t.Fatalf("%s TTL %v after the take", id, ttl)
				}
			}
		}
		if n, _ := rdb.ZCard(ctx, s.IndexKey("n1")).Result(); n != 0 {
			t.Fatalf("the gone node's index has %d entries after the take", n)
		}
		if n, _ := rdb.Exists(ctx, s.LeaseKey("n1")).Result(); n != 0 {
			t.Fatal("the lease outlived the take")
		}
		// The gone node comes back, and the others look again: nothing for anyone.
		for _, node := range []string{"n1", "n2", "n3"} {
			if sts, err := as(s, node).Take(ctx, "n1"); len(sts) != 0 || err != nil {
				t.Fatalf("%s took %d of n1's calls again (%v)", node, len(sts), err)
			}
		}
		if _, ok, _ := s.Load(ctx, ids[0]); !ok {
			t.Fatal("the call n7 saved since is gone")
		}
		if sts, _ := as(s, "n7").Take(ctx, "n7"); len(sts) != 1 || sts[0].Record.CallID != ids[0] {
			t.Fatalf("n7 owns %d calls, want the one it saved", len(sts))
		}
	})

	t.Run("a take cut short is finished by its taker, the calls it moved included", func(t *testing.T) {
		s, rdb := next()
		later := time.Now().Add(time.Hour)
		for _, id := range []string{"x1@host", "x2@host", "x3@host"} {
			if err := s.Save(ctx, answered(id, later), time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		// n2 moved x1 (its state n2's, in n2's index) and stopped before
		// the entry left n1's index.
		if err := as(s, "n2").Save(ctx, answered("x1@host", later), time.Hour); err != nil {
			t.Fatal(err)
		}
		if sts, err := as(s, "n3").Take(ctx, "n1"); err != nil || len(sts) != 2 {
			t.Fatalf("n3 took %d (%v), want the 2 not moved", len(sts), err)
		}
		// Had n2 come first, it would have had all three.
		s2, _ := next()
		for _, id := range []string{"x1@host", "x2@host", "x3@host"} {
			if err := s2.Save(ctx, answered(id, later), time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		if err := as(s2, "n2").Save(ctx, answered("x1@host", later), time.Hour); err != nil {
			t.Fatal(err)
		}
		sts, err := as(s2, "n2").Take(ctx, "n1")
		if err != nil || len(sts) != 3 {
			t.Fatalf("n2 took %d (%v), want 3", len(sts), err)
		}
		if n, _ := rdb.ZCard(ctx, s2.IndexKey("n1")).Result(); n != 0 {
			t.Fatalf("n1's index has %d entries left", n)
		}
		if n, _ := rdb.ZCard(ctx, s2.IndexKey("n2")).Result(); n != 3 {
			t.Fatalf("n2's index has %d entries, want 3", n)
		}
	})

	t.Run("a lease held refuses the take until it ends; a store without a node takes nothing", func(t *testing.T) {
		s, rdb := next()
		if err := s.Save(ctx, answered("leased@host", time.Now().Add(time.Hour)), time.Hour); err != nil {
			t.Fatal(err)
		}
		// n2 took the lease and died on it: n1, come back, waits for it.
		if err := rdb.Set(ctx, s.LeaseKey("n1"), "n2", 200*time.Millisecond).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Take(ctx, "n1"); !errors.Is(err, call.ErrTaking) || !strings.Contains(err.Error(), "n2") {
			t.Fatalf("take under n2's lease: %v", err)
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			sts, err := s.Take(ctx, "n1")
			if err == nil {
				if len(sts) != 1 {
					t.Fatalf("took %d, want 1", len(sts))
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("still refused after the lease: %v", err)
			}
		}
		if _, err := as(s, "").Take(ctx, "n1"); err == nil {
			t.Fatal("a store without a node took calls")
		}
	})

	t.Run("a live node adopts the calls of a node gone for good: they end there, once", func(t *testing.T) {
		s, rdb := next()
		a, ra := newTable(s)
		for _, id := range []string{"o{1}@host", "o2@host"} {
			c := a.Begin(calls.Record{CallID: id, Caller: "alice"}, "a")
			c.Anchored(netip.MustParseAddrPort("127.0.0.1:22222"))
			c.Answered(call.Answer{Code: 200, Reason: "OK", Contact: "sip:bob@127.0.0.1:5062", Dialog: true,
				Caller: call.Side{Target: "sip:alice@127.0.0.1:5061", Tag: "a"}, Callee: call.Side{Target: "sip:bob@127.0.0.1:5062", Tag: "b"}})
		}
		if err := a.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		// n1 is gone for good; n2 adopts its calls, one ending soon.
		st, _, _ := s.Load(ctx, "o2@host")
		st.Expiry = time.Now().Add(100 * time.Millisecond)
		if err := s.Save(ctx, st, time.Hour); err != nil {
			t.Fatal(err)
		}
		b, rb := newTable(as(s, "n2"))
		if n, err := b.Adopt(ctx, "n1"); n != 2 || err != nil {
			t.Fatalf("n2 adopted %d (%v), want 2", n, err)
		}
		// n1 comes back after that: nothing of its is left to adopt.
		a2, ra2 := newTable(s)
		if n, err := a2.Adopt(ctx, "n1"); n != 0 || err != nil {
			t.Fatalf("n1 come back adopted %d (%v), want 0", n, err)
		}
		for deadline := time.Now().Add(5 * time.Second); rb.n() < 1; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the adopted call did not end at its expiry")
			}
		}
		// n2 restarts: it adopts the other call as its own.
		if err := b.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		b2, rb2 := newTable(as(s, "n2"))
		if n, err := b2.Adopt(ctx, "n2"); n != 1 || err != nil {
			t.Fatalf("n2 restarted adopted %d (%v), want 1", n, err)
		}
		b2.Find("o{1}@host").Bye("a")
		if err := b2.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if ra.n()+ra2.n() != 0 || rb.n() != 1 || rb2.n() != 1 || rb.recs[0].Disposition != calls.Expired {
			t.Fatalf("records: n1 %d, n1 again %d, n2 %+v, n2 again %d", ra.n(), ra2.n(), rb.recs, rb2.n())
		}
		for _, node := range []string{"n1", "n2"} {
			if n, err := rdb.ZCard(ctx, s.IndexKey(node)).Result(); n != 0 || err != nil {
				t.Fatalf("index of %s: %d entries (%v), want 0", node, n, err)
			}
		}
	})

	t.Run("two nodes: the one that loads ends it, the other writes nothing", func(t *testing.T) {
		s, _ := next()
		a, ra := newTable(s)
		b, rb := newTable(s)
		c := a.Begin(calls.Record{CallID: "nodes{x}@host", Caller: "alice"}, "a")
		c.Anchored(netip.MustParseAddrPort("127.0.0.1:22222"))
		c.Answered(call.Answer{Code: 200, Reason: "OK", Contact: "sip:bob@127.0.0.1:5062", Dialog: true,
			Caller: call.Side{Target: "sip:alice@127.0.0.1:5061", Tag: "a"}, Callee: call.Side{Target: "sip:bob@127.0.0.1:5062", Tag: "b"}})
		if err := a.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		loaded := b.Lookup(ctx, "nodes{x}@host")
		if loaded == nil {
			t.Fatal("b did not load the call a saved")
		}
		loaded.Bye("a")
		if err := b.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		c.Bye("b") // the other side's BYE reached a, later
		if err := a.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if ra.n() != 0 || rb.n() != 1 || b.Len() != 0 || a.Len() != 0 {
			t.Fatalf("records: a %d, b %d; held: a %d, b %d", ra.n(), rb.n(), a.Len(), b.Len())
		}
	})
}

type recorder struct {
	mu   sync.Mutex
	recs []calls.Record
}

func (r *recorder) Write(rec calls.Record) { r.mu.Lock(); r.recs = append(r.recs, rec); r.mu.Unlock() }
func (r *recorder) n() int                 { r.mu.Lock(); defer r.mu.Unlock(); return len(r.recs) }

func newTable(s call.Store) (*call.Table, *recorder) {
	r := &recorder{}
	return call.New(call.Config{Records: r, Store: s, DialogTimeout: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}), r
}

func TestOnOneServer(t *testing.T) { contract(t, redistest.Start(t).URL()) }

// On a three-master Cluster: both keys of a call are on one slot (the
// scripts would fail with CROSSSLOT otherwise), Call-IDs with braces too.
func TestOnCluster(t *testing.T) {
	addrs := redistest.StartCluster(t, 3)
	contract(t, "redis-cluster://"+addrs[0]+","+addrs[1]+","+addrs[2])
}
