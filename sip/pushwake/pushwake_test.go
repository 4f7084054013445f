package pushwake

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/push"
)

type provider struct {
	mu    sync.Mutex
	sent  []push.Notification
	err   error
	calls chan push.Notification
}

func (p *provider) Name() string { return "apns" }
func (p *provider) Push(_ context.Context, n push.Notification) error {
	p.mu.Lock()
	p.sent = append(p.sent, n)
	err := p.err
	p.mu.Unlock()
	if p.calls != nil {
		p.calls <- n
	}
	return err
}

type remover struct {
	mu      sync.Mutex
	updates []store.Update
}

func (r *remover) Update(_ context.Context, u store.Update) ([]store.Binding, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates = append(r.updates, u)
	return nil, nil
}

func newWaker(p *provider, st *remover, wait time.Duration) *Waker {
	return New(Config{Providers: map[string]push.Provider{"apns": p}, Wait: wait, RefreshBefore: time.Minute, Store: st,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

var asleep = store.Binding{ID: "dev1", Contact: "sip:bob@10.0.0.2;transport=tcp", PushProvider: "apns", PushPRID: "tok-1",
	PushParam: "TEAM.com.example.voip", CallID: "reg-1", CSeq: 4, Updated: time.Now().Add(-time.Minute), Expires: time.Now().Add(time.Hour)}

func TestWakeDeliversTheWokenBinding(t *testing.T) {
	p := &provider{calls: make(chan push.Notification, 1)}
	k := newWaker(p, &remover{}, 5*time.Second)
	w := k.Wake("bob@sori.test", asleep, push.Notification{CallID: "c1", From: "sip:alice@sori.test", To: "sip:bob@sori.test", Method: "INVITE"})
	n := <-p.calls
	if n.Provider != "apns" || n.PRID != "tok-1" || n.Param != "TEAM.com.example.voip" || n.CallID != "c1" || n.Expires != 5*time.Second {
		t.Fatalf("notification %+v", n)
	}
	// The old binding again (a REGISTER from before the push): no wake.
	k.Track("bob@sori.test", []store.Binding{asleep})
	select {
	case b := <-w.C():
		t.Fatalf("woken by a stale binding %+v", b)
	default:
	}
	// Another user's device with the same token: not bob's.
	woken := asleep
	woken.Contact, woken.Updated = "sip:bob@10.0.0.3;transport=tcp", time.Now()
	k.Track("carol@sori.test", []store.Binding{woken})
	k.Track("bob@sori.test", []store.Binding{woken})
	b, ok := <-w.C()
	if !ok || b.Contact != woken.Contact {
		t.Fatalf("woken binding %+v %v", b, ok)
	}
	if _, open := <-w.C(); open {
		t.Fatal("the wait did not end")
	}
	if len(k.waits) != 0 {
		t.Fatalf("%d waits left", len(k.waits))
	}
}

func TestWaitEnds(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		stop bool
	}{
		{"push.wait over", nil, false},
		{"the push failed", fmt.Errorf("apns: 500: %w", context.DeadlineExceeded), false},
		{"stopped (cancelled)", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &provider{err: tc.err}
			k := newWaker(p, &remover{}, 200*time.Millisecond)
			start := time.Now()
			w := k.Wake("bob@sori.test", asleep, push.Notification{Method: "MESSAGE"})
			if tc.stop {
				w.Stop()
			}
			if _, ok := <-w.C(); ok {
				t.Fatal("a binding without a wake-up")
			}
			if took := time.Since(start); tc.err == nil && !tc.stop && took < 200*time.Millisecond {
				t.Fatalf("ended after %s, before push.wait", took)
			}
			w.Stop() // again: harmless
		})
	}
}

// APNs 410 / FCM UNREGISTERED: the binding is removed with its own
// Call-ID and CSeq (a newer REGISTER wins).
func TestUnregisteredTokenRemovesTheBinding(t *testing.T) {
	p := &provider{err: fmt.Errorf("apns 410 Unregistered: %w", push.ErrUnregistered)}
	st := &remover{}
	k := newWaker(p, st, time.Second)
	w := k.Wake("bob@sori.test", asleep, push.Notification{Method: "INVITE"})
	if _, ok := <-w.C(); ok {
		t.Fatal("woken")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.updates) != 1 || st.updates[0].AOR != "bob@sori.test" || st.updates[0].CallID != "reg-1" || st.updates[0].CSeq != 4 ||
		len(st.updates[0].Contacts) != 1 || st.updates[0].Contacts[0].ID != "dev1" || st.updates[0].Contacts[0].Expires.After(st.updates[0].Now) {
		t.Fatalf("removal %+v", st.updates)
	}
}

// A device that does not refresh itself is pushed RefreshBefore its
// binding expires, once; one with +sip.pnsreg is not.
func TestRefreshPush(t *testing.T) {
	p := &provider{calls: make(chan push.Notification, 4)}
	k := newWaker(p, &remover{}, time.Second)
	now := time.Now()
	k.now = func() time.Time { return now }
	due := asleep
	due.Expires, due.Updated = now.Add(30*time.Second), now // within RefreshBefore (1m)
	self := due
	self.ID, self.PushPRID, self.PushSelfRefresh = "dev2", "tok-2", true
	k.Track("bob@sori.test", []store.Binding{due, self})
	k.refreshDue(context.Background())
	n := <-p.calls
	if n.Method != "REGISTER" || n.PRID != "tok-1" {
		t.Fatalf("refresh push %+v", n)
	}
	for busy := true; busy; { // the push's outcome recorded
		k.mu.Lock()
		busy = k.refreshOf(key{"bob@sori.test", "dev1"}).busy
		k.mu.Unlock()
	}
	k.refreshDue(context.Background())
	select {
	case n := <-p.calls:
		t.Fatalf("a second refresh push %+v", n)
	case <-time.After(100 * time.Millisecond):
	}
}
