package redisdialogs

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/nodes"
	"github.com/sori-voice/sori/sip/nodes/redisnodes"
)

// sides counts what a node does to its calls' phones and anchors: BYEs
// sent and media deleted.
type sides struct{ byes, deletes atomic.Int64 }

func (s *sides) Bye(context.Context, string, call.Side, call.Side) error {
	s.byes.Add(1)
	return nil
}

func (s *sides) Delete(context.Context, netip.AddrPort, string) map[string]calls.MediaQuality {
	s.deletes.Add(1)
	return nil
}

// node is one sori node as cmd/sori builds it, for its calls: heartbeats
// (nodes.Set, its Lease), the dialog store and the call table fenced by
// that lease, on a Redis reached at url.
type node struct {
	id    string
	set   *nodes.Set
	store *Store
	table *call.Table
	recs  *recorder
	sides *sides
}

// fenceGone is the GoneAfter of these tests: the lease lapses after 2 s
// (GoneAfter less a BeatTTL), the others adopt after 5 s.
const fenceGone = 5 * time.Second

func startNode(t *testing.T, ctx context.Context, url, id string, self netip.AddrPort, peers []nodes.Address) *node {
	t.Helper()
	rs, err := redisstore.Open(url, redisstore.Options{Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("node", id)
	}
	n := &node{id: id, recs: &recorder{}, sides: &sides{}}
	n.set = nodes.New(nodes.Config{ID: id, Self: nodes.Address{Transport: "TCP", Addr: self}, Peers: peers,
		Secret: []byte("fence-test-secret-0123456789"), Beats: redisnodes.New(rs.Client(), ""), GoneAfter: fenceGone, Log: log})
	if err := n.set.Join(ctx); err != nil {
		t.Fatal(err)
	}
	n.store = New(rs.Client(), "", id)
	n.table = call.New(call.Config{Records: n.recs, Store: n.store, Fence: n.set.Lease(), Hangup: n.sides, Media: n.sides,
		DialogTimeout: time.Hour, Log: log.With("component", "calls")})
	go n.set.Run(ctx)
	go n.table.RunFence(ctx, 2*time.Second)
	return n
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// hold has n hold an answered call saved in Redis, expiring at expiry.
func (n *node) hold(t *testing.T, ctx context.Context, callID string, expiry time.Time) *call.Call {
	t.Helper()
	st := answered(callID, expiry)
	st.Trunk = ""
	if err := n.store.Save(ctx, st, time.Until(expiry)+time.Minute); err != nil {
		t.Fatal(err)
	}
	c := n.table.Load(ctx, st)
	if c == nil {
		t.Fatalf("%s: call %s not loaded", n.id, callID)
	}
	return c
}

// adoptLoop is what cmd/sori's adoptGone does on n, faster: the calls
// of the nodes gone for good are adopted.
func (n *node) adoptLoop(ctx context.Context) {
	tk := time.NewTicker(200 * time.Millisecond)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		ids, _ := n.set.Gone(ctx)
		for _, id := range ids {
			_, _ = n.table.Adopt(ctx, id)
		}
	}
}

func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// savedBy is the node whose state of callID Redis holds ("" when none).
func savedBy(t *testing.T, ctx context.Context, s *Store, callID string) string {
	t.Helper()
	blob, err := s.rdb.Get(ctx, s.StateKey(callID)).Bytes()
	if err != nil {
		return ""
	}
	var sv saved
	if err := json.Unmarshal(blob, &sv); err != nil {
		t.Fatal(err)
	}
	return sv.Node
}

func fenceNodes(t *testing.T) (context.Context, *redistest.Cutter, *node, *node) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	cut := redistest.NewCutter(t, srv.Addr)
	aAddr, bAddr := netip.MustParseAddrPort("127.0.0.71:5060"), netip.MustParseAddrPort("127.0.0.72:5060")
	peers := []nodes.Address{{Transport: "TCP", Addr: aAddr}, {Transport: "TCP", Addr: bAddr}}
	a := startNode(t, ctx, cut.URL(), "a", aAddr, peers)
	b := startNode(t, ctx, srv.URL(), "b", bAddr, peers)
	t.Cleanup(cancel) // before the clients close (cleanups run last first)
	go b.adoptLoop(ctx)
	return ctx, cut, a, b
}

// TestFenceAdopted: node a, cut off from Redis while still up, steps back
// from its calls before node b adopts them; a timer of a's that comes due
// meanwhile does nothing; when a reaches Redis again it drops the calls b
// holds without a BYE, a media delete or a record, and b ends each, one
// record each.
func TestFenceAdopted(t *testing.T) {
	ctx, cut, a, b := fenceNodes(t)
	now := time.Now()
	a.hold(t, ctx, "long@a", now.Add(time.Hour))
	a.hold(t, ctx, "short@a", now.Add(3*time.Second)) // due while a is fenced
	if !a.set.Lease().Owner() || a.table.Fenced("long@a", false) {
		t.Fatal("a not the owner of its calls at start")
	}

	cut.Cut()
	waitFor(t, "a fenced", 4*time.Second, func() bool { return a.set.Lease().Standing() == nodes.Fenced })
	if since := a.set.Lease().Since(); since > fenceGone-time.Second {
		t.Fatalf("a fenced %v after its last heartbeat: too late, b may adopt after %v", since, fenceGone)
	}
	if !a.table.Fenced("long@a", false) || !a.table.Fenced("unknown@a", false) {
		t.Fatal("a's calls not fenced: its proxy would act on them")
	}
	if b.table.Len() != 0 {
		t.Fatal("b adopted a's calls before a stepped back")
	}

	// b adopts both; the short one is past its expiry: b ends it at once.
	waitFor(t, "b adopts a's calls", 10*time.Second, func() bool { return b.recs.n() == 1 && b.table.Len() == 1 })
	if got := savedBy(t, ctx, b.store, "long@a"); got != "b" {
		t.Fatalf("long@a saved by %q, want b", got)
	}
	time.Sleep(1500 * time.Millisecond) // a's short call past due, its retry too
	if a.recs.n() != 0 || a.sides.byes.Load() != 0 || a.sides.deletes.Load() != 0 {
		t.Fatalf("a acted while fenced: %d records, %d BYEs, %d deletes", a.recs.n(), a.sides.byes.Load(), a.sides.deletes.Load())
	}
	if a.table.Len() != 2 {
		t.Fatalf("a holds %d calls while fenced, want its 2 (left alone)", a.table.Len())
	}

	cut.Mend()
	waitFor(t, "a back, its calls checked", 10*time.Second, func() bool { return a.set.Lease().Owner() })
	if a.table.Len() != 0 {
		t.Fatalf("a still holds %d calls that b took", a.table.Len())
	}
	if got := savedBy(t, ctx, b.store, "long@a"); got != "b" {
		t.Fatalf("long@a saved by %q after a came back, want b still", got)
	}
	// b ends the long call (its caller hangs up on b).
	c := b.table.Find("long@a")
	if c == nil {
		t.Fatal("b does not hold long@a")
	}
	c.Bye("a")
	waitFor(t, "b's record of long@a", 5*time.Second, func() bool { return b.recs.n() == 2 })
	time.Sleep(1500 * time.Millisecond) // anything a would still do
	if err := a.table.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if a.recs.n() != 0 || a.sides.byes.Load() != 0 || a.sides.deletes.Load() != 0 {
		t.Fatalf("a acted on calls b took: %d records, %d BYEs, %d deletes", a.recs.n(), a.sides.byes.Load(), a.sides.deletes.Load())
	}
	b.recs.mu.Lock()
	seen := map[string]int{}
	for _, r := range b.recs.recs {
		seen[r.CallID]++
	}
	b.recs.mu.Unlock()
	if seen["long@a"] != 1 || seen["short@a"] != 1 {
		t.Fatalf("b's records %v, want one of each call", seen)
	}
}

// TestFenceResumed: cut off for less than GoneAfter, a steps back all
// the same; nobody adopts its calls, and when it is back it resumes
// them: the expiry that came due meanwhile ends its call then (one
// record, a's), the other call is a's to end.
func TestFenceResumed(t *testing.T) {
	ctx, cut, a, b := fenceNodes(t)
	now := time.Now()
	a.hold(t, ctx, "long@a", now.Add(time.Hour))
	a.hold(t, ctx, "short@a", now.Add(2500*time.Millisecond)) // due while a is fenced

	cut.Cut()
	waitFor(t, "a fenced", 4*time.Second, func() bool { return a.set.Lease().Standing() == nodes.Fenced })
	waitFor(t, "short@a due", 3*time.Second, func() bool { return time.Now().After(now.Add(2700 * time.Millisecond)) })
	if a.recs.n() != 0 || a.sides.byes.Load() != 0 {
		t.Fatal("a ended a call while fenced")
	}
	cut.Mend()
	waitFor(t, "a back, its calls checked", 10*time.Second, func() bool { return a.set.Lease().Owner() })
	waitFor(t, "a ends short@a", 5*time.Second, func() bool { return a.recs.n() == 1 })
	if got := a.sides.byes.Load(); got != 2 {
		t.Fatalf("a sent %d BYEs for its expired call, want 2", got)
	}
	c := a.table.Find("long@a")
	if c == nil {
		t.Fatal("a dropped its own call")
	}
	if got := savedBy(t, ctx, a.store, "long@a"); got != "a" {
		t.Fatalf("long@a saved by %q, want a", got)
	}
	c.Bye("a")
	waitFor(t, "a's record of long@a", 5*time.Second, func() bool { return a.recs.n() == 2 })
	time.Sleep(time.Second)
	if b.recs.n() != 0 || b.table.Len() != 0 {
		t.Fatalf("b adopted calls of a node that was never gone: %d records, %d calls", b.recs.n(), b.table.Len())
	}
}
