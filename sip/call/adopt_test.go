package call

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
)

// savedCall is an answered, anchored call on trunk "carrier", counted by
// its caller's toll caps, as a node saved it, expiring at expiry.
func savedCall(callID string, expiry time.Time) State {
	answered := expiry.Add(-time.Hour)
	return State{Record: calls.Record{CallID: callID, Caller: "alice", Start: answered, Answer: &answered, Code: 200, Reason: "OK"},
		Phase: Answered, Dialog: true, Anchor: anchorAddr.String(), Trunk: "carrier", Toll: true, Expiry: expiry,
		Caller: Side{Target: "sip:alice@127.0.0.1:5061", Tag: "caller-tag"}, Callee: Side{Target: "sip:bob@127.0.0.1:5062", Tag: "callee-tag"}}
}

// nodeAs is node with the store as name's (what it saves is name's).
func nodeAs(t *testing.T, s *memStore, name string) (*Table, *fakes) {
	t.Helper()
	tb, f, _ := node(t, s.as(name), time.Hour)
	return tb, f
}

// until polls cond until it holds: a timer ends the call on its own, with
// nothing to wait on but its effects.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
	}
}

func (f *fakes) recorded() []calls.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]calls.Record(nil), f.records...)
}

// A node that starts again adopts the calls it saved that no node ended,
// and only those; each ends at its saved expiry (at once when that has
// passed) as if the node had never stopped: BYE to both sides, media
// deleted, one record, trunk slot and toll count taken and given back.
func TestAdoptedCallsEndAtTheirExpiry(t *testing.T) {
	for _, tt := range []struct {
		name      string
		savedBy   string
		expiresIn time.Duration
		adopted   int
	}{
		{"its own call, armed for what is left", "n1", 150 * time.Millisecond, 1},
		{"its own call past its expiry, ended at once", "n1", -time.Minute, 1},
		{"another node's call is left to it", "n2", 150 * time.Millisecond, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newMemStore()
			_ = s.as(tt.savedBy).Save(context.Background(), savedCall("c1", time.Now().Add(tt.expiresIn)), time.Hour)
			tb, f := nodeAs(t, s, "n1")
			n, err := tb.Adopt(context.Background(), "n1")
			if err != nil || n != tt.adopted {
				t.Fatalf("adopted %d (%v), want %d", n, err, tt.adopted)
			}
			if tt.adopted == 0 {
				if tb.Len() != 0 || len(f.slots) != 0 || len(f.tolls) != 0 {
					t.Fatalf("holds %d calls, slots %v, tolls %v", tb.Len(), f.slots, f.tolls)
				}
				if _, ok := s.state("c1"); !ok || s.owner("c1") != tt.savedBy {
					t.Fatal("another node's call was touched")
				}
				return
			}
			until(t, "the adopted call ends", func() bool { return len(f.recorded()) > 0 })
			wait(t, tb)
			r := f.recorded()
			if len(r) != 1 || r[0].Disposition != calls.Expired || r[0].HangupBy != "timeout" || r[0].CallID != "c1" {
				t.Fatalf("records %+v", r)
			}
			if len(f.byes) != 2 || len(f.deletes) != 1 || f.slots["carrier"] != 0 || len(f.tolls) != 0 || tb.Held() != 0 {
				t.Fatalf("byes %v, deletes %v, slots %v, tolls %v, %d held", f.byes, f.deletes, f.slots, f.tolls, tb.Held())
			}
			if _, ok := s.state("c1"); ok {
				t.Fatal("the ended call is still saved")
			}
		})
	}
}

// A call held already (loaded for a request before the adoption ran) is
// not adopted again; a store that cannot be read is an error, and nothing
// is held.
func TestAdoptHeldAndFailing(t *testing.T) {
	s := newMemStore()
	_ = s.as("n1").Save(context.Background(), savedCall("c1", time.Now().Add(time.Hour)), time.Hour)
	tb, f := nodeAs(t, s, "n1")
	if tb.Lookup(context.Background(), "c1") == nil {
		t.Fatal("not loaded")
	}
	if n, err := tb.Adopt(context.Background(), "n1"); n != 0 || err != nil || tb.Len() != 1 || f.slots["carrier"] != 1 {
		t.Fatalf("adopted %d (%v): %d held, slots %v", n, err, tb.Len(), f.slots)
	}

	s.fail(errors.New("store down"))
	tb2, _ := nodeAs(t, s, "n1")
	if n, err := tb2.Adopt(context.Background(), "n1"); n != 0 || !errors.Is(err, s.err) || tb2.Len() != 0 {
		t.Fatalf("adopted %d (%v), %d held, want the store's error", n, err, tb2.Len())
	}

	// Without a store there is nothing to adopt.
	tb3, _, _ := newTable(t, time.Hour)
	if n, err := tb3.Adopt(context.Background(), "n1"); n != 0 || err != nil {
		t.Fatalf("NoStore: adopted %d (%v)", n, err)
	}
}

// A live node adopts the calls of a node gone for good: they are its own
// from then on (the gone node, come back, adopts none), and each ends
// there at its expiry, once, with its trunk slot taken and given back.
func TestAdoptCallsOfAGoneNode(t *testing.T) {
	s := newMemStore()
	for _, id := range []string{"c1", "c2"} {
		_ = s.as("n1").Save(context.Background(), savedCall(id, time.Now().Add(150*time.Millisecond)), time.Hour)
	}
	b, fb := nodeAs(t, s, "n2")
	if n, err := b.Adopt(context.Background(), "n1"); n != 2 || err != nil {
		t.Fatalf("n2 adopted %d (%v), want 2", n, err)
	}
	if s.owner("c1") != "n2" || s.owner("c2") != "n2" {
		t.Fatalf("owners %q %q after the adoption, want n2", s.owner("c1"), s.owner("c2"))
	}
	a, fa := nodeAs(t, s, "n1")
	if n, err := a.Adopt(context.Background(), "n1"); n != 0 || err != nil || a.Len() != 0 {
		t.Fatalf("n1 come back adopted %d (%v), want 0", n, err)
	}
	until(t, "the adopted calls end", func() bool { return len(fb.recorded()) == 2 })
	wait(t, b)
	if r := fb.recorded(); r[0].Disposition != calls.Expired || len(fa.recorded()) != 0 || fb.slots["carrier"] != 0 || b.Held() != 0 {
		t.Fatalf("records n2 %+v, n1 %d; slots %v; %d held", r, len(fa.recorded()), fb.slots, b.Held())
	}
}

// Another node taking the same node's calls is no store error: Adopt
// returns ErrTaking and holds nothing.
func TestAdoptWhileAnotherTakes(t *testing.T) {
	s := newMemStore()
	s.err = fmt.Errorf("lease held by n3: %w", ErrTaking)
	b, _ := nodeAs(t, s, "n2")
	if n, err := b.Adopt(context.Background(), "n1"); n != 0 || !errors.Is(err, ErrTaking) || b.Len() != 0 {
		t.Fatalf("adopted %d (%v), want ErrTaking", n, err)
	}
}

// A call loaded for an in-dialog request is the loading node's from then
// on: it is the one that adopts it if it starts again.
func TestLoadedCallIsTheLoadersToAdopt(t *testing.T) {
	s := newMemStore()
	_ = s.as("n1").Save(context.Background(), savedCall("c1", time.Now().Add(time.Hour)), time.Hour)
	b, _ := nodeAs(t, s, "n2")
	if b.Lookup(context.Background(), "c1") == nil {
		t.Fatal("not loaded")
	}
	wait(t, b)
	if got := s.owner("c1"); got != "n2" {
		t.Fatalf("owned by %q after n2 loaded it, want n2", got)
	}
	if mine, _ := s.as("n1").Take(context.Background(), "n1"); len(mine) != 0 {
		t.Fatalf("n1 would still adopt %d calls", len(mine))
	}
}

// A media timeout for a call this node does not hold loads it from the
// store, when saved, and ends it as a media timeout: BYE to both sides,
// one record across the nodes the anchor's report reaches, the trunk slot
// and toll count given back. Only the call's own anchor is believed.
func TestMediaTimeoutOfACallNotHeld(t *testing.T) {
	other := netip.MustParseAddrPort("127.0.0.1:22223")
	for _, tt := range []struct {
		name    string
		saved   bool
		from    netip.AddrPort
		nodes   int // nodes the report reaches, none holding the call
		records int
		held    int // calls held afterwards, over all nodes
	}{
		{"saved: ended as a media timeout", true, anchorAddr, 1, 1, 0},
		{"saved, reported to two nodes at once: one record", true, anchorAddr, 2, 1, 0},
		{"another anchor's report: loaded, not ended", true, other, 1, 0, 1},
		{"not saved: nothing", false, anchorAddr, 1, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newMemStore()
			if tt.saved {
				_ = s.as("gone").Save(context.Background(), savedCall("c1", time.Now().Add(time.Hour)), time.Hour)
			}
			var tbs []*Table
			var fs []*fakes
			for range tt.nodes {
				tb, f := nodeAs(t, s, "n1")
				tbs, fs = append(tbs, tb), append(fs, f)
			}
			var wg sync.WaitGroup
			for _, tb := range tbs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tb.MediaTimeout(tt.from, "c1", map[string]calls.MediaQuality{"caller-tag": {Sent: 10}})
				}()
			}
			wg.Wait()
			wait(t, tbs...)
			records, held := 0, 0
			for i, f := range fs {
				r := f.recorded()
				records += len(r)
				held += tbs[i].Held()
				if len(r) == 1 && (r[0].Disposition != calls.MediaTimeout || r[0].HangupBy != "media-timeout" || r[0].CallerMedia == nil || len(f.byes) != 2) {
					t.Fatalf("record %+v, byes %v", r[0], f.byes)
				}
				if len(r) == 1 && (f.slots["carrier"] != 0 || len(f.tolls) != 0 || len(f.deletes) != 0) {
					t.Fatalf("slots %v, tolls %v, deletes %v after the media timeout", f.slots, f.tolls, f.deletes)
				}
			}
			if records != tt.records || held != tt.held {
				t.Fatalf("%d records, %d held; want %d, %d", records, held, tt.records, tt.held)
			}
			if _, ok := s.state("c1"); ok != (tt.saved && tt.records == 0) {
				t.Fatalf("saved afterwards: %v", ok)
			}
		})
	}
}

// reclaimer answers Reclaim as told, and notes what it was asked.
type reclaimer struct {
	held bool
	err  error

	mu    sync.Mutex
	asked []string
}

func (r *reclaimer) Reclaim(_ context.Context, anchor netip.AddrPort, callID string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, anchor.String()+" "+callID)
	return r.held, r.err
}

// An adopted anchored call is claimed on its anchor: one the anchor
// still holds stays up (its media timeout reported here from then on);
// one it no longer holds ends at once as a media timeout, BYE to both
// sides; an anchor that does not answer leaves the call to its expiry.
func TestAdoptedCallsReclaimedOnTheirAnchor(t *testing.T) {
	for _, tt := range []struct {
		name  string
		r     *reclaimer
		ended bool
	}{
		{"held by the anchor", &reclaimer{held: true}, false},
		{"gone from the anchor", &reclaimer{}, true},
		{"the anchor does not answer", &reclaimer{err: errors.New("timeout")}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newMemStore()
			_ = s.as("n1").Save(context.Background(), savedCall("c1", time.Now().Add(time.Hour)), time.Hour)
			tb, f := nodeAs(t, s, "n1")
			tb.cfg.Reclaim = tt.r
			if n, err := tb.Adopt(context.Background(), "n1"); err != nil || n != 1 {
				t.Fatalf("adopted %d (%v)", n, err)
			}
			until(t, "the anchor asked", func() bool { tt.r.mu.Lock(); defer tt.r.mu.Unlock(); return len(tt.r.asked) == 1 })
			if tt.r.asked[0] != anchorAddr.String()+" c1" {
				t.Fatalf("asked %q", tt.r.asked)
			}
			if !tt.ended {
				wait(t, tb)
				if tb.Len() != 1 || len(f.recorded()) != 0 {
					t.Fatalf("holds %d calls, %d records: want the call still up", tb.Len(), len(f.recorded()))
				}
				return
			}
			until(t, "the call ends", func() bool { return len(f.recorded()) == 1 })
			wait(t, tb)
			if r := f.recorded()[0]; r.Disposition != calls.MediaTimeout || r.HangupBy != "media-timeout" {
				t.Fatalf("record %+v, want a media timeout", r)
			}
			if tb.Len() != 0 {
				t.Fatalf("still holds %d calls", tb.Len())
			}
		})
	}
}
