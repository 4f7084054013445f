package calls

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Recorder writes finished call records to the sinks and counts them:
// calls by disposition, and the media quality of their uplinks by network.
// The call in progress is held by sip/call; a Recorder sees it once, when
// it has ended.
type Recorder struct {
	sinks []Sink
	log   *slog.Logger

	ended *prometheus.CounterVec
	// Media quality of ended calls' uplinks (phone → anchor), by network.
	loss, jitter, mos *prometheus.HistogramVec
}

// NewRecorder returns a Recorder writing to sinks. reg may be nil.
func NewRecorder(log *slog.Logger, reg prometheus.Registerer, sinks ...Sink) *Recorder {
	r := &Recorder{
		sinks: sinks, log: log,
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_calls_total",
			Help: "Calls ended (one call record each), by disposition.",
		}, []string{"disposition"}),
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
	if reg != nil {
		reg.MustRegister(r.ended, r.loss, r.jitter, r.mos)
	}
	return r
}

// Write counts a finished record and stores it in every sink.
func (t *Recorder) Write(r Record) {
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
