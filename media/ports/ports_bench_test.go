package ports

import (
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAllocateRelease: a call's two pairs taken and given back, as
// the anchor does per call with the range's pairs all parked (after a
// few seconds of load every pair handed out is a parked one).
func BenchmarkAllocateRelease(b *testing.B) {
	a, err := New(netip.MustParseAddr("127.0.0.1"), 56000, 56199)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	b.ReportAllocs()
	cpu0, n := cpuTime(), 0
	for b.Loop() {
		n++
		p, err := a.Allocate()
		if err != nil {
			b.Fatal(err)
		}
		q, err := a.Allocate()
		if err != nil {
			b.Fatal(err)
		}
		a.Release(p)
		a.Release(q)
	}
	// CPU, not wall time: the two shared cores' other load shows in ns/op.
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(n), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
