package rtpstats

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// pkt is one scripted arrival: sequence number, RTP timestamp, arrival
// offset from t0.
type pkt struct {
	seq uint16
	ts  uint32
	at  time.Duration
}

// steady is n packets of 20 ms Opus from seq0/ts0, arriving on time.
func steady(seq0 uint16, ts0 uint32, n int) []pkt {
	out := make([]pkt, n)
	for i := range out {
		out[i] = pkt{seq0 + uint16(i), ts0 + uint32(i)*960, time.Duration(i) * 20 * time.Millisecond}
	}
	return out
}

func without(ps []pkt, drop func(i int) bool) []pkt {
	var out []pkt
	for i, p := range ps {
		if !drop(i) {
			out = append(out, p)
		}
	}
	return out
}

func feed(r *Receiver, ssrc uint32, ps []pkt) (counts map[Arrival]int) {
	counts = map[Arrival]int{}
	for _, p := range ps {
		counts[r.Update(ssrc, p.seq, p.ts, t0.Add(p.at))]++
	}
	return counts
}

func TestCounters(t *testing.T) {
	swapPairs := func(ps []pkt) []pkt {
		out := append([]pkt(nil), ps...)
		for i := 10; i+1 < len(out); i += 10 {
			out[i], out[i+1] = out[i+1], out[i]
		}
		return out
	}
	dup := func(ps []pkt) []pkt {
		var out []pkt
		for i, p := range ps {
			out = append(out, p)
			if i%25 == 0 {
				out = append(out, p)
			}
		}
		return out
	}
	tests := []struct {
		name            string
		ps              []pkt
		expected        uint32
		lost            int32
		fraction        uint8
		received        uint32
		dups, reordered uint64
		extHighest      uint32
	}{
		{"clean", steady(1000, 0, 100), 100, 0, 0, 100, 0, 0, 1099},
		{"5 % lost, every 20th", without(steady(1000, 0, 100), func(i int) bool { return i%20 == 10 }), 100, 5, 12, 95, 0, 0, 1099},
		{"a burst of 10", without(steady(1000, 0, 200), func(i int) bool { return i >= 50 && i < 60 }), 200, 10, 12, 190, 0, 0, 1199},
		{"the last packets lost are not known yet", steady(1000, 0, 100)[:90], 90, 0, 0, 90, 0, 0, 1089},
		{"reordered pairs are not lost", swapPairs(steady(1000, 0, 100)), 100, 0, 0, 100, 0, 9, 1099},
		{"duplicates are not received twice", dup(steady(1000, 0, 100)), 100, 0, 0, 100, 4, 0, 1099},
		{"sequence wrap", steady(65500, 0, 100), 100, 0, 0, 100, 0, 0, 65500 + 99},
		{"reordered across the wrap", swapPairs(steady(65526, 0, 40)), 40, 0, 0, 40, 0, 3, 65526 + 39},
		{"timestamp wrap", steady(1, math.MaxUint32-960*10, 100), 100, 0, 0, 100, 0, 0, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(48000)
			feed(r, 7, tt.ps)
			got := r.Report()
			if got.Expected != tt.expected || got.Lost != tt.lost || got.FractionLost != tt.fraction || got.Received != tt.received ||
				got.Duplicates != tt.dups || got.Reordered != tt.reordered || got.ExtHighestSeq != tt.extHighest || got.SSRC != 7 {
				t.Fatalf("report %+v", got)
			}
			if tt.dups == 0 && tt.reordered == 0 && got.Jitter != 0 {
				t.Fatalf("on-time packets gave jitter %d", got.Jitter)
			}
		})
	}
}

func TestFractionLostIsPerInterval(t *testing.T) {
	r := New(48000)
	ps := without(steady(0, 0, 200), func(i int) bool { return i < 100 && i%10 == 5 }) // 10 % in the first half only
	feed(r, 1, ps[:90])
	first := r.Report()
	feed(r, 1, ps[90:])
	second := r.Report()
	if first.FractionLost != 25 || second.FractionLost != 0 || second.Lost != 10 {
		t.Fatalf("first %+v second %+v", first, second)
	}
	// Fraction lost within 1/256 of 5 %:
	r = New(48000)
	feed(r, 1, without(steady(0, 0, 2000), func(i int) bool { return i%20 == 7 }))
	if f := r.Report().FractionLost; math.Abs(float64(f)-0.05*256) > 1 {
		t.Fatalf("fraction %d/256, want 5 %%", f)
	}
}

func TestDTXIsNotLoss(t *testing.T) {
	// Opus DTX: the sender stops for 1 s of silence; the timestamp jumps,
	// the sequence number does not.
	ps := steady(0, 0, 50)
	for i := 0; i < 50; i++ {
		ps = append(ps, pkt{uint16(50 + i), uint32(50+i)*960 + 48000, time.Duration(50+i)*20*time.Millisecond + time.Second})
	}
	r := New(48000)
	feed(r, 1, ps)
	if got := r.Report(); got.Lost != 0 || got.Expected != 100 || got.Jitter != 0 || got.Bursts != 0 {
		t.Fatalf("%+v", got)
	}
}

func TestBursts(t *testing.T) {
	r := New(48000)
	// Lost: 10 alone, 20-24 together, 40-41 together: 3 bursts, 8 packets.
	feed(r, 1, without(steady(0, 0, 100), func(i int) bool { return i == 10 || (i >= 20 && i < 25) || i == 40 || i == 41 }))
	if got := r.Report(); got.Bursts != 3 || got.Lost != 8 {
		t.Fatalf("%+v", got)
	}
}

func TestNewSSRCAndRestart(t *testing.T) {
	r := New(48000)
	feed(r, 1, steady(100, 0, 50))
	if c := feed(r, 2, steady(40000, 5000, 10)); c[InOrder] != 10 {
		t.Fatalf("%v", c)
	}
	if got := r.Report(); got.SSRC != 2 || got.Expected != 10 || got.Lost != 0 {
		t.Fatalf("after the SSRC change %+v", got)
	}
	// Same SSRC, a jump of 20000: a stray, until the next packet follows it.
	if a := r.Update(2, 60000, 0, t0); a != Stray {
		t.Fatalf("first packet after the jump: %v", a)
	}
	if a := r.Update(2, 60001, 960, t0.Add(20*time.Millisecond)); a != Restart {
		t.Fatalf("second: %v", a)
	}
	if got := r.Report(); got.Expected != 1 || got.ExtHighestSeq != 60001 {
		t.Fatalf("after restart %+v", got)
	}
}

// reference is RFC 3550 A.8's integer computation, as the RFC prints it.
func reference(ps []pkt) uint32 {
	var jitter, lastTransit int64
	for i, p := range ps {
		arrival := int64(p.at) * 48000 / int64(time.Second)
		transit := arrival - int64(p.ts)
		if i > 0 {
			d := transit - lastTransit
			if d < 0 {
				d = -d
			}
			jitter += d - ((jitter + 8) >> 4)
		}
		lastTransit = transit
	}
	return uint32(jitter >> 4)
}

func TestJitterMatchesRFC3550(t *testing.T) {
	for _, spread := range []time.Duration{2 * time.Millisecond, 10 * time.Millisecond, 40 * time.Millisecond} {
		rng := rand.New(rand.NewPCG(1, uint64(spread)))
		ps := steady(0, 0, 3000)
		for i := range ps {
			ps[i].at += time.Duration(rng.Int64N(int64(spread)))
		}
		r := New(48000)
		feed(r, 1, ps)
		got, want := r.Report().Jitter, reference(ps)
		if math.Abs(float64(got)-float64(want)) > 0.05*float64(want) {
			t.Fatalf("spread %s: jitter %d, RFC 3550 reference %d", spread, got, want)
		}
		if d := r.Report().JitterDuration; d <= 0 || d > spread {
			t.Fatalf("spread %s: jitter %s", spread, d)
		}
	}
}

func BenchmarkUpdate(b *testing.B) {
	r := New(48000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.Update(1, uint16(i), uint32(i)*960, t0.Add(time.Duration(i)*20*time.Millisecond))
		i++
	}
}

func TestBurstGapMetrics(t *testing.T) {
	// 1000 packets: one burst (400-409: 6 of 10 lost), two lone losses.
	lost := map[int]bool{100: true, 700: true, 400: true, 402: true, 404: true, 406: true, 408: true, 409: true}
	r := New(48000)
	feed(r, 1, without(steady(0, 0, 1000), func(i int) bool { return lost[i] }))
	bg := r.Report().BurstGap
	// The burst runs from 400 to 409: 10 packets, 6 lost.
	if bg.BurstDensity != 6*256/10 || bg.BurstDuration != 200*time.Millisecond {
		t.Fatalf("burst %+v", bg)
	}
	// The gaps hold the other 990 packets and the 2 lone losses.
	if want := uint8(2 * 256 / 990); bg.GapDensity != want || bg.GapDuration != 495*20*time.Millisecond {
		t.Fatalf("gap %+v, want density %d", bg, want)
	}
}

func TestRestoredReceiverCountsOnAsTheOriginal(t *testing.T) {
	orig := New(48000)
	at := time.Unix(1700000000, 0)
	feed := func(r *Receiver, from, to uint16) {
		for seq := from; seq != to; seq++ {
			if seq%7 == 3 {
				continue // lost
			}
			r.Update(0x1234, seq, uint32(seq)*960, at.Add(time.Duration(seq)*20*time.Millisecond+time.Duration(seq%3)*time.Millisecond))
		}
	}
	feed(orig, 65000, 200) // across a wrap
	orig.Report()          // an interval already reported
	feed(orig, 200, 250)
	restored := New(48000)
	restored.Restore(orig.State())
	if got, want := restored.Snapshot(), orig.Snapshot(); got != want {
		t.Fatalf("restored %+v\nwant %+v", got, want)
	}
	feed(orig, 250, 400)
	feed(restored, 250, 400)
	if got, want := restored.Report(), orig.Report(); got != want || got.Lost == 0 || got.Jitter == 0 {
		t.Fatalf("after more packets: restored %+v\nwant %+v", got, want)
	}
}
