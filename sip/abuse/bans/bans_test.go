package bans

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

func TestListInProcess(t *testing.T) {
	l := New("n1", nil, slog.Default())
	a := netip.MustParseAddr("192.0.2.7")
	now := time.Now()
	if l.Banned(a) {
		t.Fatal("banned before any ban")
	}
	if !l.Post(Ban{Address: a, Reason: "test", Until: now.Add(time.Hour)}) {
		t.Fatal("first post refused")
	}
	tests := []struct {
		name string
		addr string
		want bool
	}{
		{"the address", "192.0.2.7", true},
		{"its IPv4-mapped form", "::ffff:192.0.2.7", true},
		{"another address", "192.0.2.8", false},
	}
	for _, tt := range tests {
		if got := l.Banned(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("%s: Banned = %v", tt.name, got)
		}
	}
	if l.Post(Ban{Address: a, Until: now.Add(time.Minute)}) {
		t.Error("a shorter ban replaced a longer one")
	}
	bs := l.List(now)
	if len(bs) != 1 || bs[0].Node != "n1" || bs[0].Reason != "test" || bs[0].Since.IsZero() {
		t.Fatalf("List = %+v", bs)
	}
	// An expired ban no longer bans, and the sweep forgets it.
	b := netip.MustParseAddr("192.0.2.9")
	l.Post(Ban{Address: b, Until: now.Add(-time.Millisecond)})
	if l.Banned(b) {
		t.Error("an expired ban still bans")
	}
	l.expire(now)
	if l.Len() != 1 {
		t.Errorf("after the sweep %d bans held, want 1", l.Len())
	}
	found, err := l.Remove(context.Background(), a)
	if !found || err != nil || l.Banned(a) {
		t.Fatalf("remove: %v %v, still banned %v", found, err, l.Banned(a))
	}
}

func BenchmarkBannedNone(b *testing.B) {
	l := New("n1", nil, slog.Default())
	a := netip.MustParseAddr("192.0.2.7")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.Banned(a)
	}
}

func BenchmarkBannedSome(b *testing.B) {
	l := New("n1", nil, slog.Default())
	for i := range 1000 {
		l.Post(Ban{Address: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Until: time.Now().Add(time.Hour)})
	}
	a := netip.MustParseAddr("192.0.2.7")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.Banned(a)
	}
}
