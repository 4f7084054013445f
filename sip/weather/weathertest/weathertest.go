// Package weathertest is the contract every weather.Aggregator passes,
// and the records it is checked with. A backend's own test calls Run with
// a function opening a fresh, empty aggregator.
package weathertest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/weather"
)

// Clock is a settable clock for the aggregator under test.
type Clock struct{ ns atomic.Int64 }

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock {
	c := &Clock{}
	c.Set(t)
	return c
}

// Now is the clock's time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Open returns a fresh, empty aggregator reading the time from now and
// keeping hours for retention.
type Open func(t *testing.T, now func() time.Time, retention time.Duration) weather.Aggregator

// Run runs the whole contract.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Open)
	}{
		{"figures of one cell", figures},
		{"downlink estimated from the other side", downlink},
		{"grouping by each dimension", grouping},
		{"tag totals are not counted twice", tagTotals},
		{"hour range", hourRange},
		{"min calls", minCalls},
		{"retention drops old hours", retention},
		{"concurrent adds lose nothing", concurrent},
		{"bad queries", badQueries},
		{"rebuild replaces", rebuild},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open) })
	}
}

var ctx = context.Background()

// Base is the hour the contract's records start in: recent, so a real
// server's expiry (from the real clock) keeps them.
func Base() time.Time { return time.Now().UTC().Truncate(time.Hour).Add(-6 * time.Hour) }

// Side returns an uplink-only side: sent packets, lost of them, jitter, MOS.
func Side(network, access string, sent, lost int64, jitter int64, mos float64, tags map[string]string) *calls.MediaQuality {
	q := &calls.MediaQuality{Network: network, Access: access, Sent: sent, Lost: lost, JitterMS: jitter, MOS: mos, Tags: tags}
	if sent > 0 {
		q.LossPct = math.Round(10000*float64(lost)/float64(sent)) / 100
	}
	return q
}

// Record returns an answered call at t with the sides given (nil: none).
func Record(id string, t time.Time, caller, callee *calls.MediaQuality) calls.Record {
	a := t
	return calls.Record{CallID: id, Start: t.Add(-3 * time.Second), Answer: &a, End: t.Add(time.Minute),
		Code: 200, Disposition: calls.Answered, CallerMedia: caller, CalleeMedia: callee}
}

func add(t *testing.T, a weather.Aggregator, recs ...calls.Record) {
	t.Helper()
	for _, r := range recs {
		if err := a.Add(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
}

func query(t *testing.T, a weather.Aggregator, q weather.Query) []weather.Row {
	t.Helper()
	rows, err := a.Query(ctx, q)
	if err != nil {
		t.Fatalf("query %+v: %v", q, err)
	}
	return rows
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

// figures: 50 call sides in one cell, 5 of them at 2 % loss and MOS 3.9,
// the others clean at 4.4.
func figures(t *testing.T, open Open) {
	base := Base()
	clock := NewClock(base.Add(2 * time.Hour))
	a := open(t, clock.Now, 0)
	for i := range 50 {
		lost, mos := int64(0), 4.4
		if i < 5 {
			lost, mos = 20, 3.9
		}
		add(t, a, Record(fmt.Sprint("c", i), base.Add(time.Duration(i)*time.Minute), Side("carrier-a", "lte", 1000, lost, 10, mos, nil), nil))
	}
	rows := query(t, a, weather.Query{From: base, To: base.Add(time.Hour), By: []string{"network", "hop"}})
	if len(rows) != 1 {
		t.Fatalf("rows %+v", rows)
	}
	r := rows[0]
	if r.Dims["network"] != "carrier-a" || r.Dims["hop"] != weather.Uplink {
		t.Fatalf("dims %v", r.Dims)
	}
	if r.Calls != 50 || r.Expected != 50000 || r.Lost != 100 || r.LossPct == nil || *r.LossPct != 0.2 {
		t.Fatalf("counts %+v", r)
	}
	// Wilson 95 % for 5/50: [0.0435, 0.2136].
	if r.Over1.Count != 5 || r.Over1.Share != 0.1 || !near(r.Over1.Lo, 0.0435, 0.0001) || !near(r.Over1.Hi, 0.2136, 0.0001) {
		t.Fatalf("over1 %+v", r.Over1)
	}
	if r.Over5.Count != 0 || r.Over5.Lo != 0 || r.Over5.Hi != 0.0713 /* z²/(n+z²) */ {
		t.Fatalf("over5 %+v", r.Over5)
	}
	// 45 of 50 at 0 %: the median and the 90th percentile are 0; the 95th
	// would fall in the (1, 2] bin.
	if r.P50LossPct != 0 || r.P90LossPct != 0 {
		t.Fatalf("percentiles %v %v", r.P50LossPct, r.P90LossPct)
	}
	// Mean 4.35, s = √(1.125/49), half-width 1.96·s/√50 = 0.042.
	if r.MOS == nil || r.MOS.N != 50 || r.MOS.Mean != 4.35 || r.MOS.Lo == nil || !near(*r.MOS.Lo, 4.308, 0.001) || !near(*r.MOS.Hi, 4.392, 0.001) {
		t.Fatalf("mos %+v", r.MOS)
	}
	if r.JitterMS != 10 || !r.Enough || r.Value == nil || *r.Value != 0.1 {
		t.Fatalf("row %+v", r)
	}
	for metric, want := range map[string]float64{"loss": 0.2, "mos": 4.35, "p90": 0, "over5": 0, "jitter": 10} {
		rows := query(t, a, weather.Query{From: base, To: base.Add(time.Hour), By: []string{"network"}, Metric: metric})
		if len(rows) != 1 || rows[0].Value == nil || *rows[0].Value != want {
			t.Fatalf("metric %s: %+v", metric, rows)
		}
	}
}

// downlink: the callee reports 3 % lost of what the anchor relayed to it
// (the caller's 1000 sent less 10 lost before the anchor).
func downlink(t *testing.T, open Open) {
	base := Base()
	a := open(t, NewClock(base.Add(time.Hour)).Now, 0)
	caller := Side("carrier-a", "lte", 1000, 10, 5, 4.3, nil)
	callee := Side("carrier-b", "wifi", 800, 0, 7, 4.4, nil)
	callee.DownLossPct, callee.DownJitterMS = 3, 12
	add(t, a, Record("d1", base, caller, callee))
	rows := query(t, a, weather.Query{From: base, To: base.Add(time.Hour), By: []string{"network", "hop", "access"}})
	want := []struct {
		network, hop, access string
		expected, lost       int64
		jitter               float64
		mos                  bool
	}{
		{"carrier-a", weather.Uplink, "lte", 1000, 10, 5, true},
		{"carrier-b", weather.Downlink, "wifi", 990, 30, 12, false},
		{"carrier-b", weather.Uplink, "wifi", 800, 0, 7, true},
	}
	if len(rows) != len(want) {
		t.Fatalf("rows %+v", rows)
	}
	for i, w := range want {
		r := rows[i]
		if r.Dims["network"] != w.network || r.Dims["hop"] != w.hop || r.Dims["access"] != w.access ||
			r.Calls != 1 || r.Expected != w.expected || r.Lost != w.lost || r.JitterMS != w.jitter || (r.MOS != nil) != w.mos || r.Enough {
			t.Fatalf("row %d: %+v, want %+v", i, r, w)
		}
	}
	if rows[1].Over1.Count != 1 || rows[1].Over5.Count != 0 {
		t.Fatalf("downlink shares %+v", rows[1])
	}
}

// Records returns n varied records over the 6 hours from base, the same
// for the same seed: three networks of different loss, four access
// types, two tag keys (some sides untagged), downlink reports on most.
func Records(seed uint64, n int, base time.Time) []calls.Record {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	nets := []string{"carrier-a", "carrier-b", "carrier-c", ""}
	lossOf := map[string]float64{"carrier-a": 0.3, "carrier-b": 2, "carrier-c": 6, "": 1}
	access := []string{"lte", "nr", "wifi", "3g", ""}
	plans := []string{"lte-62", "5g-unl", "wifi-only"}
	devices := []string{"android", "ios"}
	side := func() *calls.MediaQuality {
		if rng.IntN(20) == 0 {
			return nil
		}
		network := nets[rng.IntN(len(nets))]
		sent := int64(500 + rng.IntN(5000))
		lost := int64(math.Round(float64(sent) * lossOf[network] / 100 * rng.ExpFloat64()))
		lost = min(lost, sent)
		var tags map[string]string
		if rng.IntN(4) != 0 {
			tags = map[string]string{"plan": plans[rng.IntN(len(plans))]}
			if rng.IntN(2) == 0 {
				tags["device"] = devices[rng.IntN(len(devices))]
			}
		}
		mos := math.Round(10*max(1, 4.4-0.12*100*float64(lost)/float64(sent))) / 10
		q := Side(network, access[rng.IntN(len(access))], sent, lost, int64(rng.IntN(80)), mos, tags)
		if rng.IntN(5) != 0 {
			q.DownLossPct = math.Round(100*lossOf[network]*rng.ExpFloat64()) / 100
			q.DownJitterMS = int64(rng.IntN(60))
			q.RTTMS = int64(20 + rng.IntN(200))
		}
		return q
	}
	out := make([]calls.Record, n)
	for i := range out {
		t := base.Add(time.Duration(rng.Int64N(int64(6 * time.Hour))))
		out[i] = Record(fmt.Sprintf("r%d-%d", seed, i), t, side(), side())
	}
	return out
}

// Queries are the groupings the contract compares backends on.
var Queries = [][]string{
	nil, {"network"}, {"hop"}, {"access"}, {"hour"}, {"tag:plan"}, {"tag:device"},
	{"network", "hop"}, {"network", "hour", "hop"}, {"network", "access", "hop"},
	{"hop", "tag:plan"}, {"network", "hour", "tag:device"}, {"hour", "network", "hop", "access", "tag:plan"},
}

func sum(rows []weather.Row) (calls, expected, lost int64) {
	for _, r := range rows {
		calls += r.Calls
		expected += r.Expected
		lost += r.Lost
	}
	return
}

// expect folds recs with weather.Observe directly, the reference the
// backends must match.
func expect(q weather.Query, recs []calls.Record) []weather.Row {
	var obs []weather.Observation
	for _, r := range recs {
		obs = append(obs, weather.Observe(r)...)
	}
	return weather.Group(q, obs)
}

func grouping(t *testing.T, open Open) {
	base := Base()
	a := open(t, NewClock(base.Add(6*time.Hour)).Now, 0)
	recs := Records(1, 400, base)
	add(t, a, recs...)
	all := weather.Query{From: base, To: base.Add(6 * time.Hour)}
	total := query(t, a, all)
	if len(total) != 1 {
		t.Fatalf("no grouping: %d rows", len(total))
	}
	for _, by := range Queries {
		q := all
		q.By = by
		rows := query(t, a, q)
		if want := expect(q, recs); !reflect.DeepEqual(rows, want) {
			t.Fatalf("by %v: got\n%+v\nwant\n%+v", by, rows, want)
		}
		seen := map[string]bool{}
		for _, r := range rows {
			if len(r.Dims) != len(by) {
				t.Fatalf("by %v: dims %v", by, r.Dims)
			}
			k := fmt.Sprint(r.Dims)
			if seen[k] {
				t.Fatalf("by %v: %s twice", by, k)
			}
			seen[k] = true
		}
		if q.TagKey() == "" {
			if c, e, l := sum(rows); c != total[0].Calls || e != total[0].Expected || l != total[0].Lost {
				t.Fatalf("by %v: sums %d %d %d, total %+v", by, c, e, l, total[0])
			}
		}
	}
	// The values each dimension takes.
	values := func(dim string) map[string]bool {
		q := all
		q.By = []string{dim}
		m := map[string]bool{}
		for _, r := range query(t, a, q) {
			m[r.Dims[dim]] = true
		}
		return m
	}
	for dim, want := range map[string][]string{
		"network":  {"carrier-a", "carrier-b", "carrier-c", weather.OtherNetwork},
		"hop":      {weather.Uplink, weather.Downlink},
		"access":   {"lte", "nr", "wifi", "3g", weather.AccessUnknown},
		"tag:plan": {"lte-62", "5g-unl", "wifi-only"},
	} {
		got := values(dim)
		if len(got) != len(want) {
			t.Fatalf("%s: %v, want %v", dim, got, want)
		}
		for _, w := range want {
			if !got[w] {
				t.Fatalf("%s: %v, want %v", dim, got, want)
			}
		}
	}
	if got := values("hour"); len(got) != 6 {
		t.Fatalf("hours %v", got)
	}
	// Worse networks come out worse.
	q := all
	q.By = []string{"network"}
	share := map[string]float64{}
	for _, r := range query(t, a, q) {
		share[r.Dims["network"]] = r.Over1.Share
	}
	if !(share["carrier-a"] < share["carrier-b"] && share["carrier-b"] < share["carrier-c"]) {
		t.Fatalf("over-1 %% shares %v", share)
	}
}

// tagTotals: a side tagged plan and device is one call in the totals, one
// in its plan and one in its device.
func tagTotals(t *testing.T, open Open) {
	base := Base()
	a := open(t, NewClock(base.Add(time.Hour)).Now, 0)
	add(t, a,
		Record("t1", base, Side("carrier-a", "lte", 1000, 0, 1, 4.4, map[string]string{"plan": "lte-62", "device": "android"}), nil),
		Record("t2", base, Side("carrier-a", "lte", 1000, 0, 1, 4.4, map[string]string{"plan": "lte-62"}), nil),
		Record("t3", base, Side("carrier-a", "lte", 1000, 0, 1, 4.4, nil), nil))
	h := weather.Query{From: base, To: base.Add(time.Hour)}
	check := func(by string, want map[string]int64) {
		t.Helper()
		q := h
		q.By = []string{by}
		got := map[string]int64{}
		for _, r := range query(t, a, q) {
			got[r.Dims[by]] = r.Calls
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("by %s: %v, want %v", by, got, want)
		}
	}
	check("network", map[string]int64{"carrier-a": 3})
	check("tag:plan", map[string]int64{"lte-62": 2})
	check("tag:device", map[string]int64{"android": 1})
	check("tag:none", map[string]int64{})
}

func hourRange(t *testing.T, open Open) {
	base := Base()
	a := open(t, NewClock(base.Add(6*time.Hour)).Now, 0)
	for i := range 4 {
		add(t, a, Record(fmt.Sprint("h", i), base.Add(time.Duration(i)*time.Hour+30*time.Minute), Side("carrier-a", "lte", 100, 0, 1, 4.4, nil), nil))
	}
	for _, tt := range []struct {
		from, to time.Duration
		want     int64
	}{
		{0, 4 * time.Hour, 4},
		{45 * time.Minute, 2 * time.Hour, 2},          // From's hour is included, To's is not
		{time.Hour, time.Hour + time.Minute, 1},       // a To inside an hour includes it
		{3 * time.Hour, 10 * time.Hour, 1},            // beyond the data
		{-48 * time.Hour, -47 * time.Hour, 0},         // before it
		{2*time.Hour - time.Second, 2 * time.Hour, 1}, // one second of an hour is that hour
	} {
		rows := query(t, a, weather.Query{From: base.Add(tt.from), To: base.Add(tt.to)})
		c, _, _ := sum(rows)
		if c != tt.want {
			t.Errorf("[%v, %v): %d calls, want %d", tt.from, tt.to, c, tt.want)
		}
	}
}

// minCalls: a cell of 29 calls is not Enough at the default, 30 is.
func minCalls(t *testing.T, open Open) {
	base := Base()
	a := open(t, NewClock(base.Add(time.Hour)).Now, 0)
	for i := range 29 {
		add(t, a, Record(fmt.Sprint("m", i), base, Side("small", "lte", 100, 0, 1, 4.4, nil), nil))
	}
	for i := range 30 {
		add(t, a, Record(fmt.Sprint("n", i), base, Side("large", "lte", 100, 0, 1, 4.4, nil), nil))
	}
	q := weather.Query{From: base, To: base.Add(time.Hour), By: []string{"network"}}
	enough := map[string]bool{}
	for _, r := range query(t, a, q) {
		enough[r.Dims["network"]] = r.Enough
	}
	if !reflect.DeepEqual(enough, map[string]bool{"small": false, "large": true}) {
		t.Fatalf("enough %v", enough)
	}
	q.MinCalls = 10
	for _, r := range query(t, a, q) {
		if !r.Enough {
			t.Fatalf("min calls 10: %+v", r)
		}
	}
}

func retention(t *testing.T, open Open) {
	now := time.Now().UTC()
	clock := NewClock(now)
	a := open(t, clock.Now, 48*time.Hour)
	old := Record("old", now.Add(-50*time.Hour), Side("carrier-a", "lte", 100, 0, 1, 4.4, nil), nil)
	recent := Record("recent", now.Add(-30*time.Hour), Side("carrier-a", "lte", 100, 0, 1, 4.4, nil), nil)
	fresh := Record("fresh", now.Add(-time.Hour), Side("carrier-a", "lte", 100, 0, 1, 4.4, nil), nil)
	add(t, a, old, recent, fresh)
	hours := func() map[string]int64 {
		t.Helper()
		m := map[string]int64{}
		for _, r := range query(t, a, weather.Query{From: now.Add(-60 * time.Hour), To: now.Add(time.Hour), By: []string{"hour"}}) {
			m[r.Dims["hour"]] = r.Calls
		}
		return m
	}
	key := func(r calls.Record) string { return weather.Hour(r).Format(time.RFC3339) }
	if got, want := hours(), map[string]int64{key(recent): 1, key(fresh): 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("a record older than the retention was kept: %v, want %v", got, want)
	}
	clock.Set(now.Add(20 * time.Hour)) // recent's hour ended more than 48 h ago
	if got, want := hours(), map[string]int64{key(fresh): 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after 20 h: %v, want %v", got, want)
	}
}

func concurrent(t *testing.T, open Open) {
	base := Base()
	a := open(t, NewClock(base.Add(time.Hour)).Now, 0)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				tags := map[string]string{"plan": fmt.Sprint("p", g%2)}
				if err := a.Add(ctx, Record(fmt.Sprint(g, "-", i), base, Side("carrier-a", "lte", 100, 2, 1, 4.0, tags), nil)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rows := query(t, a, weather.Query{From: base, To: base.Add(time.Hour)})
	if len(rows) != 1 || rows[0].Calls != 200 || rows[0].Expected != 20000 || rows[0].Lost != 400 || rows[0].Over1.Count != 200 || rows[0].MOS.N != 200 {
		t.Fatalf("rows %+v", rows)
	}
}

func badQueries(t *testing.T, open Open) {
	base := Base()
	a := open(t, NewClock(base).Now, 0)
	ok := weather.Query{From: base, To: base.Add(time.Hour)}
	for _, tt := range []struct {
		param string
		edit  func(q *weather.Query)
	}{
		{"from", func(q *weather.Query) { q.From = time.Time{} }},
		{"to", func(q *weather.Query) { q.To = time.Time{} }},
		{"to", func(q *weather.Query) { q.To = q.From }},
		{"by", func(q *weather.Query) { q.By = []string{"city"} }},
		{"by", func(q *weather.Query) { q.By = []string{"network", "network"} }},
		{"by", func(q *weather.Query) { q.By = []string{"tag:plan", "tag:device"} }},
		{"by", func(q *weather.Query) { q.By = []string{"tag:"} }},
		{"metric", func(q *weather.Query) { q.Metric = "r-factor" }},
		{"min_calls", func(q *weather.Query) { q.MinCalls = -1 }},
	} {
		q := ok
		tt.edit(&q)
		_, err := a.Query(ctx, q)
		var pe *weather.ParamError
		if !errors.As(err, &pe) || pe.Param != tt.param {
			t.Errorf("%+v: %v, want a ParamError for %s", q, err, tt.param)
		}
	}
}

// rebuild: Rebuild clears what was there (when the backend can) and adds
// the stream's records.
func rebuild(t *testing.T, open Open) {
	base := Base()
	a := open(t, NewClock(base.Add(6*time.Hour)).Now, 0)
	recs := Records(2, 100, base)
	add(t, a, recs[:30]...)
	seq := func(yield func(calls.Record, error) bool) {
		for _, r := range recs {
			if !yield(r, nil) {
				return
			}
		}
	}
	n, err := weather.Rebuild(ctx, a, seq)
	if err != nil || n != len(recs) {
		t.Fatalf("rebuild: %d, %v", n, err)
	}
	q := weather.Query{From: base, To: base.Add(6 * time.Hour), By: []string{"network", "hop"}}
	if _, ok := a.(weather.Clearer); ok {
		if got, want := query(t, a, q), expect(q, recs); !reflect.DeepEqual(got, want) {
			t.Fatalf("after rebuild:\n%+v\nwant\n%+v", got, want)
		}
	}
	bad := func(yield func(calls.Record, error) bool) {
		if yield(recs[0], nil) {
			yield(calls.Record{}, errors.New("line 2: broken"))
		}
	}
	if n, err := weather.Rebuild(ctx, a, bad); err == nil || n != 1 {
		t.Fatalf("a broken stream: %d, %v", n, err)
	}
}

// Same checks that a and b, fed the same records, answer every query of
// Queries and every metric identically.
func Same(t *testing.T, a, b weather.Aggregator, recs []calls.Record, from, to time.Time) {
	t.Helper()
	add(t, a, recs...)
	add(t, b, recs...)
	for _, by := range Queries {
		for _, metric := range weather.Metrics {
			q := weather.Query{From: from, To: to, By: by, Metric: metric}
			ra, rb := query(t, a, q), query(t, b, q)
			if len(ra) == 0 {
				t.Fatalf("by %v: no rows", by)
			}
			if !reflect.DeepEqual(ra, rb) {
				t.Fatalf("by %v metric %s differ:\n%+v\n%+v", by, metric, ra, rb)
			}
		}
	}
}
