package anchor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
)

// BenchmarkCallLifecycle: one call's offer, answer and delete through
// Handle, with the ports allocated, started in the relay's workers and
// released (no media): the anchor's share of an anchored call's setup.
func BenchmarkCallLifecycle(b *testing.B) {
	alloc, err := ports.New(loopback, 54000, 55999)
	if err != nil {
		b.Fatal(err)
	}
	defer alloc.Close()
	m := New(Config{Advertise: []netip.Addr{advertise}, Ports: alloc, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer m.Close()
	pa, pb := netip.MustParseAddrPort("127.0.0.1:4000"), netip.MustParseAddrPort("127.0.0.1:4002")
	sa, sb := phoneSDP(pa), phoneSDP(pb)
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := cpuTime()
	n := 0
	for i := 0; b.Loop(); i++ {
		n++
		id := fmt.Sprintf("call-%d", i)
		if r := m.Handle(ctx, "offer", ng.Dict{"call-id": id, "from-tag": "a", "sdp": sa}, control); r.Str("result") != "ok" {
			b.Fatalf("offer: %v", r)
		}
		if r := m.Handle(ctx, "answer", ng.Dict{"call-id": id, "from-tag": "a", "to-tag": "b", "sdp": sb}, control); r.Str("result") != "ok" {
			b.Fatalf("answer: %v", r)
		}
		r := m.Handle(ctx, "delete", ng.Dict{"call-id": id, "from-tag": "a"}, control)
		if r.Str("result") != "ok" {
			b.Fatalf("delete: %v", r)
		}
		if _, err := ng.Encode("c", r); err != nil { // as the answer goes back
			b.Fatal(err)
		}
	}
	// The workers' CPU too (removing a socket from a ring is a round trip
	// to its goroutine): CPU time is what a loaded anchor runs out of.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(n), "cpu-µs/op")
}

// BenchmarkCallLifecycleSori: as BenchmarkCallLifecycle, with the keys
// sori's proxy (and Kamailio's rtpengine module) send: replace, ICE,
// received-from and flags.
func BenchmarkCallLifecycleSori(b *testing.B) {
	alloc, err := ports.New(loopback, 56000, 57999)
	if err != nil {
		b.Fatal(err)
	}
	defer alloc.Close()
	m := New(Config{Advertise: []netip.Addr{advertise}, Ports: alloc, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer m.Close()
	pa, pb := netip.MustParseAddrPort("127.0.0.1:4000"), netip.MustParseAddrPort("127.0.0.1:4002")
	sa, sb := phoneSDP(pa), phoneSDP(pb)
	ctx := context.Background()
	req := func(extra ng.Dict) ng.Dict {
		d := ng.Dict{"replace": []any{"origin", "session-connection"}, "ICE": "remove",
			"received-from": []any{"IP4", "127.0.0.1"}, "flags": []any{"trust-address", "loop-protect"}}
		for k, v := range extra {
			d[k] = v
		}
		return d
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	n := 0
	for i := 0; b.Loop(); i++ {
		n++
		id := fmt.Sprintf("call-%d", i)
		if r := m.Handle(ctx, "offer", req(ng.Dict{"call-id": id, "from-tag": "a", "sdp": sa}), control); r.Str("result") != "ok" {
			b.Fatalf("offer: %v", r)
		}
		if r := m.Handle(ctx, "answer", req(ng.Dict{"call-id": id, "from-tag": "a", "to-tag": "b", "sdp": sb}), control); r.Str("result") != "ok" {
			b.Fatalf("answer: %v", r)
		}
		r := m.Handle(ctx, "delete", ng.Dict{"call-id": id, "from-tag": "a"}, control)
		if r.Str("result") != "ok" {
			b.Fatalf("delete: %v", r)
		}
		if _, err := ng.Encode("c", r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(n), "cpu-µs/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
