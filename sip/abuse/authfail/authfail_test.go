package authfail

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestBans(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	a := netip.MustParseAddr("192.0.2.1")
	type fail struct {
		src  string
		user string
		at   time.Duration
	}
	many := func(n int, src, user string, every time.Duration) []fail {
		var out []fail
		for i := range n {
			out = append(out, fail{src, user, time.Duration(i) * every})
		}
		return out
	}
	tests := []struct {
		name     string
		fails    []fail
		wantBan  int    // index of the failure that bans; -1: none
		reasonOf string // substring of the reason
	}{
		{"5 from one source at once: the 5th bans", many(5, "192.0.2.1", "alice", time.Millisecond), 4, "5 failed authentications within"},
		{"4 from one source: no ban", many(4, "192.0.2.1", "alice", time.Millisecond), -1, ""},
		{"one every 30 s with a 60 s window: never 5 within it", many(20, "192.0.2.1", "alice", 30*time.Second), -1, ""},
		{"5 within a minute, spread", many(5, "192.0.2.1", "alice", 14*time.Second), 4, "within"},
		{"one user from many sources: the 8th source is banned", func() []fail {
			var out []fail
			for i := range 8 {
				out = append(out, fail{netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String(), "alice", time.Duration(i) * time.Second})
			}
			return out
		}(), 7, `for user "alice"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Config{PerSource: 5, PerUser: 8, Window: time.Minute})
			got := -1
			for i, f := range tt.fails {
				if ban, reason := c.Failed(netip.MustParseAddr(f.src), f.user, t0.Add(f.at)); ban {
					if got == -1 {
						got = i
						if !strings.Contains(reason, tt.reasonOf) {
							t.Errorf("reason %q lacks %q", reason, tt.reasonOf)
						}
					}
				}
			}
			if got != tt.wantBan {
				t.Fatalf("banned at failure %d, want %d", got, tt.wantBan)
			}
		})
	}
	// A banned source starts again from zero.
	c := New(Config{PerSource: 3, Window: time.Minute})
	for i := range 3 {
		c.Failed(a, "", t0.Add(time.Duration(i)))
	}
	if ban, _ := c.Failed(a, "", t0.Add(time.Second)); ban {
		t.Fatal("the failure after a ban banned again at once")
	}
}
