package icelite

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// TestConsent plays a browser's checks on a fake clock: consent lasts the
// timeout after the last valid check on the selected path (RFC 7675 §5.1),
// and only that path's checks renew it.
func TestConsent(t *testing.T) {
	a := netip.MustParseAddrPort("127.0.0.30:1000")
	b := netip.MustParseAddrPort("127.0.0.31:2000")
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	type step struct {
		at       time.Duration // since t0
		from     netip.AddrPort
		nominate bool
		badPwd   bool
		// then, at the same instant:
		path  netip.AddrPort // want Consent.Path (invalid: none)
		last  time.Duration  // want Consent.Last - t0 (-1: zero)
		fresh bool
	}
	none := netip.AddrPort{}
	tests := []struct {
		name    string
		timeout time.Duration
		steps   []step // a step without from only reads Consent
	}{
		{name: "no check yet", steps: []step{{at: 0, path: none, last: -1}}},
		{name: "a failed check gives no consent", steps: []step{
			{at: 0, from: a, badPwd: true, path: none, last: -1},
		}},
		{name: "expires 30 s after the last check", steps: []step{
			{at: 0, from: a, nominate: true, path: a, last: 0, fresh: true},
			{at: 5 * time.Second, from: a, path: a, last: 5 * time.Second, fresh: true},
			{at: 34 * time.Second, path: a, last: 5 * time.Second, fresh: true},
			{at: 35 * time.Second, path: a, last: 5 * time.Second, fresh: false},
			{at: 90 * time.Second, path: a, last: 5 * time.Second, fresh: false},
		}},
		{name: "a fresh check gives it again", steps: []step{
			{at: 0, from: a, nominate: true, path: a, last: 0, fresh: true},
			{at: 40 * time.Second, path: a, last: 0, fresh: false},
			{at: 41 * time.Second, from: a, path: a, last: 41 * time.Second, fresh: true},
		}},
		{name: "checks on another candidate do not renew the nominated path", steps: []step{
			{at: 0, from: a, nominate: true, path: a, last: 0, fresh: true},
			{at: 10 * time.Second, from: b, path: a, last: 0, fresh: true},
			{at: 29 * time.Second, from: b, path: a, last: 0, fresh: true},
			{at: 30 * time.Second, path: a, last: 0, fresh: false},
		}},
		{name: "a wrong password does not renew", steps: []step{
			{at: 0, from: a, nominate: true, path: a, last: 0, fresh: true},
			{at: 20 * time.Second, from: a, badPwd: true, path: a, last: 0, fresh: true},
			{at: 30 * time.Second, path: a, last: 0, fresh: false},
		}},
		{name: "a new nomination moves consent to its path", steps: []step{
			{at: 0, from: a, nominate: true, path: a, last: 0, fresh: true},
			{at: 31 * time.Second, from: b, nominate: true, path: b, last: 31 * time.Second, fresh: true},
			{at: 40 * time.Second, from: a, path: b, last: 31 * time.Second, fresh: true},
		}},
		{name: "without nomination the last checked path is the one", steps: []step{
			{at: 0, from: a, path: a, last: 0, fresh: true},
			{at: 1 * time.Second, from: b, path: b, last: 1 * time.Second, fresh: true},
		}},
		{name: "a short timeout for tests", timeout: 2 * time.Second, steps: []step{
			{at: 0, from: a, nominate: true, path: a, last: 0, fresh: true},
			{at: 1999 * time.Millisecond, path: a, last: 0, fresh: true},
			{at: 2 * time.Second, path: a, last: 0, fresh: false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ag, err := New(local)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				if s.from.IsValid() {
					pwd := local.Pwd
					if s.badPwd {
						pwd = "someoneelsespassword1234"
					}
					set := []stun.Setter{stun.NewUsername("anch:brow"), controlling()}
					if s.nominate {
						set = append(set, stun.RawAttribute{Type: stun.AttrUseCandidate})
					}
					res, err := ag.HandleAt(check(t, append(set, stun.NewShortTermIntegrity(pwd), stun.Fingerprint)...), s.from, now)
					if res.Valid == s.badPwd {
						t.Fatalf("step %d: valid %v (%v)", i, res.Valid, err)
					}
				}
				c := ag.Consent(now, tt.timeout)
				wantLast := time.Time{}
				if s.last >= 0 {
					wantLast = t0.Add(s.last)
				}
				if c.Path != s.path || !c.Last.Equal(wantLast) || c.Fresh != s.fresh {
					t.Fatalf("step %d at %s: %+v, want path %v last %v fresh %v", i, s.at, c, s.path, wantLast, s.fresh)
				}
			}
		})
	}
}
