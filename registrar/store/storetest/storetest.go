// Package storetest is the contract every store.Store must pass. A store's
// own test calls Run with a function that opens two handles on one fresh,
// empty data set (two "nodes" sharing state).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/registrar/store"
)

// Open returns two handles sharing one empty data set; both are closed by the test.
type Open func(t *testing.T) (a, b store.Store)

// Run runs the whole contract.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(t *testing.T, a, b store.Store)
	}{
		{"round trip keeps every field", roundTrip},
		{"several contacts per AOR", severalContacts},
		{"refresh replaces", refresh},
		{"the node holding a flow moves with its binding", holderMoves},
		{"call-id and cseq rule", callIDCSeq},
		{"remove one and remove all", remove},
		{"expired bindings are not returned", expiry},
		{"max contacts", maxContacts},
		{"a contact named twice in one request", namedTwice},
		{"q order", qOrder},
		{"concurrent updates from two nodes lose nothing", concurrent},
		{"count", count},
		{"subscribers", subscribers},
		{"cancelled context", cancelled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := open(t)
			tt.fn(t, a, b)
		})
	}
}

var ctx = context.Background()

// now is truncated to milliseconds: stores keep expiry at that resolution.
func now() time.Time { return time.Now().Truncate(time.Millisecond) }

func binding(id string, n time.Time, ttl time.Duration) store.Binding {
	return store.Binding{
		ID: id, Contact: "sip:" + id + "@192.0.2.10:5060", Q: -1, Expires: n.Add(ttl),
		Source: "198.51.100.7:40112", Transport: "udp", Updated: n,
	}
}

func update(aor, callID string, cseq uint32, n time.Time, bs ...store.Binding) store.Update {
	return store.Update{AOR: aor, CallID: callID, CSeq: cseq, Now: n, Contacts: bs}
}

func ids(bs []store.Binding) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	slices.Sort(out)
	return out
}

func mustUpdate(t *testing.T, s store.Store, u store.Update) []store.Binding {
	t.Helper()
	bs, err := s.Update(ctx, u)
	if err != nil {
		t.Fatalf("update %+v: %v", u, err)
	}
	return bs
}

func mustLookup(t *testing.T, s store.Store, aor string, n time.Time) []store.Binding {
	t.Helper()
	bs, err := s.Lookup(ctx, aor, n)
	if err != nil {
		t.Fatalf("lookup %s: %v", aor, err)
	}
	return bs
}

func roundTrip(t *testing.T, a, b store.Store) {
	n := now()
	in := store.Binding{
		ID: "c1", Contact: "sip:alice@10.0.0.5:5060;transport=tcp;ob", Q: 700, Expires: n.Add(time.Hour),
		Params: "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1", CallID: "call-1@host", CSeq: 7, Source: "203.0.113.9:61000", NAT: true, Transport: "tcp",
		Path: []string{"<sip:edge1.example;lr>", "<sip:edge2.example;lr>"}, UserAgent: "baresip 3.10",
		Instance: "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>", RegID: 1, Updated: n,
		PushProvider: "apns", PushPRID: "00fc13adff78512", PushParam: "ABCD1234.com.example.voip", PushSelfRefresh: true,
		Node: "sori-b", Flow: "f1token",
	}
	got := mustUpdate(t, a, store.Update{AOR: "alice@sori.test", CallID: "call-1@host", CSeq: 7, Now: n, Contacts: []store.Binding{in}})
	if len(got) != 1 || !equal(got[0], in) {
		t.Fatalf("update returned %+v, want %+v", got, in)
	}
	got = mustLookup(t, b, "alice@sori.test", n)
	if len(got) != 1 || !equal(got[0], in) {
		t.Fatalf("other node sees %+v, want %+v", got, in)
	}
	if other := mustLookup(t, a, "bob@sori.test", n); len(other) != 0 {
		t.Fatalf("bob has %+v", other)
	}
}

func equal(x, y store.Binding) bool {
	return x.ID == y.ID && x.Contact == y.Contact && x.Params == y.Params && x.Q == y.Q && x.Expires.Equal(y.Expires) &&
		x.CallID == y.CallID && x.CSeq == y.CSeq && x.Source == y.Source && x.NAT == y.NAT && x.Transport == y.Transport &&
		slices.Equal(x.Path, y.Path) && x.UserAgent == y.UserAgent && x.Instance == y.Instance &&
		x.RegID == y.RegID && x.Updated.Equal(y.Updated) && x.PushProvider == y.PushProvider && x.PushPRID == y.PushPRID &&
		x.PushParam == y.PushParam && x.PushSelfRefresh == y.PushSelfRefresh && x.Node == y.Node && x.Flow == y.Flow
}

func severalContacts(t *testing.T, a, b store.Store) {
	n := now()
	mustUpdate(t, a, update("alice", "c1", 1, n, binding("desk", n, time.Hour), binding("mobile", n, time.Hour)))
	got := mustUpdate(t, b, update("alice", "c2", 1, n, binding("laptop", n, time.Hour)))
	if want := []string{"desk", "laptop", "mobile"}; !slices.Equal(ids(got), want) {
		t.Fatalf("bindings %v, want %v", ids(got), want)
	}
}

func refresh(t *testing.T, a, b store.Store) {
	n := now()
	mustUpdate(t, a, update("alice", "c1", 1, n, binding("desk", n, time.Minute)))
	later := n.Add(10 * time.Second)
	fresh := binding("desk", later, time.Hour)
	fresh.Source = "198.51.100.7:40999" // the NAT binding moved
	got := mustUpdate(t, b, update("alice", "c1", 2, later, fresh))
	if len(got) != 1 || !got[0].Expires.Equal(later.Add(time.Hour)) || got[0].Source != fresh.Source || got[0].CSeq != 2 {
		t.Fatalf("after refresh: %+v", got)
	}
}

// A phone that registers again on another node (its first node died, or
// its connection moved) is held by that node from then on; the AOR's other
// bindings keep theirs.
func holderMoves(t *testing.T, a, b store.Store) {
	n := now()
	desk, mobile := binding("desk", n, time.Hour), binding("mobile", n, time.Hour)
	desk.Node, desk.Flow = "node-a", "f1desk-on-a"
	mobile.Node, mobile.Flow = "node-a", "f1mobile-on-a"
	mustUpdate(t, a, update("bob", "c1", 1, n, desk, mobile))
	moved := binding("mobile", n.Add(time.Second), time.Hour)
	moved.Node, moved.Flow, moved.Source = "node-c", "f1mobile-on-c", "198.51.100.7:41000"
	mustUpdate(t, b, update("bob", "c1", 2, n.Add(time.Second), moved))
	for _, s := range []store.Store{a, b} {
		got := map[string]store.Binding{}
		for _, x := range mustLookup(t, s, "bob", n.Add(time.Second)) {
			got[x.ID] = x
		}
		if d, m := got["desk"], got["mobile"]; len(got) != 2 || d.Node != "node-a" || d.Flow != "f1desk-on-a" ||
			m.Node != "node-c" || m.Flow != "f1mobile-on-c" || m.Source != moved.Source {
			t.Fatalf("after the move: %+v", got)
		}
	}
}

func callIDCSeq(t *testing.T, a, b store.Store) {
	n := now()
	mustUpdate(t, a, update("alice", "c1", 5, n, binding("desk", n, time.Hour)))
	for _, cseq := range []uint32{4, 1} {
		stale := binding("desk", n, 2*time.Hour)
		if _, err := b.Update(ctx, update("alice", "c1", cseq, n, stale)); !errors.Is(err, store.ErrOutOfOrder) {
			t.Fatalf("cseq %d on same call-id: err = %v, want ErrOutOfOrder", cseq, err)
		}
	}
	// Nothing changed, and a partly valid request changes nothing either.
	if _, err := b.Update(ctx, update("alice", "c1", 3, n, binding("new", n, time.Hour), binding("desk", n, 2*time.Hour))); !errors.Is(err, store.ErrOutOfOrder) {
		t.Fatalf("mixed update: %v", err)
	}
	got := mustLookup(t, a, "alice", n)
	if len(got) != 1 || !got[0].Expires.Equal(n.Add(time.Hour)) {
		t.Fatalf("stale update changed the binding: %+v", got)
	}
	// The same CSeq again is a retransmission: applied again, same result.
	if got := mustUpdate(t, b, update("alice", "c1", 5, n, binding("desk", n, time.Hour))); len(got) != 1 || !got[0].Expires.Equal(n.Add(time.Hour)) {
		t.Fatalf("retransmission: %+v", got)
	}
	// Another Call-ID (the phone rebooted) may use any CSeq.
	got = mustUpdate(t, b, update("alice", "other", 1, n, binding("desk", n, 2*time.Hour)))
	if len(got) != 1 || got[0].CallID != "other" {
		t.Fatalf("new call-id: %+v", got)
	}
}

func remove(t *testing.T, a, b store.Store) {
	n := now()
	mustUpdate(t, a, update("alice", "c1", 1, n, binding("desk", n, time.Hour), binding("mobile", n, time.Hour)))
	gone := binding("desk", n, 0) // expires now: remove
	got := mustUpdate(t, b, update("alice", "c1", 2, n, gone))
	if !slices.Equal(ids(got), []string{"mobile"}) {
		t.Fatalf("after removing desk: %v", ids(got))
	}
	// Removing a binding that does not exist is not an error.
	mustUpdate(t, b, update("alice", "c1", 3, n, binding("nothing", n, 0)))

	// desk was removed by c1/2 and mobile written by c1/1; a remove-all with c1/0 is out of order.
	if _, err := a.Update(ctx, store.Update{AOR: "alice", CallID: "c1", CSeq: 0, Now: n, RemoveAll: true}); !errors.Is(err, store.ErrOutOfOrder) {
		t.Fatalf("remove-all with old cseq: %v", err)
	}
	got = mustUpdate(t, a, store.Update{AOR: "alice", CallID: "c9", CSeq: 1, Now: n, RemoveAll: true})
	if len(got) != 0 {
		t.Fatalf("after remove-all: %v", ids(got))
	}
	if got := mustLookup(t, b, "alice", n); len(got) != 0 {
		t.Fatalf("other node after remove-all: %v", ids(got))
	}
}

func expiry(t *testing.T, a, b store.Store) {
	n := now()
	mustUpdate(t, a, update("alice", "c1", 1, n, binding("short", n, time.Minute), binding("long", n, time.Hour)))
	got := mustLookup(t, b, "alice", n.Add(2*time.Minute))
	if !slices.Equal(ids(got), []string{"long"}) {
		t.Fatalf("two minutes later: %v", ids(got))
	}
	got = mustUpdate(t, b, update("alice", "c2", 1, n.Add(2*time.Minute), binding("new", n.Add(2*time.Minute), time.Hour)))
	if !slices.Equal(ids(got), []string{"long", "new"}) {
		t.Fatalf("update after expiry returned %v", ids(got))
	}
	if got := mustLookup(t, a, "alice", n.Add(3*time.Hour)); len(got) != 0 {
		t.Fatalf("three hours later: %v", ids(got))
	}
}

func maxContacts(t *testing.T, a, b store.Store) {
	n := now()
	u := update("alice", "c1", 1, n, binding("1", n, time.Hour), binding("2", n, time.Hour))
	u.MaxContacts = 2
	mustUpdate(t, a, u)
	u = update("alice", "c2", 1, n, binding("3", n, time.Hour))
	u.MaxContacts = 2
	if _, err := b.Update(ctx, u); !errors.Is(err, store.ErrTooManyContacts) {
		t.Fatalf("third contact: %v", err)
	}
	// Refreshing an existing contact at the limit is fine.
	u = update("alice", "c1", 2, n, binding("1", n, 2*time.Hour))
	u.MaxContacts = 2
	mustUpdate(t, b, u)
	// Replacing one contact by another in one request is fine too.
	u = update("alice", "c1", 3, n, binding("2", n, 0), binding("3", n, time.Hour))
	u.MaxContacts = 2
	if got := mustUpdate(t, a, u); !slices.Equal(ids(got), []string{"1", "3"}) {
		t.Fatalf("swap: %v", ids(got))
	}
}

// A REGISTER naming one contact twice: the last naming counts, and the
// contact counts once against the limit (store.Apply indexed past the
// live bindings here and panicked; FuzzRegister).
func namedTwice(t *testing.T, a, b store.Store) {
	n := now()
	u := update("alice", "c1", 1, n, binding("desk", n, time.Hour), binding("desk", n, 2*time.Hour))
	u.MaxContacts = 1
	got := mustUpdate(t, a, u)
	if !slices.Equal(ids(got), []string{"desk"}) || !got[0].Expires.Equal(n.Add(2*time.Hour)) {
		t.Fatalf("desk twice: %v, expires %v", ids(got), got[0].Expires)
	}
	if got := mustUpdate(t, b, update("alice", "c1", 2, n, binding("desk", n, time.Hour), binding("desk", n, 0))); len(got) != 0 {
		t.Fatalf("refreshed, then removed: %v", ids(got))
	}
	if got := mustUpdate(t, a, update("alice", "c1", 3, n, binding("desk", n, 0), binding("desk", n, time.Hour))); !slices.Equal(ids(got), []string{"desk"}) {
		t.Fatalf("removed, then named again: %v", ids(got))
	}
}

func qOrder(t *testing.T, a, b store.Store) {
	n := now()
	low, high, none := binding("low", n, time.Hour), binding("high", n, time.Hour), binding("none", n, time.Hour)
	low.Q, high.Q = 100, 900
	mustUpdate(t, a, update("alice", "c1", 1, n, low, high, none))
	got := mustLookup(t, b, "alice", n)
	if len(got) != 3 || got[0].ID != "none" || got[1].ID != "high" || got[2].ID != "low" {
		t.Fatalf("order %v (q: %d %d %d)", []string{got[0].ID, got[1].ID, got[2].ID}, got[0].Q, got[1].Q, got[2].Q)
	}
}

func concurrent(t *testing.T, a, b store.Store) {
	n := now()
	const perNode = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*perNode)
	for node, s := range []store.Store{a, b} {
		for i := range perNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("n%d-%02d", node, i)
				_, err := s.Update(ctx, update("shared", "call-"+id, 1, n, binding(id, n, time.Hour)))
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := mustLookup(t, a, "shared", n); len(got) != 2*perNode {
		t.Fatalf("%d of %d contacts survived concurrent REGISTERs", len(got), 2*perNode)
	}
}

func count(t *testing.T, a, b store.Store) {
	n := now()
	mustUpdate(t, a, update("alice", "c1", 1, n, binding("1", n, time.Hour), binding("2", n, time.Minute)))
	mustUpdate(t, b, update("bob", "c1", 1, n, binding("1", n, time.Hour)))
	for _, tc := range []struct {
		at   time.Time
		want int
	}{{n, 3}, {n.Add(2 * time.Minute), 2}} {
		got, err := a.Count(ctx, tc.at)
		if err != nil || got != tc.want {
			t.Fatalf("count at +%v = %d, %v; want %d", tc.at.Sub(n), got, err, tc.want)
		}
	}
}

func subscribers(t *testing.T, a, b store.Store) {
	if _, err := a.Subscriber(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing subscriber: %v", err)
	}
	alice := store.Subscriber{Name: "alice", Realm: "sori.test", HA1MD5: "0123456789abcdef0123456789abcdef", HA1SHA256: "ab", Numbers: []string{"+821011112222", "+821033334444"}}
	for _, s := range []store.Subscriber{alice, {Name: "bob", Realm: "sori.test", HA1MD5: "x", HA1SHA256: "y"}} {
		if err := a.PutSubscriber(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.Subscriber(ctx, "alice")
	if err != nil || !reflect.DeepEqual(got, alice) {
		t.Fatalf("subscriber = %+v, %v", got, err)
	}
	if got, err := b.SubscriberByNumber(ctx, "+821033334444"); err != nil || got.Name != "alice" {
		t.Fatalf("by number: %+v, %v", got, err)
	}
	// A number moves with its user: the one alice gives up is nobody's.
	alice.Numbers = []string{"+821011112222"}
	if err := a.PutSubscriber(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SubscriberByNumber(ctx, "+821033334444"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a number given up: %v", err)
	}
	list, err := b.ListSubscribers(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "alice" || list[1].Name != "bob" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if err := b.DeleteSubscriber(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteSubscriber(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := a.Subscriber(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted subscriber: %v", err)
	}
	if _, err := b.SubscriberByNumber(ctx, "+821011112222"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a deleted user's number: %v", err)
	}
}

func cancelled(t *testing.T, a, _ store.Store) {
	c, cancel := context.WithCancel(ctx)
	cancel()
	n := now()
	if _, err := a.Update(c, update("alice", "c1", 1, n, binding("1", n, time.Hour))); err == nil {
		t.Fatal("update with a cancelled context succeeded")
	}
	if got := mustLookup(t, a, "alice", n); len(got) != 0 {
		t.Fatalf("cancelled update stored %v", ids(got))
	}
}
