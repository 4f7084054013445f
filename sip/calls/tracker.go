package calls

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Tracker follows calls from INVITE to BYE on this node (BYE passes through
// the node that record-routed the INVITE).
type Tracker struct {
	mu      sync.Mutex
	calls   map[string]*Call // by Call-ID
	sinks   []Sink
	log     *slog.Logger
	now     func() time.Time
	timeout time.Duration

	active *prometheus.GaugeVec
	ended  *prometheus.CounterVec

	// Media quality of ended calls' uplinks (phone → anchor), by network.
	loss, jitter, mos *prometheus.HistogramVec
	stop              chan struct{}
	once              sync.Once
}

// NewTracker returns a tracker writing to sinks; answered calls with no BYE
// are closed after dialogTimeout. reg may be nil.
func NewTracker(dialogTimeout time.Duration, log *slog.Logger, reg prometheus.Registerer, sinks ...Sink) *Tracker {
	t := &Tracker{
		calls: map[string]*Call{}, sinks: sinks, log: log, now: time.Now, timeout: dialogTimeout,
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sori_calls_active",
			Help: "Calls in progress on this node: ringing (INVITE forwarded, no answer yet) or answered.",
		}, []string{"state"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_calls_total",
			Help: "Calls ended (one call record each), by disposition.",
		}, []string{"disposition"}),
		stop: make(chan struct{}),
		loss: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sori_media_loss_ratio",
			Help:    "Packets lost between a phone and the anchor, per call side, by the phone's network.",
			Buckets: []float64{0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5},
		}, []string{"network"}),
		jitter: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sori_media_jitter_seconds",
			Help:    "RFC 3550 interarrival jitter of a phone's media at the anchor, per call side, by network.",
			Buckets: []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2},
		}, []string{"network"}),
		mos: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sori_media_mos",
			Help:    "E-model MOS of a phone's uplink, per call side, by network.",
			Buckets: []float64{1, 2, 2.5, 3, 3.5, 3.8, 4, 4.2, 4.3, 4.4, 4.5},
		}, []string{"network"}),
	}
	t.active.WithLabelValues("ringing")
	t.active.WithLabelValues("answered")
	if reg != nil {
		reg.MustRegister(t.active, t.ended, t.loss, t.jitter, t.mos)
	}
	go t.sweep()
	return t
}

// Close stops the sweeper.
func (t *Tracker) Close() { t.once.Do(func() { close(t.stop) }) }

// Call is one call in progress.
type Call struct {
	t        *Tracker
	rec      Record
	fromTag  string
	answered bool
	ended    bool
	tracked  bool
}

// Begin starts a call for an initial INVITE.
func (t *Tracker) Begin(rec Record, fromTag string) *Call {
	rec.Start = t.now()
	c := &Call{t: t, rec: rec, fromTag: fromTag}
	t.mu.Lock()
	if _, dup := t.calls[rec.CallID]; !dup {
		// A spiral (the same INVITE reaching us twice) is recorded once, by
		// its first pass; the later pass still writes its own record.
		t.calls[rec.CallID] = c
		c.tracked = true
	}
	t.mu.Unlock()
	t.active.WithLabelValues("ringing").Inc()
	return c
}

// Answer marks the call answered by callee with a 2xx.
func (c *Call) Answer(code int, reason, callee string) {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.answered || c.ended {
		return
	}
	now := t.now()
	c.answered = true
	c.rec.Answer = &now
	c.rec.Code, c.rec.Reason, c.rec.Callee = code, reason, callee
	t.active.WithLabelValues("ringing").Dec()
	t.active.WithLabelValues("answered").Inc()
}

// Fail ends an unanswered call with its final response.
func (c *Call) Fail(code int, reason string, cancelled, timedOut bool, branches int) {
	t := c.t
	t.mu.Lock()
	if c.answered || c.ended {
		t.mu.Unlock()
		return
	}
	c.rec.Code, c.rec.Reason, c.rec.Branches = code, reason, branches
	c.rec.Disposition = Disposition(code, cancelled, timedOut)
	if cancelled {
		c.rec.HangupBy = "caller"
	}
	rec := c.finishLocked()
	t.active.WithLabelValues("ringing").Dec()
	t.mu.Unlock()
	t.write(rec)
}

// SetRoute records the dialled and the calling numbers (E.164) and the
// carrier trunk and gateway, each when not empty.
func (c *Call) SetRoute(number, callerNumber, trunk, gateway string) {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	for _, f := range []struct {
		v   string
		dst *string
	}{{number, &c.rec.Number}, {callerNumber, &c.rec.CallerNumber}, {trunk, &c.rec.Trunk}, {gateway, &c.rec.Gateway}} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
}

// SetBranches records how many contacts the call was forked to.
func (c *Call) SetBranches(n int) {
	c.t.mu.Lock()
	c.rec.Branches = n
	c.t.mu.Unlock()
}

// Bye ends an answered call; fromTag is the BYE's From tag, which tells
// whether the caller or the callee hung up.
func (t *Tracker) Bye(callID, fromTag string) {
	t.mu.Lock()
	c, ok := t.calls[callID]
	if !ok || !c.answered || c.ended {
		t.mu.Unlock()
		return
	}
	by := "callee"
	if fromTag == c.fromTag {
		by = "caller"
	}
	t.endLocked(c, Answered, by)
}

// Media records the media quality of a call, by SIP tag (the caller's is
// its From tag); called before the call ends.
func (t *Tracker) Media(callID string, byTag map[string]MediaQuality) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.calls[callID]
	if !ok || c.ended || len(byTag) == 0 {
		return
	}
	for tag, q := range byTag {
		q := q
		if tag == c.fromTag {
			c.rec.CallerMedia = &q
		} else {
			c.rec.CalleeMedia = &q
		}
	}
	c.rec.MOS = 0
	for _, q := range []*MediaQuality{c.rec.CallerMedia, c.rec.CalleeMedia} {
		if q != nil && q.Sent > 0 && (c.rec.MOS == 0 || q.MOS < c.rec.MOS) {
			c.rec.MOS = q.MOS
		}
	}
}

// End ends an answered call sori itself hangs up (a media timeout).
func (t *Tracker) End(callID, disposition, hangupBy string) {
	t.mu.Lock()
	c, ok := t.calls[callID]
	if !ok || !c.answered || c.ended {
		t.mu.Unlock()
		return
	}
	t.endLocked(c, disposition, hangupBy)
}

// endLocked writes the record of an answered call; it unlocks t.mu.
func (t *Tracker) endLocked(c *Call, disposition, hangupBy string) {
	c.rec.HangupBy, c.rec.Disposition = hangupBy, disposition
	rec := c.finishLocked()
	t.active.WithLabelValues("answered").Dec()
	t.mu.Unlock()
	t.write(rec)
}

// Active returns the number of calls ringing and answered.
func (t *Tracker) Active() (ringing, answered int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.calls {
		if c.answered {
			answered++
		} else {
			ringing++
		}
	}
	return ringing, answered
}

func (c *Call) finishLocked() Record {
	c.ended = true
	c.rec.End = c.t.now()
	if c.rec.Answer != nil {
		c.rec.Duration = c.rec.End.Sub(*c.rec.Answer).Seconds()
	}
	if c.tracked {
		delete(c.t.calls, c.rec.CallID)
	}
	return c.rec
}

func (t *Tracker) write(r Record) {
	t.ended.WithLabelValues(r.Disposition).Inc()
	for _, q := range []*MediaQuality{r.CallerMedia, r.CalleeMedia} {
		if q == nil || q.Sent == 0 {
			continue
		}
		network := q.Network
		if network == "" {
			network = "other"
		}
		t.loss.WithLabelValues(network).Observe(q.LossPct / 100)
		t.jitter.WithLabelValues(network).Observe(float64(q.JitterMS) / 1000)
		t.mos.WithLabelValues(network).Observe(q.MOS)
	}
	for _, s := range t.sinks {
		if err := s.Write(context.Background(), r); err != nil {
			t.log.Warn("call record not written", "call_id", r.CallID, "error", err)
		}
	}
}

// sweep closes answered calls that outlived the dialog timeout.
func (t *Tracker) sweep() {
	tick := time.NewTicker(min(time.Minute, t.timeout/2))
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.expire()
		}
	}
}

func (t *Tracker) expire() {
	now := t.now()
	var recs []Record
	t.mu.Lock()
	for _, c := range t.calls {
		if c.answered && now.Sub(*c.rec.Answer) > t.timeout {
			c.rec.HangupBy, c.rec.Disposition = "timeout", Expired
			recs = append(recs, c.finishLocked())
			t.active.WithLabelValues("answered").Dec()
		}
	}
	t.mu.Unlock()
	for _, r := range recs {
		t.write(r)
	}
}
