package ttlmap

import (
	"net/netip"
	"strconv"
	"testing"
)

func TestEntriesSurviveAPeriodAndAreForgottenAfterTwo(t *testing.T) {
	const p = 100
	m := New[string, int](4, 1000, p, HashString)
	get := func(k string, now int64) (v int, fresh bool) {
		m.Do(k, now, func(x *int, f bool) { *x++; v, fresh = *x, f })
		return
	}
	tests := []struct {
		name      string
		key       string
		at        int64
		wantCount int
		wantFresh bool
	}{
		{"new", "a", 1000, 1, true},
		{"touched again at once", "a", 1001, 2, false},
		{"a period later: still there", "a", 1000 + p + 50, 3, false},
		{"touched in time again", "a", 1000 + 2*p + 40, 4, false},
		{"two idle periods: forgotten", "a", 1000 + 5*p, 1, true},
	}
	for _, tt := range tests {
		v, fresh := get(tt.key, tt.at)
		if v != tt.wantCount || fresh != tt.wantFresh {
			t.Errorf("%s: count %d fresh %v, want %d %v", tt.name, v, fresh, tt.wantCount, tt.wantFresh)
		}
	}
}

func TestSizeStaysBounded(t *testing.T) {
	const max = 1000
	m := New[[16]byte, int](16, max, 1e18, HashAddr) // never idle: only the cap forgets
	for i := range 100_000 {
		var k [16]byte
		copy(k[:], strconv.Itoa(i))
		m.Do(k, int64(i), func(*int, bool) {})
		if n := m.Len(); n > max {
			t.Fatalf("after %d keys the map holds %d > %d", i+1, n, max)
		}
	}
	if n := m.Len(); n < max/4 {
		t.Fatalf("the map holds only %d: the cap forgets too much", n)
	}
}

// Consecutive IPv4 addresses spread over every shard.
func TestHashAddrSpreadsIPv4(t *testing.T) {
	seen := map[uint64]int{}
	for i := range 4096 {
		k := AddrKey(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
		seen[HashAddr(k)&63]++
	}
	for s := range uint64(64) {
		if seen[s] < 32 || seen[s] > 100 {
			t.Fatalf("shard %d got %d of 4096 addresses: %v", s, seen[s], seen)
		}
	}
}
