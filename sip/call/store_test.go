package call

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/timers"
)

// memStore is a Store with the semantics of the Redis one: a save after
// the end is refused, only the first Delete of a call is first, and a call
// is owned by the node that saved it last (as(node) saves as that node).
type memStore struct {
	mu     sync.Mutex
	states map[string]State
	ttls   map[string]time.Duration
	owners map[string]string
	ended  map[string]bool
	saves  int
	err    error         // every operation fails with it when set
	delay  time.Duration // each save takes this long
}

func newMemStore() *memStore {
	return &memStore{states: map[string]State{}, ttls: map[string]time.Duration{}, owners: map[string]string{}, ended: map[string]bool{}}
}

// slow has each save from now on take d.
func (m *memStore) slow(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.delay = d
}

func (m *memStore) Save(ctx context.Context, st State, ttl time.Duration) error {
	return m.saveAs(ctx, "", st, ttl)
}

func (m *memStore) saveAs(_ context.Context, node string, st State, ttl time.Duration) error {
	m.mu.Lock()
	d := m.delay
	m.mu.Unlock()
	time.Sleep(d)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	m.saves++
	if !m.ended[st.Record.CallID] {
		m.states[st.Record.CallID], m.ttls[st.Record.CallID], m.owners[st.Record.CallID] = st, ttl, node
	}
	return nil
}

func (m *memStore) Take(ctx context.Context, node string) ([]State, error) {
	return m.takeAs(ctx, "", node)
}

// takeAs is Take by taker: node's calls become taker's.
func (m *memStore) takeAs(_ context.Context, taker, node string) ([]State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	var out []State
	for id, st := range m.states {
		if m.owners[id] == node {
			m.owners[id] = taker
			out = append(out, st)
		}
	}
	return out, nil
}

func (m *memStore) Mine(ctx context.Context, ids []string) (map[string]bool, error) {
	return m.mineAs(ctx, "", ids)
}

// mineAs is Mine by node: the calls of ids saved last by node, or never
// saved and not ended.
func (m *memStore) mineAs(_ context.Context, node string, ids []string) (map[string]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	out := map[string]bool{}
	for _, id := range ids {
		_, saved := m.states[id]
		out[id] = saved && m.owners[id] == node || !saved && !m.ended[id]
	}
	return out, nil
}

// fail makes every operation fail with err from now on (saves started
// before may still be running: under the lock).
func (m *memStore) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

// as is the store as node's: what it saves is node's.
func (m *memStore) as(node string) Store { return nodeStore{m, node} }

type nodeStore struct {
	*memStore
	node string
}

func (n nodeStore) Save(ctx context.Context, st State, ttl time.Duration) error {
	return n.saveAs(ctx, n.node, st, ttl)
}

func (n nodeStore) Take(ctx context.Context, node string) ([]State, error) {
	return n.takeAs(ctx, n.node, node)
}

func (n nodeStore) Mine(ctx context.Context, ids []string) (map[string]bool, error) {
	return n.mineAs(ctx, n.node, ids)
}

func (m *memStore) Load(_ context.Context, callID string) (State, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return State{}, false, m.err
	}
	st, ok := m.states[callID]
	return st, ok, nil
}

func (m *memStore) Delete(_ context.Context, callID string, _ time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return false, m.err
	}
	delete(m.states, callID)
	delete(m.owners, callID)
	first := !m.ended[callID]
	m.ended[callID] = true
	return first, nil
}

func (m *memStore) state(callID string) (State, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.states[callID]
	return st, ok
}

func (m *memStore) owner(callID string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.owners[callID]
}

// node is one sori's table on a shared store.
func node(t *testing.T, s Store, dialogTimeout time.Duration) (*Table, *fakes, *timers.Set) {
	t.Helper()
	f := &fakes{slots: map[string]int{}, tolls: map[string]bool{}, quality: map[string]calls.MediaQuality{}}
	ts := &timers.Set{}
	tb := New(Config{Records: f, Media: f, Slots: f, Tolls: f, Networks: f, Hangup: f, DialogTimeout: dialogTimeout, Timers: ts,
		Store: s, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return tb, f, ts
}

func wait(t *testing.T, tbs ...*Table) {
	t.Helper()
	for _, tb := range tbs {
		if err := tb.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// An answered call is in the store; another node (or this one after a
// restart) takes it for an in-dialog request and ends it there. The node
// that held it before then ends it too (a BYE to each, a media timeout):
// one record, one media delete, no BYE from the loser, each node's trunk
// slot and toll count given back.
func TestSavedCallEndsOnceAcrossNodes(t *testing.T) {
	s := newMemStore()
	a, fa, tsa := node(t, s, time.Hour)
	b, fb, tsb := node(t, s, time.Hour)

	c := a.Begin(calls.Record{CallID: "c1", Caller: "alice"}, "caller-tag")
	if err := c.CountToll(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	c.Anchored(anchorAddr)
	if wait(t, a); len(s.states) != 0 {
		t.Fatal("a ringing call was saved")
	}
	answer(c)
	wait(t, a)
	saved, ok := s.state("c1")
	if !ok || saved.Phase != Answered || saved.Callee.Tag != "callee-tag" || saved.Anchor != anchorAddr.String() || !saved.Toll {
		t.Fatalf("saved %+v (%v)", saved, ok)
	}
	if ttl := s.ttls["c1"]; ttl < time.Hour || ttl > time.Hour+endGrace {
		t.Fatalf("kept for %v, want the dialog timeout left and a grace", ttl)
	}

	if b.Find("c1") != nil {
		t.Fatal("b holds it before any request")
	}
	got := b.Lookup(context.Background(), "c1")
	if got == nil || b.Lookup(context.Background(), "c1") != got || b.Len() != 1 || tsb.Pending() != 1 {
		t.Fatalf("not loaded once: %v, %d held, %d timers", got, b.Len(), tsb.Pending())
	}
	if peer, ok := got.Peer("caller-tag"); !ok || peer.Target != "sip:bob@127.0.0.1:5062" {
		t.Fatalf("loaded call routes the caller to %+v (%v)", peer, ok)
	}
	if fb.slots["carrier"] != 1 || !fb.tolls["c1"] {
		t.Fatalf("b does not hold the trunk slot and toll count: %v %v", fb.slots, fb.tolls)
	}
	got.Bye("callee-tag")
	wait(t, b)
	if len(fb.records) != 1 || fb.records[0].HangupBy != "callee" || fb.records[0].Disposition != calls.Answered ||
		len(fb.deletes) != 1 || fb.slots["carrier"] != 0 || len(fb.tolls) != 0 || b.Len() != 0 || tsb.Pending() != 0 {
		t.Fatalf("b: records %+v, deletes %v, slots %v, tolls %v", fb.records, fb.deletes, fb.slots, fb.tolls)
	}
	if _, ok := s.state("c1"); ok {
		t.Fatal("the ended call is still saved")
	}
	if b.Lookup(context.Background(), "c1") != nil {
		t.Fatal("the ended call was loaded again")
	}

	// a still holds it, and hears of its end in its own way: it does nothing.
	a.MediaTimeout(anchorAddr, "c1", nil)
	wait(t, a)
	if len(fa.records) != 0 || len(fa.deletes) != 0 || len(fa.byes) != 0 {
		t.Fatalf("a ended it again: records %+v, deletes %v, byes %v", fa.records, fa.deletes, fa.byes)
	}
	if fa.slots["carrier"] != 0 || len(fa.tolls) != 0 || a.Len() != 0 || tsa.Pending() != 0 {
		t.Fatalf("a kept: slots %v, tolls %v, %d held, %d timers", fa.slots, fa.tolls, a.Len(), tsa.Pending())
	}
}

// The store holds the call's latest state: a target refresh is saved
// after the answer, and what a loading node routes by is the new Contact.
// A save that comes after the end leaves nothing.
func TestSaveFollowsTheLatestState(t *testing.T) {
	s := newMemStore()
	a, _, _ := node(t, s, time.Hour)
	c := a.Begin(calls.Record{CallID: "c2", Caller: "alice"}, "caller-tag")
	answer(c)
	c.Moved("callee-tag", "sip:bob@10.0.0.10:5062", "198.51.100.8:5060", "UDP")
	wait(t, a)
	if st, _ := s.state("c2"); st.Callee.Target != "sip:bob@10.0.0.10:5062" || st.Callee.Dest != "198.51.100.8:5060" {
		t.Fatalf("saved callee %+v, want the refreshed one", st.Callee)
	}
	b, _, _ := node(t, s, time.Hour)
	if peer, ok := b.Lookup(context.Background(), "c2").Peer("caller-tag"); !ok || peer.Target != "sip:bob@10.0.0.10:5062" {
		t.Fatalf("loaded peer %+v", peer)
	}

	// Ended at once after its answer: whatever the save does, nothing stays.
	c3 := a.Begin(calls.Record{CallID: "c3", Caller: "alice"}, "caller-tag")
	answer(c3)
	c3.Bye("caller-tag")
	wait(t, a)
	if _, ok := s.state("c3"); ok {
		t.Fatal("a call ended right after its answer is still saved")
	}
	// The store refuses a save after the end (as a late one would be).
	_ = s.Save(context.Background(), State{Record: calls.Record{CallID: "c3"}, Phase: Answered}, time.Hour)
	if _, ok := s.state("c3"); ok {
		t.Fatal("a save after the end was kept")
	}
}

// A call that expires on the node that loaded it is ended there: BYE to
// both sides and the record, once.
func TestLoadedCallExpires(t *testing.T) {
	s := newMemStore()
	// Saved by a node that is gone (it restarted), 200 ms before its expiry.
	now := time.Now()
	_ = s.Save(context.Background(), State{Record: calls.Record{CallID: "c4", Caller: "alice", Start: now, Answer: &now, Code: 200},
		Phase: Answered, Dialog: true, Expiry: now.Add(200 * time.Millisecond),
		Caller: Side{Target: "sip:alice@127.0.0.1:5061", Tag: "caller-tag"}, Callee: Side{Target: "sip:bob@127.0.0.1:5062", Tag: "callee-tag"}}, time.Hour)
	b, fb, tsb := node(t, s, time.Hour)
	if b.Lookup(context.Background(), "c4") == nil {
		t.Fatal("not loaded")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		fb.mu.Lock()
		n := len(fb.records)
		fb.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loaded call did not expire at its saved expiry")
		}
	}
	wait(t, b)
	if b.Held() != 0 || tsb.Pending() != 0 {
		t.Fatalf("%d held, %d timers after the expiry", b.Held(), tsb.Pending())
	}
	if len(fb.records) != 1 || fb.records[0].Disposition != calls.Expired || len(fb.byes) != 2 {
		t.Fatalf("records %+v, byes %v", fb.records, fb.byes)
	}
}

// Without the store a call is still ended and recorded: a Delete that
// fails does not lose the record, a Load that fails finds nothing, and a
// failed save does not stop the call.
func TestStoreFailures(t *testing.T) {
	s := newMemStore()
	a, fa, _ := node(t, s, time.Hour)
	c := a.Begin(calls.Record{CallID: "c5", Caller: "alice"}, "caller-tag")
	c.Anchored(anchorAddr)
	answer(c)
	wait(t, a)
	s.fail(errors.New("store down"))
	b, _, _ := node(t, s, time.Hour)
	if b.Lookup(context.Background(), "c5") != nil || b.Len() != 0 {
		t.Fatal("a failed load gave a call")
	}
	c.Moved("callee-tag", "sip:bob@10.0.0.10:5062", "198.51.100.8:5060", "UDP") // its save fails
	c.Bye("caller-tag")
	wait(t, a)
	if len(fa.records) != 1 || len(fa.deletes) != 1 || a.Len() != 0 {
		t.Fatalf("records %+v, deletes %v", fa.records, fa.deletes)
	}
}

// With NoStore (one node) nothing changes: Lookup is Find.
func TestNoStoreLookupIsFind(t *testing.T) {
	tb, f, _ := newTable(t, time.Hour)
	if tb.persist {
		t.Fatal("a table without a store persists")
	}
	c := tb.Begin(calls.Record{CallID: "c6"}, "caller-tag")
	answer(c)
	if tb.Lookup(context.Background(), "c6") != c || tb.Lookup(context.Background(), "nope") != nil {
		t.Fatal("Lookup is not Find")
	}
	c.Bye("caller-tag")
	wait(t, tb)
	if len(f.records) != 1 {
		t.Fatalf("records %+v", f.records)
	}
}

// A save the store refuses (slow or out of reach for a moment) is tried
// again, 1 s later and then backing off, until it lands (Wait waits for
// it: the save is still on its way); a call that ends meanwhile leaves
// no retry armed and nothing for Wait.
func TestFailedSaveTriedAgain(t *testing.T) {
	s := newMemStore()
	a, _, ts := node(t, s, time.Hour)
	s.fail(errors.New("store slow"))
	c := a.Begin(calls.Record{CallID: "r1", Caller: "alice"}, "caller-tag")
	answer(c)
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(a.storeErrors.WithLabelValues("save")) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the save never failed")
		}
	}
	if _, ok := s.state("r1"); ok {
		t.Fatal("saved while the store fails")
	}
	s.fail(nil)
	wait(t, a) // until the retry landed
	if _, ok := s.state("r1"); !ok {
		t.Fatal("the failed save was not tried again once the store answered")
	}

	s.fail(errors.New("store slow"))
	c2 := a.Begin(calls.Record{CallID: "r2", Caller: "alice"}, "caller-tag")
	answer(c2)
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(a.storeErrors.WithLabelValues("save")) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second call's save never failed")
		}
	}
	c2.Bye("caller-tag") // its retry stopped: nothing left for Wait
	s.fail(nil)
	c.Bye("caller-tag")
	wait(t, a)
	if ts.Pending() != 0 {
		t.Fatalf("%d timers pending after both calls ended, want 0: a retry left armed", ts.Pending())
	}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {5, 16 * time.Second}, {6, 30 * time.Second}, {60, 30 * time.Second}} {
		if got := saveBackoff(tc.n); got != tc.want {
			t.Errorf("saveBackoff(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

// Answered returns once the call's first save landed: the 2xx goes up
// after it, so a node that dies once the caller has its 2xx leaves a
// call the store has. A store slower than saveWait holds the answer up
// for saveWait at most, and one whose saves fail not at all.
func TestAnsweredWaitsForTheFirstSave(t *testing.T) {
	s := newMemStore()
	a, _, _ := node(t, s, time.Hour)
	s.slow(50 * time.Millisecond)
	c := a.Begin(calls.Record{CallID: "w1", Caller: "alice"}, "caller-tag")
	start := time.Now()
	answer(c)
	if _, ok := s.state("w1"); !ok {
		t.Fatalf("Answered returned after %v, before the call was saved", time.Since(start))
	}

	s.slow(2 * saveWait)
	c2 := a.Begin(calls.Record{CallID: "w2", Caller: "alice"}, "caller-tag")
	start = time.Now()
	answer(c2)
	if took := time.Since(start); took < saveWait || took > saveWait+100*time.Millisecond {
		t.Fatalf("Answered with a slow store took %v, want about saveWait (%v)", took, saveWait)
	}
	wait(t, a)

	s.slow(0)
	s.fail(errors.New("store down"))
	c3 := a.Begin(calls.Record{CallID: "w3", Caller: "alice"}, "caller-tag")
	answer(c3) // tried: fails, noted
	s.slow(2 * saveWait)
	c4 := a.Begin(calls.Record{CallID: "w4", Caller: "alice"}, "caller-tag")
	start = time.Now()
	answer(c4)
	if took := time.Since(start); took > saveWait/2 {
		t.Fatalf("Answered while saves fail took %v, want no wait", took)
	}
	s.fail(nil)
	s.slow(0)
	for _, c := range []*Call{c, c2, c3, c4} {
		c.Bye("caller-tag")
	}
	wait(t, a)
}

// gatedStore is a memStore whose saves each wait for a token on open
// (or their context); entered says a save has begun.
type gatedStore struct {
	*memStore
	entered chan string
	open    chan struct{}
}

func (g gatedStore) Save(ctx context.Context, st State, ttl time.Duration) error {
	g.entered <- st.Callee.Target
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.memStore.Save(ctx, st, ttl)
}

// A later change of an answered call (a target refresh here) is saved
// before the response that confirms it goes on, as the first save is:
// AwaitSaved returns only once the store has the new Contact. A save
// slower than saveWait holds it up for saveWait at most, and while saves
// fail it does not wait at all.
func TestLaterSavesAwaitedLikeTheFirst(t *testing.T) {
	s := gatedStore{memStore: newMemStore(), entered: make(chan string, 8), open: make(chan struct{}, 8)}
	a, _, _ := node(t, s, time.Hour)
	c := a.Begin(calls.Record{CallID: "l1", Caller: "alice"}, "caller-tag")
	s.open <- struct{}{}
	answer(c)
	<-s.entered

	// Nothing changed since: no wait.
	start := time.Now()
	c.AwaitSaved()
	if took := time.Since(start); took > saveWait/2 {
		t.Fatalf("AwaitSaved with nothing to save took %v", took)
	}

	const moved = "sip:bob@10.0.0.10:5062"
	c.Moved("callee-tag", moved, "198.51.100.8:5060", "UDP")
	if got := <-s.entered; got != moved {
		t.Fatalf("save of the target refresh has %q", got)
	}
	done := make(chan string)
	go func() {
		c.AwaitSaved()
		st, _ := s.state("l1")
		done <- st.Callee.Target
	}()
	s.open <- struct{}{} // the save lands
	if got := <-done; got != moved {
		t.Fatalf("AwaitSaved returned with the store holding Contact %q, want %q", got, moved)
	}

	// A save that does not land: held up for saveWait, no more.
	c.Moved("callee-tag", "sip:bob@10.0.0.11:5062", "198.51.100.9:5060", "UDP")
	<-s.entered
	start = time.Now()
	c.AwaitSaved()
	if took := time.Since(start); took < saveWait || took > saveWait+150*time.Millisecond {
		t.Fatalf("AwaitSaved with a stuck store took %v, want about saveWait (%v)", took, saveWait)
	}
	s.open <- struct{}{}
	wait(t, a)

	// Saves failing: the next change is not waited for.
	s.fail(errors.New("store down"))
	c.Moved("callee-tag", "sip:bob@10.0.0.12:5062", "198.51.100.10:5060", "UDP")
	<-s.entered
	s.open <- struct{}{} // tried: fails, noted
	for !a.saveFailing.Load() {
		runtime.Gosched()
	}
	c.Moved("callee-tag", "sip:bob@10.0.0.13:5062", "198.51.100.11:5060", "UDP")
	start = time.Now()
	c.AwaitSaved()
	if took := time.Since(start); took > saveWait/2 {
		t.Fatalf("AwaitSaved while saves fail took %v, want no wait", took)
	}
	s.fail(nil)
	c.Bye("caller-tag")
	close(s.open) // the retry, whenever it comes, lands
	wait(t, a)
}

// The answer a delayed offer gets in the ACK is saved before the ACK
// goes on (AnswerInAck returns): a node that dies then leaves the next
// one the answered offer, not one still waiting for its ACK.
func TestAnswerInAckAwaitsItsSave(t *testing.T) {
	s := gatedStore{memStore: newMemStore(), entered: make(chan string, 8), open: make(chan struct{}, 8)}
	a, _, _ := node(t, s, time.Hour)
	c := a.Begin(calls.Record{CallID: "l2", Caller: "alice"}, "caller-tag")
	if _, err := c.OfferIn2xx("callee-tag", "caller-tag", 1, false, func() (netip.AddrPort, []byte, error) {
		return netip.MustParseAddrPort("127.0.0.1:22222"), []byte("offer-for-caller"), nil
	}); err != nil {
		t.Fatal(err)
	}
	s.open <- struct{}{}
	answer(c)
	<-s.entered
	acked := make(chan bool)
	go func() {
		if _, ok, err := c.AnswerInAck("caller-tag", 1, func() ([]byte, error) { return []byte("answer-for-callee"), nil }); !ok || err != nil {
			t.Errorf("AnswerInAck: %v %v", ok, err)
		}
		st, _ := s.state("l2")
		acked <- st.Late != nil && st.Late.Acked
	}()
	<-s.entered // the ACK's save, held
	s.open <- struct{}{}
	if !<-acked {
		t.Fatal("AnswerInAck returned before the store had the ACK's answer")
	}
	c.Bye("caller-tag")
	close(s.open)
	wait(t, a)
}
