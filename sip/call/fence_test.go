package call

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
)

// handFence is a Fence the test sets by hand.
type handFence struct {
	mu       sync.Mutex
	owner    bool
	rejoin   bool
	epoch    uint64
	confirms int
}

func (f *handFence) Owner() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.owner }
func (f *handFence) Left() time.Duration {
	if f.Owner() {
		return time.Hour
	}
	return 0
}
func (f *handFence) Rejoining() (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.epoch, f.rejoin
}
func (f *handFence) Confirm(e uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.rejoin || e != f.epoch {
		return false
	}
	f.confirms++
	f.rejoin, f.owner = false, true
	return true
}
func (f *handFence) set(owner, rejoin bool) {
	f.mu.Lock()
	f.owner, f.rejoin = owner, rejoin
	f.epoch++
	f.mu.Unlock()
}

// A table whose node is fenced acts on none of its saved calls, saves
// nothing and loads nothing; as it rejoins, the calls another node took
// (or ended) are dropped without a record, BYE or media delete, the
// others kept, saved with what changed meanwhile, and ended by this node.
func TestFencedTable(t *testing.T) {
	s := newMemStore()
	fence := &handFence{owner: true}
	a, fa, tsa := node(t, s.as("a"), time.Hour)
	a.cfg.Fence = fence
	b, fb, _ := node(t, s.as("b"), time.Hour)
	ctx := context.Background()

	var held []*Call
	for _, id := range []string{"taken", "ended", "kept"} {
		c := a.Begin(calls.Record{CallID: id, Caller: "alice"}, "caller-tag")
		c.Anchored(anchorAddr)
		answer(c)
		held = append(held, c)
	}
	wait(t, a)
	ringing := a.Begin(calls.Record{CallID: "ringing", Caller: "alice"}, "caller-tag")
	savesBefore := s.saves

	fence.set(false, false) // cut off
	for _, id := range []string{"taken", "kept", "not-held"} {
		if !a.Fenced(id, false) {
			t.Fatalf("%s not fenced", id)
		}
	}
	if a.Fenced("ringing", false) {
		t.Fatal("a ringing call (never saved: nobody can adopt it) fenced")
	}
	for _, c := range held {
		c.MediaTimeout(nil)
		c.expired()
	}
	a.MediaTimeout(anchorAddr, "kept", nil)
	held[2].Moved("callee-tag", "sip:bob@10.0.0.2:5062", "10.0.0.2:5062", "UDP")
	if a.Lookup(ctx, "other") != nil {
		t.Fatal("loaded a call while fenced")
	}
	if _, err := a.Adopt(ctx, "c"); err == nil {
		t.Fatal("adopted calls while fenced")
	}
	wait(t, a)
	if len(fa.records) != 0 || len(fa.byes) != 0 || len(fa.deletes) != 0 || s.saves != savesBefore {
		t.Fatalf("fenced a acted: records %v, byes %v, deletes %v, %d saves", fa.records, fa.byes, fa.deletes, s.saves-savesBefore)
	}
	if a.Len() != 4 || tsa.Pending() != 4 {
		t.Fatalf("fenced a holds %d calls, %d timers; want 4 and 4 (the expiries tried again)", a.Len(), tsa.Pending())
	}
	ringing.Failed(486, "Busy Here", false, 1) // not saved: its own to end
	wait(t, a)
	if len(fa.records) != 1 {
		t.Fatalf("a ringing call's end while fenced: %d records, want 1", len(fa.records))
	}

	// Meanwhile b adopts a's calls and one is ended; a hands "kept" back
	// (as a Take cut short would leave it: a's in the store).
	if sts, err := b.Adopt(ctx, "a"); err != nil || sts != 3 {
		t.Fatalf("b adopted %d, %v", sts, err)
	}
	b.Find("ended").Bye("callee-tag")
	wait(t, b)
	kept := b.Find("kept")
	kst := kept.State()
	kept.drop()
	_ = s.saveAs(ctx, "a", kst, time.Hour)

	fence.set(false, true) // back: rejoining
	if k, d, err := a.Rejoin(ctx); err != nil || k != 1 || d != 2 {
		t.Fatalf("Rejoin: kept %d, dropped %d, %v; want 1, 2", k, d, err)
	}
	wait(t, a)
	if !fence.Owner() || fence.confirms != 1 {
		t.Fatal("not confirmed")
	}
	if a.Find("taken") != nil || a.Find("ended") != nil || a.Find("kept") == nil {
		t.Fatal("a holds the wrong calls after it rejoined")
	}
	if len(fa.records) != 1 || len(fa.byes) != 0 || len(fa.deletes) != 0 {
		t.Fatalf("a acted on the calls it dropped: records %v, byes %v, deletes %v", fa.records, fa.byes, fa.deletes)
	}
	if st, _ := s.state("kept"); st.Callee.Target != "sip:bob@10.0.0.2:5062" || s.owner("kept") != "a" {
		t.Fatalf("the change made while fenced not saved as a's: %+v by %q", st.Callee, s.owner("kept"))
	}
	if got := fa.slots["carrier"]; got != 1 {
		t.Fatalf("a holds %d trunk slots, want 1 (the kept call's)", got)
	}
	a.Find("kept").Bye("caller-tag")
	b.Find("taken").Bye("caller-tag")
	wait(t, a, b)
	if len(fa.records) != 2 || len(fb.records) != 2 {
		t.Fatalf("records: a %d, b %d; want 2 each (a: ringing, kept; b: ended, taken)", len(fa.records), len(fb.records))
	}
}

// An end this node could not claim before it was cut off (the store out
// of reach as the phone hung up) waits: once back, it is finished here if
// the call is still this node's (one record, its media deleted), and
// left to the node that adopted it meanwhile if not (no record here).
func TestFencedPendingEnd(t *testing.T) {
	for _, adopted := range []bool{false, true} {
		name := map[bool]string{false: "still this node's", true: "adopted meanwhile"}[adopted]
		t.Run(name, func(t *testing.T) {
			s := newMemStore()
			fence := &handFence{owner: true}
			a, fa, _ := node(t, s.as("a"), time.Hour)
			a.cfg.Fence = fence
			b, fb, _ := node(t, s.as("b"), time.Hour)
			ctx := context.Background()
			c := a.Begin(calls.Record{CallID: "p", Caller: "alice"}, "caller-tag")
			c.Anchored(anchorAddr)
			answer(c)
			wait(t, a)

			s.fail(errors.New("store out of reach"))
			c.Bye("caller-tag") // its claim fails, tried again while a is the owner
			time.Sleep(3 * claimRetry)
			fence.set(false, false) // a steps back: the end waits
			wait(t, a)
			if len(fa.records) != 0 || len(fa.deletes) != 0 || a.Len() != 0 {
				t.Fatalf("a finished an end it could not claim: records %v, deletes %v, %d held", fa.records, fa.deletes, a.Len())
			}
			s.fail(nil)
			if adopted {
				if n, err := b.Adopt(ctx, "a"); n != 1 || err != nil {
					t.Fatalf("b adopted %d, %v", n, err)
				}
			}
			fence.set(false, true)
			if _, _, err := a.Rejoin(ctx); err != nil {
				t.Fatal(err)
			}
			wait(t, a)
			if adopted {
				b.Find("p").MediaTimeout(nil)
				wait(t, b)
				if len(fa.records) != 0 || len(fa.deletes) != 0 || len(fb.records) != 1 {
					t.Fatalf("records: a %d (deletes %v), b %d; want 0, 1", len(fa.records), fa.deletes, len(fb.records))
				}
				return
			}
			if len(fa.records) != 1 || fa.records[0].HangupBy != "caller" || len(fa.deletes) != 1 || len(fb.records) != 0 {
				t.Fatalf("a: records %+v, deletes %v; b %d records; want a's one BYE record", fa.records, fa.deletes, len(fb.records))
			}
			if _, ok := s.state("p"); ok {
				t.Fatal("the ended call is still saved")
			}
		})
	}
}

// A phone's BYE while this node is fenced is taken (the proxy relays it
// to the other phone): the end claim in the store decides which node
// finishes the call. With the store in reach and the call not adopted,
// this node claims it and finishes it (one record, media deleted), and a
// node that adopts later finds it ended. With the store out of reach, the
// end waits until this node is back, and is finished then if the call is
// still its own.
func TestFencedPhoneHangUpTaken(t *testing.T) {
	for _, reach := range []bool{true, false} {
		t.Run(map[bool]string{true: "store in reach", false: "store out of reach"}[reach], func(t *testing.T) {
			s := newMemStore()
			fence := &handFence{owner: true}
			a, fa, _ := node(t, s.as("a"), time.Hour)
			a.cfg.Fence = fence
			b, fb, _ := node(t, s.as("b"), time.Hour)
			ctx := context.Background()
			c := a.Begin(calls.Record{CallID: "h", Caller: "alice"}, "caller-tag")
			c.Anchored(anchorAddr)
			answer(c)
			wait(t, a)

			fence.set(false, false) // a steps back
			if !reach {
				s.fail(errors.New("store out of reach"))
			}
			if !a.Fenced("h", false) || a.Fenced("h", true) || !a.Fenced("not-held", true) {
				t.Fatal("fenced: want other requests refused, a phone's BYE for a held call taken, one for a call not held refused")
			}
			c.Bye("callee-tag")
			wait(t, a)
			if reach {
				if len(fa.records) != 1 || fa.records[0].HangupBy != "callee" || len(fa.deletes) != 1 {
					t.Fatalf("a: records %+v, deletes %v; want the callee's hang-up, its media deleted", fa.records, fa.deletes)
				}
				if n, err := b.Adopt(ctx, "a"); n != 0 || err != nil {
					t.Fatalf("b adopted %d calls (%v) of which a claimed the end", n, err)
				}
				return
			}
			if len(fa.records) != 0 || len(fa.deletes) != 0 || a.Len() != 0 {
				t.Fatalf("a finished an end it could not claim: records %v, deletes %v, %d held", fa.records, fa.deletes, a.Len())
			}
			s.fail(nil)
			fence.set(false, true)
			if _, _, err := a.Rejoin(ctx); err != nil {
				t.Fatal(err)
			}
			wait(t, a)
			if len(fa.records) != 1 || fa.records[0].HangupBy != "callee" || len(fa.deletes) != 1 || len(fb.records) != 0 {
				t.Fatalf("after rejoining: a records %+v, deletes %v; b %d records", fa.records, fa.deletes, len(fb.records))
			}
		})
	}
}
