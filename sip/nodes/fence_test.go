package nodes

import (
	"testing"
	"time"
)

// TestLease walks a node's lease through heartbeats written and missed,
// on a clock the test moves: with GoneAfter 15 s and BeatTTL 3 s, the
// node steps back once its last heartbeat was sent more than 12 s ago,
// and is the owner again only once it was renewed and its calls checked
// (Confirm) in the same epoch.
func TestLease(t *testing.T) {
	type step struct {
		wait    time.Duration // the clock moves on this much first
		renew   time.Duration // >= 0: a heartbeat written, sent this long before now
		confirm bool          // the calls were checked (Confirm with the epoch Rejoining gave last)
		stale   bool          // Confirm with the epoch before the last one
		want    Standing
		wantOK  bool // Confirm's result, when confirm or stale
	}
	const no = -1
	cases := []struct {
		name  string
		steps []step
	}{
		{"fresh at start", []step{{renew: no, want: Owner}}},
		{"heartbeats every second: owner throughout", []step{
			{wait: time.Second, renew: 0, want: Owner},
			{wait: time.Second, renew: 0, want: Owner},
			{wait: 11 * time.Second, renew: no, want: Owner},
		}},
		{"exactly GoneAfter less a BeatTTL since: still owner", []step{
			{wait: 12 * time.Second, renew: no, want: Owner},
		}},
		{"past it: fenced, before anyone adopts (15 s)", []step{
			{wait: 12*time.Second + time.Millisecond, renew: no, want: Fenced},
		}},
		{"timed from when the heartbeat was sent, not answered", []step{
			{wait: time.Second, renew: 900 * time.Millisecond, want: Owner}, // sent at 0.1 s
			{wait: 12 * time.Second, renew: no, want: Fenced},               // 12.9 s since it was sent
		}},
		{"renewed after a lapse: rejoining, not owner", []step{
			{wait: 13 * time.Second, renew: no, want: Fenced},
			{wait: time.Second, renew: 0, want: Rejoining},
			{wait: time.Second, renew: 0, want: Rejoining},
		}},
		{"a lapse nobody looked at still counts", []step{
			{wait: 20 * time.Second, renew: 0, want: Rejoining},
		}},
		{"checked: owner again", []step{
			{wait: 13 * time.Second, renew: no, want: Fenced},
			{wait: time.Second, renew: 0, want: Rejoining},
			{confirm: true, renew: no, want: Owner, wantOK: true},
			{wait: time.Second, renew: 0, want: Owner},
		}},
		{"confirm while still fenced does nothing", []step{
			{wait: 13 * time.Second, renew: no, want: Fenced},
			{confirm: true, renew: no, want: Fenced},
			{wait: time.Second, renew: 0, want: Rejoining},
		}},
		{"confirm of an earlier epoch does nothing: cut off again while checking", []step{
			{wait: 13 * time.Second, renew: no, want: Fenced},
			{wait: time.Second, renew: 0, want: Rejoining}, // epoch e
			{wait: 13 * time.Second, renew: no, want: Fenced},
			{wait: time.Second, renew: 0, want: Rejoining}, // epoch e+1
			{stale: true, renew: no, want: Rejoining},
			{confirm: true, renew: no, want: Owner, wantOK: true},
		}},
		{"an old heartbeat answered late renews nothing", []step{
			{wait: 13 * time.Second, renew: 13 * time.Second, want: Fenced},
		}},
		{"owner again, then cut off again: fenced again", []step{
			{wait: 13 * time.Second, renew: 0, want: Rejoining},
			{confirm: true, renew: no, want: Owner, wantOK: true},
			{wait: 12*time.Second + time.Millisecond, renew: no, want: Fenced},
			{wait: 0, renew: 0, want: Rejoining},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1_000_000, 0)
			l := NewLease(GoneAfter, func() time.Time { return now })
			var epoch, prev uint64
			for i, s := range tc.steps {
				now = now.Add(s.wait)
				if s.renew >= 0 {
					l.Renewed(now.Add(-s.renew))
				}
				if e, ok := l.Rejoining(); ok && e != epoch {
					prev, epoch = epoch, e
				}
				if s.confirm || s.stale {
					e := epoch
					if s.stale {
						e = prev
					}
					if ok := l.Confirm(e); ok != s.wantOK {
						t.Fatalf("step %d: Confirm = %v, want %v", i, ok, s.wantOK)
					}
				}
				if got := l.Standing(); got != s.want {
					t.Fatalf("step %d: %v, want %v (since %v)", i, got, s.want, l.Since())
				}
				if l.Owner() != (s.want == Owner) {
					t.Fatalf("step %d: Owner() = %v in %v", i, l.Owner(), s.want)
				}
				if left := l.Left(); s.want == Owner && (left < 0 || left > GoneAfter-BeatTTL) || s.want != Owner && left != 0 {
					t.Fatalf("step %d: Left() = %v in %v", i, left, s.want)
				}
			}
		})
	}
}

// TestFenceAfter: the margin is a BeatTTL, never leaving less than a
// BeatEvery (a GoneAfter shortened in tests).
func TestFenceAfter(t *testing.T) {
	for _, tc := range []struct{ gone, want time.Duration }{
		{GoneAfter, GoneAfter - BeatTTL},
		{5 * time.Second, 2 * time.Second},
		{3 * time.Second, BeatEvery},
		{0, BeatEvery},
	} {
		if got := fenceAfter(tc.gone); got != tc.want {
			t.Errorf("fenceAfter(%v) = %v, want %v", tc.gone, got, tc.want)
		}
	}
}
