package tollfraud

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

func TestLimits(t *testing.T) {
	ctx := context.Background()
	type step struct {
		begin, end string // Call-ID to begin (for user) or to end
		user       string
		after      time.Duration // clock moves on before the step
		want       string        // "" ok, "concurrent", "hourly"
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"two at once, the third is refused, an ended one frees a place", []step{
			{begin: "c1", user: "alice"}, {begin: "c2", user: "alice"},
			{begin: "c3", user: "alice", want: "concurrent"},
			{end: "c1"}, {begin: "c4", user: "alice"},
		}},
		{"users count apart", []step{
			{begin: "c1", user: "alice"}, {begin: "c2", user: "alice"}, {begin: "c3", user: "bob"},
		}},
		{"a spiral is counted once", []step{
			{begin: "c1", user: "alice"}, {begin: "c1", user: "alice"}, {begin: "c2", user: "alice"},
		}},
		{"five an hour: the sixth is refused, the next hour is new", []step{
			{begin: "c1", user: "alice"}, {end: "c1"}, {begin: "c2", user: "alice"}, {end: "c2"},
			{begin: "c3", user: "alice"}, {end: "c3"}, {begin: "c4", user: "alice"}, {end: "c4"},
			{begin: "c5", user: "alice"}, {end: "c5"}, {begin: "c6", user: "alice", want: "hourly"},
			{begin: "c7", user: "alice", after: time.Hour},
		}},
		{"a refused hourly call does not hold a place", []step{
			{begin: "c1", user: "carol"}, {begin: "c2", user: "carol", want: "hourly"}, {end: "c1"},
			{begin: "c3", user: "carol", want: "hourly"},
		}},
		{"a call that never ends stops counting at its deadline", []step{
			{begin: "c1", user: "alice"}, {begin: "c2", user: "alice"},
			{begin: "c3", user: "alice", after: 13 * time.Hour},
		}},
		{"a user with no limits", []step{
			{begin: "c1", user: "pbx"}, {begin: "c2", user: "pbx"}, {begin: "c3", user: "pbx"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
			g := New(Limits{MaxCalls: 2, CallsPerHour: 5},
				map[string]Limits{"carol": {MaxCalls: 2, CallsPerHour: 1}, "pbx": {}}, nil, 12*time.Hour, nil)
			g.now = func() time.Time { return now }
			for i, s := range tt.steps {
				now = now.Add(s.after)
				if s.end != "" {
					g.End(s.end)
					continue
				}
				err := g.Begin(ctx, s.user, s.begin)
				got := ""
				var le *LimitError
				if errors.As(err, &le) {
					got = le.Limit
				} else if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got != s.want {
					t.Fatalf("step %d (%s for %s): refused %q, want %q", i, s.begin, s.user, got, s.want)
				}
			}
		})
	}
}

func TestReasonNamesTheLimit(t *testing.T) {
	if r := (&LimitError{Limit: "concurrent", Max: 3}).Reason(); r != "Trunk Call Limit (3 At Once)" {
		t.Error(r)
	}
	if r := (&LimitError{Limit: "hourly", Max: 60}).Reason(); r != "Hourly Trunk Call Limit (60)" {
		t.Error(r)
	}
}

// Two nodes count one user's hourly calls in one Redis key.
func TestRedisHourlyCountIsShared(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	ctx := context.Background()
	a := New(Limits{CallsPerHour: 3}, nil, NewRedisCounter(rdb), time.Hour, nil)
	b := New(Limits{CallsPerHour: 3}, nil, NewRedisCounter(rdb), time.Hour, nil)
	for i, g := range []*Guard{a, b, a} {
		if err := g.Begin(ctx, "alice", "call-"+string(rune('a'+i))); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	var le *LimitError
	if err := b.Begin(ctx, "alice", "call-d"); !errors.As(err, &le) || le.Limit != "hourly" {
		t.Fatalf("the 4th call of the hour on the other node: %v", err)
	}
	k := HourKey("alice", time.Now().UTC().Truncate(time.Hour))
	if n, _ := rdb.Get(ctx, k).Int(); n != 4 {
		t.Fatalf("%s = %d, want 4", k, n)
	}
	if ttl := rdb.TTL(ctx, k).Val(); ttl <= time.Hour || ttl > 2*time.Hour {
		t.Fatalf("%s expires in %v", k, ttl)
	}
	rs.Stop()
	if err := a.Begin(ctx, "alice", "call-e"); err == nil || errors.As(err, &le) {
		t.Fatalf("with Redis down: %v, want a store error", err)
	}
	if a.Active("alice") != 2 {
		t.Fatalf("a counts %d calls in progress, want 2 (the refused one released)", a.Active("alice"))
	}
}

// A call resumed from another node (or before a restart) is in progress
// here, with no limit checked and its hour not counted again; End frees it.
func TestResumeCountsWithoutLimitsOrHour(t *testing.T) {
	ctx := context.Background()
	hourly := NewMemoryCounter()
	g := New(Limits{MaxCalls: 1, CallsPerHour: 1}, nil, hourly, time.Hour, nil)
	if err := g.Begin(ctx, "alice", "here"); err != nil {
		t.Fatal(err)
	}
	g.Resume("alice", "loaded")
	g.Resume("alice", "loaded") // twice: once
	if n := g.Active("alice"); n != 2 {
		t.Fatalf("%d active, want 2 (over MaxCalls: a resumed call is not refused)", n)
	}
	if n, _ := hourly.Incr(ctx, "alice", time.Now().UTC().Truncate(time.Hour)); n != 2 {
		t.Fatalf("hour count %d after this Incr, want 2: Resume counted the hour", n)
	}
	g.End("loaded")
	g.End("here")
	if n := g.Active("alice"); n != 0 {
		t.Fatalf("%d active after End", n)
	}
}
