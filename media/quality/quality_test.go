package quality

import (
	"math"
	"testing"
	"time"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestEModel(t *testing.T) {
	tests := []struct {
		name   string
		leg    Leg
		r, mos float64
		burstR float64
	}{
		// Hand-computed from the formulas in the package comment.
		{"perfect", Leg{Expected: 1000}, 93.2, 4.41, 1},
		{"5 % random loss", Leg{Expected: 1000, Lost: 50, Bursts: 50}, 93.2 - 95*5/(5+25.1), 3.92, 1},
		{"5 % loss in bursts of 5", Leg{Expected: 1000, Lost: 50, Bursts: 10}, 93.2 - 95*5/(5/4.75+25.1), 3.82, 4.75},
		{"late discards count as loss", Leg{Expected: 1000, Lost: 20, Bursts: 20, Discarded: 30}, 93.2 - 95*5/(5+25.1), 3.92, 1},
		{"150 ms one way", Leg{Expected: 1000, Delay: 150 * time.Millisecond}, 93.2 - 3.6, 4.33, 1},
		{"300 ms one way", Leg{Expected: 1000, Delay: 300 * time.Millisecond}, 93.2 - 7.2 - 0.11*122.7, 3.71, 1},
		{"nothing received", Leg{Expected: 100, Lost: 100, Bursts: 1}, 93.2 - 95*100/(100+25.1), 1.18, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !near(tt.leg.BurstR(), tt.burstR, 0.01) {
				t.Fatalf("BurstR %.3f, want %.3f", tt.leg.BurstR(), tt.burstR)
			}
			if r := tt.leg.R(); !near(r, tt.r, 0.3) {
				t.Fatalf("R %.2f, want %.2f", r, tt.r)
			}
			if m := tt.leg.MOS(); !near(m, tt.mos, 0.02) {
				t.Fatalf("MOS %.3f, want %.2f", m, tt.mos)
			}
		})
	}
	if MOS(-5) != 1 || MOS(120) != 4.5 {
		t.Fatal("MOS outside 1..4.5")
	}
	// More loss, more burstiness or more delay never scores better.
	prev := 5.0
	for loss := 0.0; loss <= 0.3; loss += 0.01 {
		m := MOS(RFactor(loss, 1, 0))
		if m > prev {
			t.Fatalf("MOS rose with loss at %.2f", loss)
		}
		prev = m
	}
	if MOS(RFactor(0.05, 3, 0)) >= MOS(RFactor(0.05, 1, 0)) {
		t.Fatal("bursty loss scored as well as random loss")
	}
}
