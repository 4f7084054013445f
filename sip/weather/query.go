package weather

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/sori-voice/sori/sip/weather/stats"
)

// DefaultMinCalls is the number of calls below which a row's figures are
// not presented as comparable (Row.Enough is false).
const DefaultMinCalls = 30

// Dimensions a Query can group by.
const (
	DimNetwork = "network"
	DimHop     = "hop"
	DimAccess  = "access"
	DimHour    = "hour"
	DimTag     = "tag:" // followed by the tag's key
)

// Metrics a Query can name for Row.Value.
const (
	MetricOver1  = "over1"  // share of calls above 1 % loss (the default)
	MetricOver5  = "over5"  // share of calls above 5 % loss
	MetricLoss   = "loss"   // packets lost / expected, %
	MetricP50    = "p50"    // median per-call loss, %
	MetricP90    = "p90"    // 90th percentile per-call loss, %
	MetricMOS    = "mos"    // mean MOS
	MetricJitter = "jitter" // mean jitter, ms
)

// Metrics lists every metric, the default first.
var Metrics = []string{MetricOver1, MetricOver5, MetricLoss, MetricP50, MetricP90, MetricMOS, MetricJitter}

// Query asks for the cells of the hours in [From, To), grouped by the
// dimensions in By and merged. The hour From falls in is included.
type Query struct {
	From, To time.Time
	// By is any of network, hop, access, hour and at most one tag:KEY.
	// With no tag dimension only the totals are read; with tag:KEY only
	// the sides whose user has that tag, grouped by its value.
	By       []string
	Metric   string // one of Metrics; "" is over1
	MinCalls int    // Row.Enough threshold; 0 is DefaultMinCalls
}

// ParamError is a bad Query field, named as the HTTP API and the command
// line name it.
type ParamError struct {
	Param string // from, to, by, metric, min_calls
	Msg   string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Msg }

// Check validates q.
func (q Query) Check() error {
	switch {
	case q.From.IsZero():
		return &ParamError{"from", "missing"}
	case q.To.IsZero():
		return &ParamError{"to", "missing"}
	case !q.From.Before(q.To):
		return &ParamError{"to", fmt.Sprintf("%s is not after from (%s)", q.To.UTC().Format(time.RFC3339), q.From.UTC().Format(time.RFC3339))}
	}
	seen := map[string]bool{}
	tags := 0
	for _, d := range q.By {
		switch {
		case d == DimNetwork || d == DimHop || d == DimAccess || d == DimHour:
		case strings.HasPrefix(d, DimTag):
			if !ValidTagKey(strings.TrimPrefix(d, DimTag)) {
				return &ParamError{"by", fmt.Sprintf("%q names no tag key", d)}
			}
			if tags++; tags > 1 {
				return &ParamError{"by", "at most one tag:KEY (cells are kept per single tag)"}
			}
		default:
			return &ParamError{"by", fmt.Sprintf("unknown dimension %q (network, hop, access, hour, tag:KEY)", d)}
		}
		if seen[d] {
			return &ParamError{"by", fmt.Sprintf("%q given twice", d)}
		}
		seen[d] = true
	}
	if q.Metric != "" && !slices.Contains(Metrics, q.Metric) {
		return &ParamError{"metric", fmt.Sprintf("unknown metric %q (%s)", q.Metric, strings.Join(Metrics, ", "))}
	}
	if q.MinCalls < 0 {
		return &ParamError{"min_calls", "negative"}
	}
	return nil
}

// TagKey is the key of q's tag dimension, "" when it has none.
func (q Query) TagKey() string {
	for _, d := range q.By {
		if k, ok := strings.CutPrefix(d, DimTag); ok {
			return k
		}
	}
	return ""
}

// Wants tells whether cells tagged tag (Cell.Tag) take part in q.
func (q Query) Wants(tag string) bool {
	k := q.TagKey()
	if k == "" {
		return tag == ""
	}
	return strings.HasPrefix(tag, k+"=")
}

// Hours lists the hours q covers that are still retained at now: those
// from From's hour to before To whose end is less than retention ago
// (retention 0 keeps every hour), and none more than a day ahead of now
// (no record is from the future, clock skew aside).
func (q Query) Hours(now time.Time, retention time.Duration) []time.Time {
	from, to := q.From.UTC().Truncate(time.Hour), q.To.UTC()
	if ahead := now.UTC().Add(24 * time.Hour); to.After(ahead) {
		to = ahead
	}
	if retention > 0 {
		if old := OldestRetained(now, retention); from.Before(old) {
			from = old
		}
	}
	var hours []time.Time
	for h := from; h.Before(to); h = h.Add(time.Hour) {
		hours = append(hours, h)
	}
	return hours
}

// OldestRetained is the first hour still kept at now: an hour is dropped
// once its end is more than retention ago.
func OldestRetained(now time.Time, retention time.Duration) time.Time {
	return now.UTC().Add(-retention - time.Hour).Truncate(time.Hour).Add(time.Hour)
}

// Share is a share of calls with its Wilson 95 % interval.
type Share struct {
	Count int64   `json:"count"`
	Share float64 `json:"share"` // 0..1
	Lo    float64 `json:"lo"`
	Hi    float64 `json:"hi"`
}

// Mean is a mean with its normal-approximation 95 % interval (Lo and Hi
// are null with fewer than two values).
type Mean struct {
	N    int64    `json:"n"`
	Mean float64  `json:"mean"`
	Lo   *float64 `json:"lo"`
	Hi   *float64 `json:"hi"`
}

// Row is one group of cells, merged.
type Row struct {
	// Dims holds the group's value of each dimension of Query.By, keyed
	// as By names it ("network", "tag:plan"); hours in RFC 3339.
	Dims     map[string]string `json:"dims"`
	Calls    int64             `json:"calls"`
	Expected int64             `json:"expected"`
	Lost     int64             `json:"lost"`
	// LossPct is Lost/Expected in %; null when no packets were counted.
	LossPct    *float64 `json:"loss_pct"`
	Over1      Share    `json:"over1"`
	Over5      Share    `json:"over5"`
	P50LossPct float64  `json:"p50_loss_pct"` // from the loss histogram
	P90LossPct float64  `json:"p90_loss_pct"`
	MOS        *Mean    `json:"mos"`       // null without any MOS (the downlink)
	JitterMS   float64  `json:"jitter_ms"` // mean
	// Value is the Query's metric of this row (null when it has none).
	Value  *float64 `json:"value"`
	Enough bool     `json:"enough"` // Calls >= MinCalls
}

// Group merges obs by q's dimensions and returns one row per group,
// ordered by the dimensions' values in By's order. Observations outside
// q's hours or not wanted by its tag dimension are left out; q must have
// passed Check.
func Group(q Query, obs []Observation) []Row {
	from, to := q.From.UTC().Truncate(time.Hour), q.To
	type group struct {
		dims []string
		c    Counters
	}
	groups := map[string]*group{}
	key := make([]string, len(q.By))
	for i := range obs {
		o := &obs[i]
		if o.Cell.Hour.Before(from) || !o.Cell.Hour.Before(to) || !q.Wants(o.Cell.Tag) {
			continue
		}
		for j, d := range q.By {
			key[j] = dimValue(o.Cell, d)
		}
		k := strings.Join(key, "\x00")
		g := groups[k]
		if g == nil {
			g = &group{dims: slices.Clone(key)}
			groups[k] = g
		}
		g.c.Add(&o.Counters)
	}
	list := make([]*group, 0, len(groups))
	for _, g := range groups {
		list = append(list, g)
	}
	slices.SortFunc(list, func(a, b *group) int { return slices.Compare(a.dims, b.dims) })
	minCalls := q.MinCalls
	if minCalls == 0 {
		minCalls = DefaultMinCalls
	}
	rows := make([]Row, 0, len(list))
	for _, g := range list {
		r := Summarize(&g.c, q.Metric, minCalls)
		r.Dims = make(map[string]string, len(q.By))
		for j, d := range q.By {
			r.Dims[d] = g.dims[j]
		}
		rows = append(rows, r)
	}
	return rows
}

func dimValue(c Cell, d string) string {
	switch d {
	case DimNetwork:
		return c.Network
	case DimHop:
		return c.Hop
	case DimAccess:
		return c.Access
	case DimHour:
		return c.Hour.UTC().Format(time.RFC3339)
	}
	_, v, _ := strings.Cut(c.Tag, "=")
	return v
}

// Summarize turns merged counters into a row's figures (without Dims).
// Figures are rounded (shares to 0.0001, % and ms to 0.001, MOS to
// 0.001) so that JSON stays short and equal counters give equal rows.
func Summarize(c *Counters, metric string, minCalls int) Row {
	r := Row{Calls: c.Calls, Expected: c.Expected, Lost: c.Lost, Enough: c.Calls >= int64(minCalls)}
	if c.Expected > 0 {
		r.LossPct = ptr(round(100*float64(c.Lost)/float64(c.Expected), 3))
	}
	r.Over1 = share(c.Over1, c.Calls)
	r.Over5 = share(c.Over5, c.Calls)
	if v, ok := LossBins.Quantile(c.Loss[:], 0.5); ok {
		r.P50LossPct = round(v, 3)
	}
	if v, ok := LossBins.Quantile(c.Loss[:], 0.9); ok {
		r.P90LossPct = round(v, 3)
	}
	if c.Calls > 0 {
		r.JitterMS = round(float64(c.JitterMS)/float64(c.Calls), 3)
	}
	if c.MOSCalls > 0 {
		// Sums are in hundredths: the mean and its bounds scale by 1/100,
		// the squares by 1/10000.
		mean, lo, hi, ok := stats.MeanCI(c.MOSCalls, float64(c.MOSSum)/100, float64(c.MOSSumSq)/10000, stats.Z95)
		r.MOS = &Mean{N: c.MOSCalls, Mean: round(mean, 3)}
		if ok {
			r.MOS.Lo, r.MOS.Hi = ptr(round(lo, 3)), ptr(round(hi, 3))
		}
	}
	switch cmp.Or(metric, MetricOver1) {
	case MetricOver1:
		r.Value = ptr(r.Over1.Share)
	case MetricOver5:
		r.Value = ptr(r.Over5.Share)
	case MetricLoss:
		r.Value = r.LossPct
	case MetricP50:
		r.Value = ptr(r.P50LossPct)
	case MetricP90:
		r.Value = ptr(r.P90LossPct)
	case MetricMOS:
		if r.MOS != nil {
			r.Value = ptr(r.MOS.Mean)
		}
	case MetricJitter:
		r.Value = ptr(r.JitterMS)
	}
	return r
}

func share(k, n int64) Share {
	if n == 0 {
		return Share{Lo: 0, Hi: 1}
	}
	lo, hi := stats.Wilson(k, n, stats.Z95)
	return Share{Count: k, Share: round(float64(k)/float64(n), 4), Lo: round(lo, 4), Hi: round(hi, 4)}
}

func round(v float64, places int) float64 {
	p := math.Pow10(places)
	return math.Round(v*p) / p
}

func ptr[T any](v T) *T { return &v }
