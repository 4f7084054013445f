package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	tests := []struct {
		name  string
		steps func(l *Limiter) (allowed int)
		want  int
	}{
		{"a burst of 10 is allowed at once, the 11th is not", func(l *Limiter) int {
			n := 0
			for range 11 {
				if l.Allow(a, t0) {
					n++
				}
			}
			return n
		}, 10},
		{"sustained at the rate: every request passes", func(l *Limiter) int {
			n := 0
			for i := range 100 { // 100 requests at 5/s over 20 s
				if l.Allow(a, t0.Add(time.Duration(i)*200*time.Millisecond)) {
					n++
				}
			}
			return n
		}, 100},
		{"a flood of 5000/s for a second: burst plus the rate", func(l *Limiter) int {
			n := 0
			for i := range 5000 {
				if l.Allow(a, t0.Add(time.Duration(i)*200*time.Microsecond)) {
					n++
				}
			}
			return n
		}, 10 + 5 - 1},
		{"sources have their own buckets", func(l *Limiter) int {
			for range 20 {
				l.Allow(a, t0)
			}
			n := 0
			for range 10 {
				if l.Allow(b, t0) {
					n++
				}
			}
			return n
		}, 10},
		{"IPv4-mapped IPv6 is the same source", func(l *Limiter) int {
			for range 10 {
				l.Allow(a, t0)
			}
			if l.Allow(netip.MustParseAddr("::ffff:192.0.2.1"), t0) {
				return 1
			}
			return 0
		}, 0},
		{"an emptied bucket refills", func(l *Limiter) int {
			for range 10 {
				l.Allow(a, t0)
			}
			n := 0
			for range 10 {
				if l.Allow(a, t0.Add(time.Hour)) {
					n++
				}
			}
			return n
		}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(Config{Rate: 5, Burst: 10})
			if got := tt.steps(l); got != tt.want {
				t.Fatalf("allowed %d, want %d", got, tt.want)
			}
		})
	}
}

func TestManySourcesStayBounded(t *testing.T) {
	l := New(Config{Rate: 100, Burst: 200, MaxSources: 10_000})
	now := time.Unix(1_700_000_000, 0)
	for i := range 1_000_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !l.Allow(a, now.Add(time.Duration(i)*time.Microsecond)) {
			t.Fatalf("a new source was refused")
		}
	}
	if n := l.Sources(); n > 10_000 {
		t.Fatalf("%d buckets held, cap 10 000", n)
	}
}

// BenchmarkAllow is the per-request cost, with 10 000 sources in the map.
func BenchmarkAllow(b *testing.B) {
	l := New(Config{Rate: 1000, Burst: 2000})
	addrs := make([]netip.Addr, 10_000)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.Allow(addrs[i%len(addrs)], now)
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	l := New(Config{Rate: 1000, Burst: 2000})
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			l.Allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), now)
		}
	})
}

// With sori's defaults (1000/s, burst 2000): a 5000/s flood is over the
// limit within a second; a NAT address sending 900/s steadily never is.
func TestDefaultsAgainstAFloodAndANAT(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := New(Config{Rate: 1000, Burst: 2000})
	flood, nat := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2")
	var limitedAt time.Duration = -1
	for i := range 5000 {
		at := time.Duration(i) * 200 * time.Microsecond
		if !l.Allow(flood, t0.Add(at)) {
			limitedAt = at
			break
		}
	}
	if limitedAt < 0 || limitedAt > time.Second {
		t.Fatalf("a 5000/s flood was limited at %v, want within 1 s", limitedAt)
	}
	t.Logf("a 5000/s flood is over the default limit after %v", limitedAt)
	for i := range 9000 { // 10 s at 900/s
		if !l.Allow(nat, t0.Add(time.Duration(i)*time.Second/900)) {
			t.Fatalf("900/s from one address was limited at request %d", i)
		}
	}
}
