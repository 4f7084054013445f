// Package natping keeps phones behind NAT reachable over UDP when they do
// not keep their own flow alive (no SIP Outbound), as Kamailio's nathelper
// does: every interval each such binding gets an OPTIONS at the address
// its REGISTER came from, which refreshes the NAT's mapping; a binding
// whose pings go unanswered MaxMisses times in a row is removed, so calls
// stop going to a phone that is gone. With the CRLF method a double CRLF
// is sent instead: lighter, some phones reject an OPTIONS, but nothing
// answers it, so it keeps the mapping and drops nothing.
//
// The bindings pinged are the ones this node's registrar accepted (the
// NAT mapping is towards this node's socket); each is pinged until it
// expires, is replaced, or is dropped.
package natping

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/registrar/store"
)

// Pinger sends one OPTIONS to a phone's contact at dest ("ip:port", UDP)
// and returns when it is answered, or with an error (sip/uac).
type Pinger interface {
	PingContact(ctx context.Context, contact, dest string) error
}

// CRLF sends a double-CRLF keepalive to dest ("ip:port", UDP) (sip/server).
type CRLF interface {
	Keepalive(ctx context.Context, dest string) error
}

// Remover removes a binding (sip/registrar's store).
type Remover interface {
	Update(ctx context.Context, u store.Update) ([]store.Binding, error)
}

// Config configures a Keeper.
type Config struct {
	Interval   time.Duration // between pings of one binding
	MaxMisses  int           // unanswered pings in a row that drop a binding
	Pinger     Pinger
	CRLF       CRLF // non-nil: CRLF keepalives instead of OPTIONS
	Store      Remover
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
}

// Keeper pings the NAT bindings it is given.
type Keeper struct {
	cfg Config

	mu sync.Mutex
	m  map[string]map[string]*entry // by AOR, then binding ID: a REGISTER touches only its own
	n  int

	pings   *prometheus.CounterVec
	dropped prometheus.Counter
}

type key struct{ aor, id string }

type entry struct {
	b      store.Binding
	misses int
	busy   bool // a ping is out
}

// New returns a Keeper; Run pings.
func New(c Config) *Keeper {
	if c.MaxMisses <= 0 {
		c.MaxMisses = 3
	}
	k := &Keeper{cfg: c, m: map[string]map[string]*entry{},
		pings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_nat_pings_total",
			Help: "Keepalives sent to UDP phones behind NAT without SIP Outbound, by result: answered, missed (OPTIONS), sent, failed (CRLF).",
		}, []string{"result"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_nat_ping_bindings_dropped_total",
			Help: "Bindings removed because their NAT pings went unanswered max_misses times in a row.",
		}),
	}
	if c.Registerer != nil {
		c.Registerer.MustRegister(k.pings, k.dropped)
	}
	return k
}

// Wanted: a binding that needs sori's pings (UDP, behind NAT, not kept
// alive by its phone with SIP Outbound).
func Wanted(b store.Binding) bool {
	return b.NAT && b.Transport == "udp" && b.RegID == 0 && len(b.Path) == 0
}

// Track replaces what is pinged for aor with its current bindings (after
// a REGISTER): new ones are added, removed or replaced ones let go.
func (k *Keeper) Track(aor string, bindings []store.Binding) {
	k.mu.Lock()
	defer k.mu.Unlock()
	old := k.m[aor]
	var cur map[string]*entry // allocated for the first binding kept: most REGISTERs have none
	for _, b := range bindings {
		if !Wanted(b) {
			continue
		}
		if cur == nil {
			cur = map[string]*entry{}
		}
		if e := old[b.ID]; e != nil && e.b.Source == b.Source {
			e.b = b // refreshed: same flow, misses stand
			cur[b.ID] = e
			continue
		}
		cur[b.ID] = &entry{b: b}
	}
	k.n += len(cur) - len(old)
	if len(cur) == 0 {
		delete(k.m, aor)
	} else {
		k.m[aor] = cur
	}
}

// get is the entry of kk; nil when it is not pinged (any more).
func (k *Keeper) get(kk key) *entry { return k.m[kk.aor][kk.id] }

// drop stops pinging kk.
func (k *Keeper) drop(kk key) {
	if ids := k.m[kk.aor]; ids[kk.id] != nil {
		delete(ids, kk.id)
		k.n--
		if len(ids) == 0 {
			delete(k.m, kk.aor)
		}
	}
}

// Len is the number of bindings pinged.
func (k *Keeper) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.n
}

// Run pings every tracked binding each interval until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	t := time.NewTicker(k.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			k.round(ctx, now)
		}
	}
}

func (k *Keeper) round(ctx context.Context, now time.Time) {
	k.mu.Lock()
	var due []key
	var expired []key
	for aor, ids := range k.m {
		for id, e := range ids {
			kk := key{aor, id}
			switch {
			case !e.b.Expires.After(now):
				expired = append(expired, kk) // expired: the registrar no longer has it
			case !e.busy:
				e.busy = true
				due = append(due, kk)
			}
		}
	}
	for _, kk := range expired {
		k.drop(kk)
	}
	k.mu.Unlock()
	for _, kk := range due {
		go k.ping(ctx, kk)
	}
}

func (k *Keeper) ping(ctx context.Context, kk key) {
	k.mu.Lock()
	e := k.get(kk)
	if e == nil {
		k.mu.Unlock()
		return
	}
	b := e.b
	k.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, min(k.cfg.Interval, 8*time.Second))
	defer cancel()
	if k.cfg.CRLF != nil {
		err := k.cfg.CRLF.Keepalive(pctx, b.Source)
		k.mu.Lock()
		if e := k.get(kk); e != nil {
			e.busy = false
		}
		k.mu.Unlock()
		if err != nil {
			k.pings.WithLabelValues("failed").Inc()
			k.cfg.Log.Debug("NAT keepalive not sent", "aor", kk.aor, "source", b.Source, "error", err)
			return
		}
		k.pings.WithLabelValues("sent").Inc()
		return
	}
	err := k.cfg.Pinger.PingContact(pctx, b.Contact, b.Source)
	cancel()
	k.mu.Lock()
	e = k.get(kk)
	if e == nil || e.b.Source != b.Source {
		k.mu.Unlock()
		return // replaced or gone while the ping was out
	}
	e.busy = false
	if err == nil {
		e.misses = 0
		k.mu.Unlock()
		k.pings.WithLabelValues("answered").Inc()
		return
	}
	e.misses++
	drop := e.misses >= k.cfg.MaxMisses
	if drop {
		k.drop(kk)
	}
	k.mu.Unlock()
	k.pings.WithLabelValues("missed").Inc()
	if !drop || ctx.Err() != nil {
		return
	}
	// Removed only if the phone has not re-registered meanwhile: the same
	// Call-ID and CSeq as the binding, so a newer REGISTER wins.
	now := time.Now() // Expires not after Now: the binding is removed
	_, rerr := k.cfg.Store.Update(context.WithoutCancel(ctx), store.Update{AOR: kk.aor, CallID: b.CallID, CSeq: b.CSeq, Now: now,
		Contacts: []store.Binding{{ID: b.ID, Contact: b.Contact, Expires: now}}})
	if rerr != nil {
		k.cfg.Log.Info("unreachable binding not removed", "aor", kk.aor, "contact", b.Contact, "error", rerr)
		return
	}
	k.dropped.Inc()
	k.cfg.Log.Info("binding removed: NAT pings unanswered", "aor", kk.aor, "contact", b.Contact, "source", b.Source, "misses", k.cfg.MaxMisses)
}
