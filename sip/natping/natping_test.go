package natping

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/registrar/store"
)

type fakes struct {
	mu      sync.Mutex
	answer  bool
	pings   int
	removed []store.Update
}

func (f *fakes) PingContact(context.Context, string, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pings++
	if f.answer {
		return nil
	}
	return errors.New("timeout")
}

func (f *fakes) Update(_ context.Context, u store.Update) ([]store.Binding, error) {
	f.mu.Lock()
	f.removed = append(f.removed, u)
	f.mu.Unlock()
	return nil, nil
}

func TestTrackOnlyNATUDPWithoutOutbound(t *testing.T) {
	k := New(Config{Interval: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	exp := time.Now().Add(time.Hour)
	k.Track("bob@sori.test", []store.Binding{
		{ID: "a", NAT: true, Transport: "udp", Expires: exp},
		{ID: "b", NAT: true, Transport: "tcp", Expires: exp},                               // its connection keeps it
		{ID: "c", NAT: true, Transport: "udp", RegID: 1, Expires: exp},                     // SIP Outbound: the phone pings
		{ID: "d", NAT: false, Transport: "udp", Expires: exp},                              // reachable as it says
		{ID: "e", NAT: true, Transport: "udp", Path: []string{"<sip:edge>"}, Expires: exp}, // its edge proxy's job
	})
	if k.Len() != 1 {
		t.Fatalf("%d tracked, want 1", k.Len())
	}
	k.Track("bob@sori.test", nil) // unregistered
	if k.Len() != 0 {
		t.Fatal("a removed binding is still pinged")
	}
}

// Unanswered max_misses times in a row: removed from the store, with the
// binding's own Call-ID and CSeq (a newer REGISTER wins); answered: kept.
func TestMissesDropTheBinding(t *testing.T) {
	f := &fakes{answer: true}
	k := New(Config{Interval: 10 * time.Millisecond, MaxMisses: 2, Pinger: f, Store: f, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	b := store.Binding{ID: "a", Contact: "sip:bob@192.168.1.20", NAT: true, Transport: "udp", Source: "203.0.113.5:40000",
		CallID: "reg-1", CSeq: 7, Expires: time.Now().Add(time.Hour)}
	k.Track("bob@sori.test", []store.Binding{b})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go k.Run(ctx)
	waitFor(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.pings >= 3 })
	if k.Len() != 1 {
		t.Fatal("an answering phone was dropped")
	}
	f.mu.Lock()
	f.answer = false
	f.mu.Unlock()
	waitFor(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.removed) == 1 })
	u := f.removed[0]
	if k.Len() != 0 || u.AOR != "bob@sori.test" || u.CallID != "reg-1" || u.CSeq != 7 || len(u.Contacts) != 1 || u.Contacts[0].ID != "a" || u.Contacts[0].Expires.After(u.Now) {
		t.Fatalf("removal %+v", u)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type crlf struct {
	mu    sync.Mutex
	dests []string
}

func (c *crlf) Keepalive(_ context.Context, dest string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dests = append(c.dests, dest)
	return nil
}

// The CRLF method: a keepalive to the REGISTER's source every interval,
// never an OPTIONS, and, as nothing answers a CRLF, nothing is dropped.
func TestCRLFKeepsAndNeverDrops(t *testing.T) {
	f := &fakes{} // would miss every OPTIONS
	c := &crlf{}
	k := New(Config{Interval: 10 * time.Millisecond, MaxMisses: 1, Pinger: f, CRLF: c, Store: f, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	k.Track("bob@sori.test", []store.Binding{{ID: "a", Contact: "sip:bob@192.168.1.20", NAT: true, Transport: "udp",
		Source: "203.0.113.5:40000", Expires: time.Now().Add(time.Hour)}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go k.Run(ctx)
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.dests) >= 5 })
	f.mu.Lock()
	defer f.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.pings != 0 || len(f.removed) != 0 || k.Len() != 1 || c.dests[0] != "203.0.113.5:40000" {
		t.Fatalf("options %d, removed %v, tracked %d, keepalives to %v", f.pings, f.removed, k.Len(), c.dests)
	}
}
