// Package pushwake wakes phones whose app is asleep (RFC 8599). A request
// for a user with push bindings makes the proxy ask Wake: a push goes to
// the device through its provider (sip/push: APNs, FCM, a webhook), and
// the returned Wait yields the device's binding once the woken app has
// registered again (the same pn-prid, or the same +sip.instance), on this
// node or, through a Bus, on any other. The registrar tells the Waker of
// every accepted REGISTER (Track).
//
// It also keeps bindings alive by push: a device that does not refresh
// its binding itself (no +sip.pnsreg) gets a push RefreshBefore its
// binding expires, so it registers again. A provider that answers that a
// device token is no longer valid (APNs 410, FCM UNREGISTERED) has its
// binding removed.
package pushwake

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/sip/push"
)

// Remover removes a binding (the registrar's store).
type Remover interface {
	Update(ctx context.Context, u store.Update) ([]store.Binding, error)
}

// Bus carries accepted registrations of push devices between nodes, so a
// request held on one node learns of the app registering on another.
type Bus interface {
	Publish(ctx context.Context, aor string, bindings []store.Binding) error
	// Subscribe calls deliver for every registration published, by any
	// node (this one included), until ctx ends.
	Subscribe(ctx context.Context, deliver func(aor string, bindings []store.Binding)) error
}

// Config configures a Waker.
type Config struct {
	Providers map[string]push.Provider // by pn-provider value, lower case
	// Wait is how long a request is held for a device to wake (push.wait).
	Wait time.Duration
	// RefreshBefore: a device that does not refresh itself is pushed this
	// long before its binding expires; 0: never.
	RefreshBefore time.Duration
	Store         Remover
	Bus           Bus // nil: this node only
	Log           *slog.Logger
	Registerer    prometheus.Registerer // nil: no metrics
}

// Waker sends pushes and matches woken devices to the requests held for them.
type Waker struct {
	cfg Config
	now func() time.Time

	mu      sync.Mutex
	waits   map[string][]*Wait             // by AOR
	refresh map[string]map[string]*refresh // devices kept alive by push, by AOR and binding ID

	sent     *prometheus.CounterVec
	wake     prometheus.Histogram
	answered prometheus.Counter
}

type key struct{ aor, id string }

type refresh struct {
	b    store.Binding
	due  time.Time
	busy bool
}

// New returns a Waker; Run sends the refresh pushes and follows the Bus.
func New(c Config) *Waker {
	if c.Wait <= 0 {
		c.Wait = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	k := &Waker{cfg: c, now: time.Now, waits: map[string][]*Wait{}, refresh: map[string]map[string]*refresh{},
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_push_notifications_total",
			Help: "Push notifications to sleeping apps by provider, purpose (call, message, refresh) and result (sent, failed, unregistered).",
		}, []string{"provider", "purpose", "result"}),
		wake: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sori_push_wake_seconds",
			Help:    "From a push for a held request to the woken app's REGISTER.",
			Buckets: []float64{0.25, 0.5, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 20, 30},
		}),
		answered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_push_calls_answered_total",
			Help: "Calls answered by an app woken by a push.",
		}),
	}
	if c.Registerer != nil {
		c.Registerer.MustRegister(k.sent, k.wake, k.answered)
	}
	return k
}

// Wanted reports whether b is woken by push with one of the providers.
func (k *Waker) Wanted(b store.Binding) bool {
	_, ok := k.cfg.Providers[b.PushProvider]
	return ok && b.PushPRID != ""
}

// Wait is one request held for a device to wake.
type Wait struct {
	aor, prid, instance string
	sent                time.Time
	c                   chan store.Binding
	once                sync.Once
	k                   *Waker
	timer               *time.Timer // set under the Waker's mu
}

// C yields the device's new binding, or is closed without one when the
// wait ends otherwise (push.wait over, the push failed, Stop).
func (w *Wait) C() <-chan store.Binding { return w.c }

// Sent is when the push was asked for.
func (w *Wait) Sent() time.Time { return w.sent }

// Stop ends the wait (the request was cancelled or answered elsewhere).
func (w *Wait) Stop() { w.k.end(w, nil) }

// Wake pushes the device of b, a binding of aor, about a request
// (n: its Call-ID, From, To, method) and holds a Wait for it.
func (k *Waker) Wake(aor string, b store.Binding, n push.Notification) *Wait {
	w := &Wait{aor: aor, prid: b.PushPRID, instance: b.Instance, sent: k.now(), c: make(chan store.Binding, 1), k: k}
	k.mu.Lock()
	k.waits[aor] = append(k.waits[aor], w)
	w.timer = time.AfterFunc(k.cfg.Wait, func() { k.end(w, nil) })
	k.mu.Unlock()
	n.Provider, n.PRID, n.Param, n.Expires = b.PushProvider, b.PushPRID, b.PushParam, k.cfg.Wait
	purpose := "call"
	if !strings.EqualFold(n.Method, "INVITE") {
		purpose = "message"
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), k.cfg.Wait)
		defer cancel()
		if err := k.push(ctx, aor, b, n, purpose); err != nil {
			k.end(w, nil) // nothing will wake it
		}
	}()
	return w
}

// Answered counts a call answered by a woken app.
func (k *Waker) Answered() { k.answered.Inc() }

func (k *Waker) push(ctx context.Context, aor string, b store.Binding, n push.Notification, purpose string) error {
	p := k.cfg.Providers[b.PushProvider]
	if p == nil {
		return errors.New("no provider " + b.PushProvider)
	}
	err := p.Push(ctx, n)
	switch {
	case err == nil:
		k.sent.WithLabelValues(b.PushProvider, purpose, "sent").Inc()
	case errors.Is(err, push.ErrUnregistered):
		k.sent.WithLabelValues(b.PushProvider, purpose, "unregistered").Inc()
		k.cfg.Log.Info("push: device token no longer valid, binding removed", "aor", aor, "provider", b.PushProvider, "error", err)
		k.remove(ctx, aor, b)
	default:
		k.sent.WithLabelValues(b.PushProvider, purpose, "failed").Inc()
		k.cfg.Log.Warn("push not sent", "aor", aor, "provider", b.PushProvider, "purpose", purpose, "error", err)
	}
	return err
}

// remove drops a binding whose device is gone, unless the phone has
// registered again meanwhile (its Call-ID and CSeq: a newer REGISTER wins).
func (k *Waker) remove(ctx context.Context, aor string, b store.Binding) {
	if k.cfg.Store == nil {
		return
	}
	now := k.now()
	_, err := k.cfg.Store.Update(context.WithoutCancel(ctx), store.Update{AOR: aor, CallID: b.CallID, CSeq: b.CSeq, Now: now,
		Contacts: []store.Binding{{ID: b.ID, Contact: b.Contact, Expires: now}}})
	if err != nil {
		k.cfg.Log.Info("push: binding not removed", "aor", aor, "error", err)
	}
	k.mu.Lock()
	k.dropRefresh(key{aor, b.ID})
	k.mu.Unlock()
}

// end finishes w with its device's new binding, or without one.
func (k *Waker) end(w *Wait, b *store.Binding) {
	w.once.Do(func() {
		k.mu.Lock()
		if w.timer != nil {
			w.timer.Stop()
		}
		ws := k.waits[w.aor]
		for i, x := range ws {
			if x == w {
				ws = append(ws[:i:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(k.waits, w.aor)
		} else {
			k.waits[w.aor] = ws
		}
		k.mu.Unlock()
		if b != nil {
			k.wake.Observe(k.now().Sub(w.sent).Seconds())
			w.c <- *b
		}
		close(w.c)
	})
}

// Track is told the bindings of aor after every accepted REGISTER on
// this node (registrar.Observer): held requests learn of woken devices,
// and devices kept alive by push are (re)scheduled. With a Bus, other
// nodes hear of it too.
func (k *Waker) Track(aor string, bindings []store.Binding) {
	k.deliver(aor, bindings)
	k.schedule(aor, bindings)
	if k.cfg.Bus == nil {
		return
	}
	for _, b := range bindings {
		if b.PushProvider != "" || b.Instance != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := k.cfg.Bus.Publish(ctx, aor, bindings); err != nil {
				k.cfg.Log.Warn("push: registration not published to the other nodes", "aor", aor, "error", err)
			}
			cancel()
			return
		}
	}
}

// deliver hands each held request for aor its device's binding, if the
// device registered after the push was sent.
func (k *Waker) deliver(aor string, bindings []store.Binding) {
	k.mu.Lock()
	ws := append([]*Wait(nil), k.waits[aor]...)
	k.mu.Unlock()
	for _, w := range ws {
		for _, b := range bindings {
			same := w.prid != "" && b.PushPRID == w.prid || w.instance != "" && b.Instance == w.instance
			if same && !b.Updated.Before(w.sent.Truncate(time.Millisecond)) && b.Expires.After(k.now()) {
				k.end(w, &b)
				break
			}
		}
	}
}

// schedule keeps aor's push devices that do not refresh themselves.
func (k *Waker) schedule(aor string, bindings []store.Binding) {
	if k.cfg.RefreshBefore <= 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	old := k.refresh[aor]
	var cur map[string]*refresh // allocated for the first binding kept: most REGISTERs have none
	for _, b := range bindings {
		if !k.Wanted(b) || b.PushSelfRefresh {
			continue
		}
		if cur == nil {
			cur = map[string]*refresh{}
		}
		if r := old[b.ID]; r != nil && r.b.Updated.Equal(b.Updated) {
			cur[b.ID] = r
			continue
		}
		cur[b.ID] = &refresh{b: b, due: b.Expires.Add(-k.cfg.RefreshBefore)}
	}
	if len(cur) == 0 {
		delete(k.refresh, aor)
	} else {
		k.refresh[aor] = cur
	}
}

func (k *Waker) refreshOf(kk key) *refresh { return k.refresh[kk.aor][kk.id] }

func (k *Waker) dropRefresh(kk key) {
	if ids := k.refresh[kk.aor]; ids != nil {
		delete(ids, kk.id)
		if len(ids) == 0 {
			delete(k.refresh, kk.aor)
		}
	}
}

// Run sends refresh pushes when due and follows the Bus, until ctx ends.
func (k *Waker) Run(ctx context.Context) {
	if k.cfg.Bus != nil {
		go func() {
			for ctx.Err() == nil {
				if err := k.cfg.Bus.Subscribe(ctx, k.deliver); err != nil && ctx.Err() == nil {
					k.cfg.Log.Warn("push: registrations from other nodes not followed; retrying", "error", err)
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
			}
		}()
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.refreshDue(ctx)
		}
	}
}

func (k *Waker) refreshDue(ctx context.Context) {
	now := k.now()
	k.mu.Lock()
	var due []key
	var expired []key
	for aor, ids := range k.refresh {
		for id, r := range ids {
			switch {
			case !r.b.Expires.After(now):
				expired = append(expired, key{aor, id}) // expired: the device did not come back
			case !r.busy && !r.due.After(now):
				r.busy = true
				due = append(due, key{aor, id})
			}
		}
	}
	for _, kk := range expired {
		k.dropRefresh(kk)
	}
	k.mu.Unlock()
	for _, kk := range due {
		go func() {
			k.mu.Lock()
			r := k.refreshOf(kk)
			k.mu.Unlock()
			if r == nil {
				return
			}
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			b := r.b
			err := k.push(pctx, kk.aor, b, push.Notification{Provider: b.PushProvider, PRID: b.PushPRID, Param: b.PushParam,
				Method: "REGISTER", To: "sip:" + kk.aor}, "refresh")
			k.mu.Lock()
			if r := k.refreshOf(kk); r != nil && r.b.Updated.Equal(b.Updated) {
				r.busy = false
				if err == nil {
					r.due = r.b.Expires // once per binding: the next REGISTER reschedules it
				} else {
					r.due = now.Add(5 * time.Second)
				}
			}
			k.mu.Unlock()
		}()
	}
}
