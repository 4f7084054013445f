package main

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sori-voice/sori/media/fastpath"
	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/relay"
)

// openFastPath loads the kernel fast path for the RTP sockets' address and
// gives it to the relay, or says why the relay forwards everything itself.
// Records are read until ctx ends; the caller closes the path after the
// calls are gone.
func openFastPath(ctx context.Context, o options, reg prometheus.Registerer, log *slog.Logger) *fastpath.Path {
	if !o.kernelForward {
		return nil
	}
	if o.jitter.Mode != jitter.Off {
		log.Debug("kernel fast path not loaded: every stream goes through the jitter buffer", "jitter_buffer", o.jitter.Mode)
		return nil
	}
	if o.listen.IsUnspecified() || !o.listen.Unmap().Is4() {
		// A route is keyed by the socket's own address: a wildcard or IPv6
		// socket's packets are not the kernel's to forward.
		log.Info("RTP forwarded by the relay only: the kernel fast path needs -listen to be one IPv4 address", "listen", o.listen)
		return nil
	}
	path, err := fastpath.Open([]netip.Addr{o.listen})
	if err != nil {
		log.Warn("RTP forwarded by the relay only: the kernel fast path did not load", "error", err)
		return nil
	}
	relay.SetFastPath(path)
	go func() { _ = path.Run(ctx, relay.FastRecord) }()
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sori_anchor_kernel_forwarded_packets_total",
			Help: "RTP packets the kernel fast path forwarded without the relay.",
		}, func() float64 { return float64(path.Counts().Forwarded) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sori_anchor_kernel_ring_full_packets_total",
			Help: "RTP packets of kernel-forwarded streams left to the relay because the records' ring was full.",
		}, func() float64 { return float64(path.Counts().RingFull) }),
	)
	log.Info("kernel fast path loaded: plain RTP streams without a jitter buffer are forwarded in the kernel", "listen", o.listen)
	return path
}
