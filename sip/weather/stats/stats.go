// Package stats is the arithmetic behind the quality figures: Wilson score
// intervals for shares of calls, normal-approximation intervals for means
// from a count, a sum and a sum of squares, and fixed-bin histograms whose
// counts add across hours and nodes, with quantiles read from them.
package stats

import (
	"math"
	"sort"
)

// Z95 is the standard normal quantile for a two-sided 95 % interval.
const Z95 = 1.959963984540054

// Wilson returns the Wilson score interval (without continuity
// correction) for k successes in n trials at normal quantile z. Unlike the
// plain p ± z·√(p(1-p)/n) it stays inside [0, 1] and does not collapse to
// a width of zero at 0/n or n/n, which matters for cells of few calls.
// n = 0 gives [0, 1]: nothing is known.
func Wilson(k, n int64, z float64) (lo, hi float64) {
	if n <= 0 {
		return 0, 1
	}
	k = min(max(k, 0), n)
	nf := float64(n)
	p := float64(k) / nf
	z2 := z * z
	d := 1 + z2/nf
	center := (p + z2/(2*nf)) / d
	half := z / d * math.Sqrt(p*(1-p)/nf+z2/(4*nf*nf))
	lo, hi = max(center-half, 0), min(center+half, 1)
	// The exact bounds at k = 0 and k = n are 0 and 1; rounding must not
	// move them.
	if k == 0 {
		lo = 0
	}
	if k == n {
		hi = 1
	}
	return lo, hi
}

// MeanCI returns the mean of n values whose sum is sum and whose sum of
// squares is sumSq, and its 95 % interval by the normal approximation:
// mean ± z·s/√n with s the sample standard deviation. ok is false when
// n < 2 (no spread can be estimated). The approximation is fair once n is
// a few dozen, which the callers' minimum number of calls ensures for the
// figures they present as comparable.
func MeanCI(n int64, sum, sumSq, z float64) (mean, lo, hi float64, ok bool) {
	if n <= 0 {
		return 0, 0, 0, false
	}
	nf := float64(n)
	mean = sum / nf
	if n < 2 {
		return mean, mean, mean, false
	}
	// (n·Σx² - (Σx)²) / (n(n-1)); clamped, as rounding can make it
	// slightly negative when every value is the same.
	variance := max((nf*sumSq-sum*sum)/(nf*(nf-1)), 0)
	half := z * math.Sqrt(variance/nf)
	return mean, mean - half, mean + half, true
}

// Bins are the fixed bins of a histogram: bin 0 holds values up to
// Upper[0] (from Min), bin i values in (Upper[i-1], Upper[i]]. Values
// above the last bound are counted in the last bin, values below Min in
// the first. Fixed bins are what lets histograms from different hours and
// nodes be added count by count.
type Bins struct {
	Min   float64
	Upper []float64 // ascending
}

// Index is the bin v falls in.
func (b Bins) Index(v float64) int {
	i := sort.SearchFloat64s(b.Upper, v) // the first bound >= v
	return min(i, len(b.Upper)-1)
}

// Lower is bin i's lower edge.
func (b Bins) Lower(i int) float64 {
	if i == 0 {
		return b.Min
	}
	return b.Upper[i-1]
}

// Quantile reads the q-quantile (0..1) from counts (one per bin),
// interpolating linearly inside the bin it falls in: the answer is exact
// to the bin's width. ok is false when counts are all zero.
func (b Bins) Quantile(counts []int64, q float64) (v float64, ok bool) {
	var n int64
	for _, c := range counts {
		n += c
	}
	if n == 0 {
		return 0, false
	}
	q = min(max(q, 0), 1)
	rank := q * float64(n)
	var cum float64
	for i, c := range counts {
		if c == 0 {
			continue
		}
		next := cum + float64(c)
		if rank <= next {
			lo, hi := b.Lower(i), b.Upper[i]
			return lo + (hi-lo)*(rank-cum)/float64(c), true
		}
		cum = next
	}
	// Only reached through rounding at q = 1: the top of the last bin used.
	for i := len(counts) - 1; i >= 0; i-- {
		if counts[i] > 0 {
			return b.Upper[i], true
		}
	}
	return 0, false
}

// Add adds src's counts to dst, bin by bin (they share their bins).
func Add(dst, src []int64) {
	for i := range min(len(dst), len(src)) {
		dst[i] += src[i]
	}
}
