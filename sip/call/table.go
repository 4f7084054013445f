package call

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/lograte"
	"github.com/sori-voice/sori/sip/timers"
	"github.com/sori-voice/sori/sip/weather"
)

// Recorder writes a finished call's record (sip/calls).
type Recorder interface {
	Write(r calls.Record)
}

// Media ends a call's media on its anchor and returns each side's media
// quality by SIP tag (nil when unknown) (sip/anchoring).
type Media interface {
	Delete(ctx context.Context, anchor netip.AddrPort, callID string) map[string]calls.MediaQuality
}

// Reclaimer asks an anchor whether it still holds a call, and has it
// report the call's media timeout to this process from then on
// (sip/anchoring).
type Reclaimer interface {
	Reclaim(ctx context.Context, anchor netip.AddrPort, callID string) (held bool, err error)
}

// Slots counts the calls on each carrier trunk (sip/trunks).
type Slots interface {
	Acquire(trunk string)
	Release(trunk string)
}

// Tolls caps each user's calls to carrier trunks (sip/abuse/tollfraud).
type Tolls interface {
	// Begin counts a call out; a *tollfraud.LimitError refuses it (403),
	// another error means the count could not be kept (503).
	Begin(ctx context.Context, user, callID string) error
	// End stops counting it (a call not Begun is ignored).
	End(callID string)
	// Resume counts a call begun elsewhere (loaded from the store) until
	// its End, with no limit checked and no start counted again.
	Resume(user, callID string)
}

// Networks names the network a phone is on (sip/networks).
type Networks interface {
	Classify(addr netip.Addr, pani string) string
}

// Tagger gives a user's tags (plan=lte-62), by name or, for a number
// called from a carrier, by its E.164 number; nil when it has none.
type Tagger interface {
	UserTags(ctx context.Context, name, number string) map[string]string
}

// Hangup sends BYE to one side of a dialog as its other side (sip/uac).
type Hangup interface {
	Bye(ctx context.Context, callID string, to, from Side) error
}

// Config configures a Table. Only Records is required.
type Config struct {
	Records  Recorder
	Media    Media    // nil: media is never anchored
	Slots    Slots    // nil: no trunks
	Tolls    Tolls    // nil: no toll caps
	Networks Networks // nil: networks are not named
	Hangup   Hangup   // nil: sori never hangs up itself
	// Reanchor and Reinvite move calls off a dead media anchor
	// (reanchor.go); either nil: no failover, the calls stay.
	Reanchor Reanchorer
	Reinvite Reinviter
	// Reclaim, for the anchored calls a node adopts at start (Adopt):
	// nil, their anchors go on reporting to the process that made them.
	Reclaim Reclaimer
	Tags    Tagger // nil: records carry no user tags
	// Store keeps answered calls beyond this process (a restart, other
	// nodes); nil: NoStore, calls live on this node alone.
	Store Store
	// Fence tells whether this node may act on the calls it saved
	// (fence.go: sip/nodes.Lease); nil: always (no other node adopts
	// them).
	Fence Fence
	// DialogTimeout is how long a call is kept without an end (a lost
	// BYE, no media timeout); then sori ends it.
	DialogTimeout time.Duration
	// Timers arms the calls' timers (and counts them); nil: a Set of its own.
	Timers     *timers.Set
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
}

// Table is the calls in progress on this node, by Call-ID.
type Table struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	timers *timers.Set

	mu sync.Mutex
	m  map[string]*Call

	bg     pending      // endings still deleting media, sending BYEs, writing records
	ending atomic.Int64 // how many

	// glare is how long a re-INVITE waits after a 491 (glareDelay; tests shorten it).
	glare func(owner bool) time.Duration

	// pending: the ends of saved calls this node could not claim before
	// it was cut off, by Call-ID, finished as it rejoins (fence.go).
	pendMu  sync.Mutex
	pending map[string]pendingEnd

	persist bool    // Store keeps calls (not NoStore)
	saves   pending // saves on their way to the store
	// saveFailing: the last save tried failed; no response waits for a
	// save then (store.go awaitSaved).
	saveFailing atomic.Bool

	ringing, answered      prometheus.Gauge
	handovers              prometheus.Counter
	reanchored             prometheus.Counter
	moveFailures           prometheus.Counter
	loaded, endedElsewhere prometheus.Counter
	adopted, dropped       prometheus.Counter
	fencedLog              lograte.Gate // requests and reports left alone while fenced
	storeErrors            *prometheus.CounterVec
}

// New returns an empty Table.
func New(c Config) *Table {
	if c.DialogTimeout <= 0 {
		c.DialogTimeout = 12 * time.Hour
	}
	if c.Timers == nil {
		c.Timers = &timers.Set{}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	_, none := c.Store.(NoStore)
	persist := c.Store != nil && !none
	if c.Store == nil {
		c.Store = NoStore{}
	}
	active := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sori_calls_active",
		Help: "Calls in progress on this node: ringing (INVITE forwarded, no answer yet) or answered.",
	}, []string{"state"})
	t := &Table{cfg: c, log: c.Log, now: time.Now, timers: c.Timers, m: map[string]*Call{}, pending: map[string]pendingEnd{},
		glare:   func(owner bool) time.Duration { return glareDelay(owner, rand.IntN) },
		ringing: active.WithLabelValues(string(Ringing)), answered: active.WithLabelValues(string(Answered)),
		handovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_call_handovers_total",
			Help: "Answered calls whose phone moved (a re-INVITE or UPDATE from a new address or with a new Contact).",
		}),
		reanchored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_calls_reanchored_total",
			Help: "Calls moved to another media anchor when theirs died (answered: by re-INVITE to both phones; ringing: on their next SDP answer).",
		}),
		moveFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_calls_reanchor_failed_total",
			Help: "Answered calls whose media anchor died and that could not be moved (a phone refused the re-INVITE): sori ended them.",
		}),
		persist: persist,
		loaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_calls_loaded_total",
			Help: "Answered calls this node took from the dialog store for an in-dialog request (after a restart, or from another node).",
		}),
		adopted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_calls_adopted_total",
			Help: "Answered calls this node saved before it started again and took back from the dialog store at start.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_calls_dropped_total",
			Help: "Calls this node held that another node adopted while this one was cut off from the dialog store: let go of without BYE or record.",
		}),
		endedElsewhere: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_calls_ended_elsewhere_total",
			Help: "Calls this node held whose end another node had claimed first in the dialog store (this one wrote no record).",
		}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_dialog_store_errors_total",
			Help: "Dialog store operations that failed, by operation (save, load, delete, take).",
		}, []string{"op"}),
	}
	if c.Registerer != nil {
		if persist {
			c.Registerer.MustRegister(t.loaded, t.adopted, t.dropped, t.endedElsewhere, t.storeErrors)
		}
		c.Registerer.MustRegister(active, t.handovers, t.reanchored, t.moveFailures, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sori_calls_held",
			Help: "Call objects this node holds (ringing, answered, or ending: deleting media, sending BYE).",
		}, func() float64 { return float64(t.Held()) }))
	}
	return t
}

// Begin starts a call for an initial INVITE; callerTag is its From tag.
// A spiral (the same INVITE reaching sori again) is held by its first
// pass; a later pass gets a Call of its own that writes its own record.
func (t *Table) Begin(rec calls.Record, callerTag string) *Call {
	rec.Start = t.now()
	c := &Call{t: t, st: State{Record: rec, Phase: Ringing, Caller: Side{Tag: callerTag}}}
	t.mu.Lock()
	if _, dup := t.m[rec.CallID]; !dup {
		t.m[rec.CallID] = c
		c.tracked = true
	}
	c.mu.Lock()
	c.arm(t.cfg.DialogTimeout) // the fork's timer C ends it long before
	c.mu.Unlock()
	t.mu.Unlock()
	t.ringing.Inc()
	return c
}

// Find returns the call with callID, or nil.
func (t *Table) Find(callID string) *Call {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[callID]
}

// MediaTimeout is an anchor's report that a call's media stopped; only the
// call's own anchor is believed. A call this node does not hold is loaded
// from the store, if saved (a node that restarted and has not adopted it,
// or another node's), and ended here: its end is claimed there, so its
// record is written once whichever node ends it.
func (t *Table) MediaTimeout(from netip.AddrPort, callID string, media map[string]calls.MediaQuality) {
	if c := t.Find(callID); c != nil || !t.persist {
		t.mediaTimeout(c, from, callID, media)
		return
	}
	// Not in the anchors' loop: the store may be slow or down.
	t.background(func(ctx context.Context) {
		t.mediaTimeout(t.lookup(ctx, callID, false), from, callID, media)
	})
}

func (t *Table) mediaTimeout(c *Call, from netip.AddrPort, callID string, media map[string]calls.MediaQuality) {
	if c == nil {
		return
	}
	if a, ok := c.Anchor(); !ok || a != from {
		return // not a call of ours on that anchor
	}
	c.mu.Lock()
	fenced := c.fenced()
	c.mu.Unlock()
	if fenced {
		// Another node may hold it now; asked of its anchor again as this
		// node rejoins (fence.go).
		if t.fencedLog.Allow(t.now()) {
			t.log.Warn("media timeout left alone: this node is cut off from the dialog store", "call_id", callID, "anchor", from)
		}
		return
	}
	t.log.Info("media stopped: ending the call", "call_id", callID, "anchor", from)
	c.MediaTimeout(media)
}

// Len is the number of calls in the table.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// Held is Len plus the calls still ending in the background.
func (t *Table) Held() int { return t.Len() + int(t.ending.Load()) }

// Wait waits until every ending has written its record and every save
// reached the store, or ctx ends.
func (t *Table) Wait(ctx context.Context) error {
	return waitAll(ctx, &t.bg, &t.saves)
}

// letGo gives back what a call that was in phase counted on this node,
// once it has ended here or another node holds it: its gauge, its trunk
// slot, its toll count.
func (t *Table) letGo(phase Phase, st State) {
	if phase == Ringing {
		t.ringing.Dec()
	} else {
		t.answered.Dec()
	}
	if st.Trunk != "" && t.cfg.Slots != nil {
		t.cfg.Slots.Release(st.Trunk)
	}
	if st.Toll && t.cfg.Tolls != nil {
		t.cfg.Tolls.End(st.Record.CallID)
	}
}

func (t *Table) remove(c *Call) {
	t.mu.Lock()
	if t.m[c.ID()] == c {
		delete(t.m, c.ID())
	}
	t.mu.Unlock()
}

// endTimeout bounds what an ending does in the background (delete, BYE).
const endTimeout = 40 * time.Second

func (t *Table) background(f func(ctx context.Context)) {
	t.bg.Add(1)
	t.ending.Add(1)
	go func() {
		defer t.bg.Done()
		defer t.ending.Add(-1)
		ctx, cancel := context.WithTimeout(context.Background(), endTimeout)
		defer cancel()
		f(ctx)
	}()
}

func (t *Table) deleteMedia(anchor netip.AddrPort, callID string) {
	if t.cfg.Media == nil {
		return
	}
	t.background(func(ctx context.Context) { t.cfg.Media.Delete(ctx, anchor, callID) })
}

// classify names each side's network from where its media came from and
// the P-Access-Network-Info it sent, its access type (LTE, NR, Wi-Fi...),
// and the tags of the user on that side (the quality map's cuts).
func (t *Table) classify(ctx context.Context, st State, media map[string]calls.MediaQuality) map[string]calls.MediaQuality {
	for tag, q := range media {
		pani, user, number := "", "", ""
		switch tag {
		case st.Caller.Tag:
			pani, user = st.Caller.PANI, st.Record.Caller
		case st.Callee.Tag:
			pani, number = st.Callee.PANI, st.Record.Number
			var to sip.Uri
			if sip.ParseUri(st.Record.To, &to) == nil {
				user = to.User
			}
		}
		if t.cfg.Networks != nil {
			q.Network = t.cfg.Networks.Classify(q.Address, pani)
		}
		q.Access = weather.AccessType(pani)
		if t.cfg.Tags != nil && (user != "" || number != "") {
			q.Tags = t.cfg.Tags.UserTags(ctx, user, number)
		}
		media[tag] = q
	}
	return media
}

// Load puts a call saved as st back in the table (a restart, another node
// taking over): its expiry is armed for what is left of it, and the trunk
// slot and toll count it held are taken again on this node, and a
// delayed offer it saved waits for its ACK here (late.go). A call with
// that Call-ID already held, or one already ended, is not loaded (nil).
// Its end is claimed in the store first (Store.Delete), so that of the
// nodes that may hold it only one writes its record.
func (t *Table) Load(_ context.Context, st State) *Call {
	if st.Phase == Ended || st.Record.CallID == "" {
		return nil
	}
	if t.cfg.Slots == nil {
		st.Trunk = "" // no trunks on this node: no slot to hold
	}
	if t.cfg.Tolls == nil {
		st.Toll = false
	}
	c := &Call{t: t, tracked: true, st: st, saved: true, late: lateFrom(st.Late)}
	// c.mu is held until the call's slot and toll count are taken and its
	// expiry armed: nothing ends it (a request for it, an expiry already
	// past) before it holds what its end gives back. No one else can hold
	// c.mu before c is in the table, so taking it before t.mu is safe.
	c.mu.Lock()
	defer c.mu.Unlock()
	t.mu.Lock()
	if _, dup := t.m[st.Record.CallID]; dup {
		t.mu.Unlock()
		return nil
	}
	t.m[st.Record.CallID] = c
	t.mu.Unlock()
	if st.Phase == Answered {
		t.answered.Inc()
	} else {
		t.ringing.Inc()
	}
	if st.Trunk != "" && t.cfg.Slots != nil {
		t.cfg.Slots.Acquire(st.Trunk)
	}
	if st.Toll && t.cfg.Tolls != nil {
		// Its start was counted where it began; it is in progress here now.
		t.cfg.Tolls.Resume(st.Record.Caller, st.Record.CallID)
	}
	c.arm(max(st.Expiry.Sub(t.now()), 0))
	return c
}
