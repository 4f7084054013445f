// Package overload sheds new work when sori falls behind. A UDP request
// is stamped by the kernel as it arrives; one that reaches sori's reader
// after waiting longer than the limit (the process starved of CPU, or
// offered more than it can serve) has most likely been sent again already
// (RFC 3261 T1 is 500 ms), and serving it late only makes the queue
// longer. So a new request (an INVITE, REGISTER, MESSAGE... outside a
// dialog) that waited too long is answered 503 with Retry-After at once,
// without a transaction, the way a server in overload is to say so (RFC
// 3261 §21.5.4, RFC 7339 §1). What finishes work already accepted (ACK,
// CANCEL, anything inside a dialog, responses) is never shed.
//
// Streams (TCP, TLS, WebSocket) need none of this: their flow control
// already holds the sender back to the rate sori reads at.
package overload

import (
	"log/slog"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/sip/lograte"
	"github.com/sori-voice/sori/sip/methods"
)

// Shedder decides which late requests are refused.
type Shedder struct {
	limit time.Duration
	log   *slog.Logger
	gate  lograte.Gate
	shed  *prometheus.CounterVec
	delay prometheus.Histogram
}

// New sheds new requests that waited longer than limit (0: none is shed,
// the wait is still measured); reg may be nil.
func New(limit time.Duration, reg prometheus.Registerer, log *slog.Logger) *Shedder {
	s := &Shedder{limit: limit, log: log,
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_overload_shed_total",
			Help: "New requests answered 503 because they waited longer than sip.shed_after between arriving and being read, by method.",
		}, []string{"method"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sori_sip_receive_wait_seconds",
			Help:    "How long UDP requests waited between the kernel receiving them and sori reading them.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	if reg != nil {
		reg.MustRegister(s.shed, s.delay)
	}
	return s
}

// Shed reports whether req, which arrived at arrived and is read at now,
// is to be answered 503 instead of served. A zero arrived (not stamped)
// is never shed.
func (s *Shedder) Shed(req *sip.Request, arrived, now time.Time) bool {
	if arrived.IsZero() {
		return false
	}
	waited := now.Sub(arrived)
	s.delay.Observe(waited.Seconds())
	if s.limit <= 0 || waited <= s.limit || !newWork(req) {
		return false
	}
	s.shed.WithLabelValues(methods.Label(req.Method)).Inc()
	if s.log != nil && s.gate.Allow(now) {
		s.log.Warn("overloaded: a new request waited too long to be read, answered 503", "method", methods.Label(req.Method), "waited", waited.Round(time.Millisecond), "limit", s.limit)
	}
	return true
}

// newWork: a request that starts something (no To tag) and is not an ACK
// or CANCEL, which end what was started.
func newWork(req *sip.Request) bool {
	if req.IsAck() || req.IsCancel() {
		return false
	}
	to := req.To()
	return to == nil || !to.Params.Has("tag")
}
