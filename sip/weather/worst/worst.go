// Package worst keeps the worst recent call sides by loss, for the
// operator's view: a bounded list, in memory, of this node's calls.
package worst

import (
	"context"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/weather"
)

// Defaults of New.
const (
	DefaultSize   = 50
	DefaultWindow = 24 * time.Hour
)

// Call is one side's hop of a call.
type Call struct {
	CallID  string    `json:"call_id"`
	Side    string    `json:"side"` // caller or callee
	Hop     string    `json:"hop"`  // weather.Uplink or weather.Downlink
	Network string    `json:"network"`
	Access  string    `json:"access"`
	LossPct float64   `json:"loss_pct"`
	MOS     float64   `json:"mos,omitempty"` // the uplink's; none for the downlink
	Jitter  int64     `json:"jitter_ms"`
	End     time.Time `json:"end"`
	// Record is where the call's record is served (the integrator's
	// handler: /api/calls/CALL-ID).
	Record string `json:"record"`
}

// List holds the Size worst call sides by loss (ties: the lower MOS, then
// the later) that ended within Window.
type List struct {
	size   int
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	calls []Call // unordered
}

// New returns an empty list; size and window of 0 take the defaults, now
// nil is time.Now.
func New(size int, window time.Duration, now func() time.Time) *List {
	if size <= 0 {
		size = DefaultSize
	}
	if window <= 0 {
		window = DefaultWindow
	}
	if now == nil {
		now = time.Now
	}
	return &List{size: size, window: window, now: now}
}

// worse tells whether a ranks before b.
func worse(a, b Call) bool {
	if a.LossPct != b.LossPct {
		return a.LossPct > b.LossPct
	}
	if a.MOS != b.MOS {
		return a.MOS < b.MOS
	}
	return a.End.After(b.End)
}

// Add takes a record's sides (each hop with a loss above 0: a call
// without loss is not one of the worst).
func (l *List) Add(r calls.Record) {
	var cands []Call
	for _, side := range []struct {
		name string
		q    *calls.MediaQuality
	}{{"caller", r.CallerMedia}, {"callee", r.CalleeMedia}} {
		q := side.q
		if q == nil {
			continue
		}
		base := Call{CallID: r.CallID, Side: side.name, Network: q.Network, Access: q.Access, End: r.End,
			Record: "/api/calls/" + url.PathEscape(r.CallID)}
		if base.Network == "" {
			base.Network = weather.OtherNetwork
		}
		if base.Access == "" {
			base.Access = weather.AccessUnknown
		}
		if q.Sent > 0 && q.LossPct > 0 {
			c := base
			c.Hop, c.LossPct, c.MOS, c.Jitter = weather.Uplink, q.LossPct, q.MOS, q.JitterMS
			cands = append(cands, c)
		}
		if q.DownLossPct > 0 {
			c := base
			c.Hop, c.LossPct, c.Jitter = weather.Downlink, q.DownLossPct, q.DownJitterMS
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cut := l.expire()
	for _, c := range cands {
		if c.End.Before(cut) {
			continue // already out of the window (a rebuild's old records)
		}
		if len(l.calls) < l.size {
			l.calls = append(l.calls, c)
			continue
		}
		least := 0 // the least bad held, replaced when c is worse
		for i := range l.calls {
			if worse(l.calls[least], l.calls[i]) {
				least = i
			}
		}
		if worse(c, l.calls[least]) {
			l.calls[least] = c
		}
	}
}

// Write implements calls.Sink.
func (l *List) Write(_ context.Context, r calls.Record) error {
	l.Add(r)
	return nil
}

// expire drops calls older than the window and returns its start; l.mu
// is held.
func (l *List) expire() time.Time {
	cut := l.now().Add(-l.window)
	l.calls = slices.DeleteFunc(l.calls, func(c Call) bool { return c.End.Before(cut) })
	return cut
}

// Worst returns the list, worst first.
func (l *List) Worst() []Call {
	l.mu.Lock()
	l.expire()
	out := slices.Clone(l.calls)
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b Call) int {
		switch {
		case worse(a, b):
			return -1
		case worse(b, a):
			return 1
		}
		return 0
	})
	if out == nil {
		out = []Call{}
	}
	return out
}
