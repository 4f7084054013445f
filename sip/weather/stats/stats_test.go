package stats

import (
	"math"
	"testing"
)

// TestWilson checks the interval against published values: Newcombe,
// "Two-sided confidence intervals for the single proportion: comparison of
// seven methods", Statistics in Medicine 17 (1998) 857-872, Table I,
// method 3 (score interval without continuity correction), and the
// 5/50 example of the weather map's brief.
func TestWilson(t *testing.T) {
	tests := []struct {
		k, n   int64
		lo, hi float64
	}{
		{81, 263, 0.2553, 0.3662},
		{15, 148, 0.0624, 0.1605},
		{0, 20, 0, 0.1611},
		{1, 29, 0.0061, 0.1718},
		{5, 50, 0.0435, 0.2136},
		{29, 29, 0.8830, 1},
		{0, 0, 0, 1},        // nothing known
		{-1, 10, 0, 0.2775}, // clamped to 0/10
	}
	for _, tt := range tests {
		lo, hi := Wilson(tt.k, tt.n, Z95)
		if math.Abs(lo-tt.lo) > 0.00005 || math.Abs(hi-tt.hi) > 0.00005 {
			t.Errorf("Wilson(%d, %d) = [%.4f, %.4f], want [%.4f, %.4f]", tt.k, tt.n, lo, hi, tt.lo, tt.hi)
		}
	}
}

func TestMeanCI(t *testing.T) {
	// 4.4 ×45 and 3.9 ×5: mean 4.35, s² = 1.125/49.
	sum, sq := 45*4.4+5*3.9, 45*4.4*4.4+5*3.9*3.9
	mean, lo, hi, ok := MeanCI(50, sum, sq, Z95)
	half := Z95 * math.Sqrt(1.125/49/50)
	if !ok || math.Abs(mean-4.35) > 1e-9 || math.Abs(lo-(4.35-half)) > 1e-9 || math.Abs(hi-(4.35+half)) > 1e-9 {
		t.Fatalf("got %v [%v, %v] %v, half width %v", mean, lo, hi, ok, half)
	}
	if _, lo, hi, ok := MeanCI(20, 20*4.1, 20*4.1*4.1, Z95); !ok || math.Abs(hi-lo) > 1e-9 {
		t.Fatalf("equal values: [%v, %v]", lo, hi)
	}
	if m, _, _, ok := MeanCI(1, 3.3, 3.3*3.3, Z95); ok || m != 3.3 {
		t.Fatal("one value has no interval")
	}
	if _, _, _, ok := MeanCI(0, 0, 0, Z95); ok {
		t.Fatal("no values")
	}
}

var loss = Bins{Upper: []float64{0, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100}}

func TestIndex(t *testing.T) {
	for _, tt := range []struct {
		v    float64
		want int
	}{
		{-1, 0}, {0, 0}, {0.01, 1}, {0.1, 1}, {0.11, 2}, {1, 4}, {1.0001, 5}, {5, 7}, {99, 14}, {100, 14}, {250, 14},
	} {
		if got := loss.Index(tt.v); got != tt.want {
			t.Errorf("Index(%v) = %d, want %d", tt.v, got, tt.want)
		}
	}
}

func TestQuantile(t *testing.T) {
	counts := func(m map[int]int64) []int64 {
		c := make([]int64, len(loss.Upper))
		for i, n := range m {
			c[i] = n
		}
		return c
	}
	tests := []struct {
		name   string
		counts map[int]int64
		q      float64
		want   float64
	}{
		{"all zero loss", map[int]int64{0: 10}, 0.9, 0},
		{"middle of (1, 2]", map[int]int64{5: 10}, 0.5, 1.5},
		{"90 % of ten: the 9th of (2, 3]", map[int]int64{6: 10}, 0.9, 2.9},
		{"rank falls in the second bin", map[int]int64{0: 8, 7: 2}, 0.9, 4},
		{"rank at a bin's top", map[int]int64{0: 9, 7: 1}, 0.9, 0},
		{"the maximum", map[int]int64{0: 5, 14: 5}, 1, 100},
		{"the minimum", map[int]int64{3: 5, 14: 5}, 0, 0.25},
	}
	for _, tt := range tests {
		got, ok := loss.Quantile(counts(tt.counts), tt.q)
		if !ok || math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("%s: %v %v, want %v", tt.name, got, ok, tt.want)
		}
	}
	if _, ok := loss.Quantile(make([]int64, 15), 0.5); ok {
		t.Error("an empty histogram has a quantile")
	}
}

// TestMerge: histograms added bin by bin give the quantiles of the
// pooled values, whichever node or hour each came from.
func TestMerge(t *testing.T) {
	values := []float64{0, 0, 0.05, 0.3, 0.7, 1.5, 1.5, 2.2, 4, 6, 8, 12, 0, 0, 0.2, 25, 0.5, 0.5, 3, 3}
	a, b, all := make([]int64, 15), make([]int64, 15), make([]int64, 15)
	for i, v := range values {
		if i%3 == 0 {
			a[loss.Index(v)]++
		} else {
			b[loss.Index(v)]++
		}
		all[loss.Index(v)]++
	}
	merged := make([]int64, 15)
	Add(merged, a)
	Add(merged, b)
	for i := range merged {
		if merged[i] != all[i] {
			t.Fatalf("bin %d: %d, want %d", i, merged[i], all[i])
		}
	}
	for _, q := range []float64{0.1, 0.5, 0.9, 0.99} {
		x, _ := loss.Quantile(merged, q)
		y, _ := loss.Quantile(all, q)
		if x != y {
			t.Fatalf("q %v: %v vs %v", q, x, y)
		}
	}
	// The median of the 20 values is between the 10th (0.7 → bin (0.5, 1])
	// and the 11th: the histogram puts it inside (0.5, 1].
	if m, _ := loss.Quantile(merged, 0.5); m <= 0.5 || m > 1 {
		t.Fatalf("median %v", m)
	}
}
