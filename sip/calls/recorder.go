package calls

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Recorder writes finished call records to the sinks and counts them:
// calls by disposition, and the media quality of each side by network,
// access type and hop. The call in progress is held by sip/call; a
// Recorder sees it once, when it has ended.
type Recorder struct {
	sinks []Sink
	log   *slog.Logger

	ended *prometheus.CounterVec
	// Media quality of ended calls' sides, by network, access and hop.
	loss, jitter, mos *prometheus.HistogramVec
}

// Label values of the media histograms. They are those of the quality map
// (sip/weather: Uplink, Downlink, OtherNetwork, AccessUnknown), which
// cannot be imported here: weather reads this package's records.
const (
	hopUplink     = "uplink"
	hopDownlink   = "downlink"
	otherNetwork  = "other"
	unknownAccess = "unknown"
)

// mediaLabels are the labels of the media histograms.
var mediaLabels = []string{"network", "access", "hop"}

// NewRecorder returns a Recorder writing to sinks. reg may be nil.
func NewRecorder(log *slog.Logger, reg prometheus.Registerer, sinks ...Sink) *Recorder {
	r := &Recorder{
		sinks: sinks, log: log,
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_calls_total",
			Help: "Calls ended (one call record each), by disposition.",
		}, []string{"disposition"}),
		loss: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sori_media_loss_ratio",
			Help: "Packets lost per call side, by the phone's network, access type and hop " +
				"(uplink: phone → anchor, measured by the anchor; downlink: anchor → phone, from the phone's RTCP).",
			Buckets: []float64{0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5},
		}, mediaLabels),
		jitter: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sori_media_jitter_seconds",
			Help: "RFC 3550 interarrival jitter per call side, by network, access type and hop " +
				"(uplink: at the anchor; downlink: as the phone reported it).",
			Buckets: []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2},
		}, mediaLabels),
		mos: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sori_media_mos",
			Help:    "E-model MOS of a phone's uplink, per call side, by network and access type (hop is always uplink).",
			Buckets: []float64{1, 2, 2.5, 3, 3.5, 3.8, 4, 4.2, 4.3, 4.4, 4.5},
		}, mediaLabels),
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
		if q == nil {
			continue
		}
		network, access := q.Network, q.Access
		if network == "" {
			network = otherNetwork
		}
		if access == "" {
			access = unknownAccess
		}
		if q.Sent > 0 {
			t.loss.WithLabelValues(network, access, hopUplink).Observe(q.LossPct / 100)
			t.jitter.WithLabelValues(network, access, hopUplink).Observe(float64(q.JitterMS) / 1000)
			t.mos.WithLabelValues(network, access, hopUplink).Observe(q.MOS)
		}
		// As the quality map does (weather.Observe): a side whose downlink
		// figures are all zero is a phone that sent no RTCP, not a perfect
		// downlink, since the record cannot tell the two apart.
		if q.DownLossPct > 0 || q.DownJitterMS > 0 || q.RTTMS > 0 {
			t.loss.WithLabelValues(network, access, hopDownlink).Observe(min(max(q.DownLossPct, 0), 100) / 100)
			t.jitter.WithLabelValues(network, access, hopDownlink).Observe(float64(max(q.DownJitterMS, 0)) / 1000)
		}
	}
	for _, s := range t.sinks {
		if err := s.Write(context.Background(), r); err != nil {
			t.log.Warn("call record not written", "call_id", r.CallID, "error", err)
		}
	}
}
