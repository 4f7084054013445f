package jitter

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

const frame = 20 * time.Millisecond

// arrival is one scripted packet: sequence, timestamp, marker, and when it
// arrives relative to t0.
type arrival struct {
	seq    uint16
	ts     uint32
	marker bool
	at     time.Duration
}

// spurt is n 20 ms packets from seq0/ts0, sent every 20 ms from start,
// each arriving after its send time plus delay(i).
func spurt(seq0 uint16, ts0 uint32, start time.Duration, n int, delay func(i int) time.Duration) []arrival {
	out := make([]arrival, n)
	for i := range out {
		out[i] = arrival{seq0 + uint16(i), ts0 + uint32(i)*960, i == 0, start + time.Duration(i)*frame + delay(i)}
	}
	return out
}

func none(int) time.Duration { return 0 }

type played struct {
	seq uint16
	at  time.Duration
}

// run pushes the arrivals in time order (stable for equal times) and pops
// at every millisecond, returning what played when.
func run(b *Buffer, ssrc uint32, as []arrival) []played {
	as = slices.Clone(as)
	slices.SortStableFunc(as, func(x, y arrival) int { return int(x.at - y.at) })
	var out []played
	end := as[len(as)-1].at + time.Second
	i := 0
	for now := time.Duration(0); now <= end; now += time.Millisecond {
		for i < len(as) && as[i].at <= now {
			a := as[i]
			b.Push(Packet{SSRC: ssrc, Seq: a.seq, TS: a.ts, Marker: a.marker}, t0.Add(a.at))
			i++
		}
		for {
			p, ok := b.Pop(t0.Add(now))
			if !ok {
				break
			}
			out = append(out, played{p.Seq, now})
		}
	}
	return out
}

func seqs(ps []played) []uint16 {
	out := make([]uint16, len(ps))
	for i, p := range ps {
		out[i] = p.seq
	}
	return out
}

func TestOffAddsNoDelayAndKeepsArrivalOrder(t *testing.T) {
	b := New(Config{Mode: Off})
	as := spurt(0, 0, 0, 10, none)
	as[3].at, as[4].at = as[4].at, as[3].at // 4 overtakes 3
	as[3].at++                              // and arrives first
	got := run(b, 1, as)
	if !slices.Equal(seqs(got), []uint16{0, 1, 2, 4, 3, 5, 6, 7, 8, 9}) {
		t.Fatalf("order %v", seqs(got))
	}
	for i, p := range got {
		var want time.Duration
		for _, a := range as {
			if a.seq == p.seq {
				want = a.at.Truncate(time.Millisecond)
				if a.at%time.Millisecond != 0 {
					want += time.Millisecond
				}
			}
		}
		if p.at != want {
			t.Fatalf("packet %d played at %v, arrived %v", i, p.at, want)
		}
	}
}

func TestFixedDelayReordersAndPaces(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	as := spurt(65530, 4294967000, 0, 200, func(i int) time.Duration { // wraps both
		if i == 0 {
			return 0
		}
		return time.Duration(rng.IntN(50)) * time.Millisecond // up to 49 ms late: reorders
	})
	// A duplicate, and one packet 80 ms late (past its playout time).
	as = append(as, as[50])
	as[120].at += 80 * time.Millisecond
	b := New(Config{Mode: Fixed, Target: 60 * time.Millisecond})
	got := run(b, 1, as)
	st := b.Stats()
	if st.Late != 1 || st.Duplicates != 1 || st.Played != 199 || st.Reordered == 0 || st.Delay != 60*time.Millisecond {
		t.Fatalf("stats %+v", st)
	}
	// Every packet plays in order, exactly 60 ms after its send time.
	for i, p := range got {
		if i > 0 && p.seq-got[i-1].seq != 1 && !(got[i-1].seq == as[119].seq && p.seq-got[i-1].seq == 2) {
			t.Fatalf("out of order at %d: %d after %d", i, p.seq, got[i-1].seq)
		}
		idx := int(p.seq - 65530)
		if want := time.Duration(idx)*frame + 60*time.Millisecond; p.at != want {
			t.Fatalf("seq %d played at %v, want %v", p.seq, p.at, want)
		}
	}
	if st.MaxDelay > 60*time.Millisecond {
		t.Fatalf("held %v", st.MaxDelay)
	}
}

func TestDTXPausesWithoutLoss(t *testing.T) {
	// 10 packets, then 1 s of silence the sender does not send (DTX): the
	// timestamp jumps 48000 + 10*960, the sequence number goes on.
	as := append(spurt(0, 0, 0, 10, none), spurt(10, 10*960+48000, 200*time.Millisecond+time.Second, 10, none)...)
	as[10].marker = false // DTX need not mark the new spurt
	b := New(Config{Mode: Fixed, Target: 40 * time.Millisecond})
	got := run(b, 1, as)
	if len(got) != 20 || b.Stats().Late != 0 {
		t.Fatalf("played %d, stats %+v", len(got), b.Stats())
	}
	if got[10].at != time.Second+200*time.Millisecond+40*time.Millisecond {
		t.Fatalf("after DTX the stream resumed at %v", got[10].at)
	}
}

func TestAdaptiveConvergesWithinBounds(t *testing.T) {
	tests := []struct {
		name     string
		jitter   time.Duration
		min, max time.Duration
		want     func(d time.Duration) bool
	}{
		{"no jitter: the minimum", 0, 0, 120 * time.Millisecond, func(d time.Duration) bool { return d == 0 }},
		{"no jitter, minimum 20 ms", 0, 20 * time.Millisecond, 120 * time.Millisecond, func(d time.Duration) bool { return d == 20*time.Millisecond }},
		{"mild jitter: some delay", 10 * time.Millisecond, 0, 120 * time.Millisecond, func(d time.Duration) bool { return d > 5*time.Millisecond && d < 60*time.Millisecond }},
		{"wild jitter: the maximum", 200 * time.Millisecond, 0, 120 * time.Millisecond, func(d time.Duration) bool { return d == 120*time.Millisecond }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			var as []arrival
			// Talk spurts of 1 s with 200 ms pauses: the delay may change at each.
			for k := 0; k < 10; k++ {
				as = append(as, spurt(uint16(k*50), uint32(k*60*960), time.Duration(k)*1200*time.Millisecond, 50, func(int) time.Duration {
					if tt.jitter == 0 {
						return 0
					}
					return time.Duration(rng.Int64N(int64(tt.jitter)))
				})...)
			}
			b := New(Config{Mode: Adaptive, Min: tt.min, Max: tt.max})
			run(b, 1, as)
			if d := b.Stats().Delay; !tt.want(d) {
				t.Fatalf("delay %v (jitter measured %v)", d, b.Jitter())
			}
		})
	}
}

func TestAdaptiveChangesDelayOnlyAtTalkSpurts(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	// One long spurt with jitter: no marker after the first packet, so the
	// delay chosen at its start holds, and no frame is moved.
	as := spurt(0, 0, 0, 300, func(i int) time.Duration { return time.Duration(rng.Int64N(int64(30 * time.Millisecond))) })
	as[0].at = 0
	b := New(Config{Mode: Adaptive, Target: 40 * time.Millisecond})
	got := run(b, 1, as)
	if b.Stats().Delay != 40*time.Millisecond || b.Stats().Resyncs != 0 {
		t.Fatalf("stats %+v", b.Stats())
	}
	for i := 1; i < len(got); i++ {
		if d := got[i].at - got[i-1].at; got[i].seq == got[i-1].seq+1 && d != frame {
			t.Fatalf("frame %d played %v after the previous one", got[i].seq, d)
		}
	}
}

func TestSSRCChangeStartsOver(t *testing.T) {
	b := New(Config{Mode: Fixed, Target: 20 * time.Millisecond})
	run(b, 1, spurt(100, 0, 0, 10, none))
	got := run(b, 2, spurt(5000, 777, 2*time.Second, 10, none))
	if len(got) != 10 || got[0].seq != 5000 || b.Stats().SSRCChanges != 1 {
		t.Fatalf("%v %+v", seqs(got), b.Stats())
	}
}

func TestClockDriftIsAbsorbed(t *testing.T) {
	for _, ppm := range []float64{-5000, 5000} { // a sender clock 0.5 % slow, then fast
		as := spurt(0, 0, 0, 3000, none) // one minute without a pause
		for i := range as {
			as[i].at = time.Duration(float64(as[i].at) * (1 - ppm/1e6))
		}
		b := New(Config{Mode: Fixed, Target: 40 * time.Millisecond})
		got := run(b, 1, as)
		st := b.Stats()
		// Slow: the drift window moves the anchor later (Resyncs); fast:
		// the earlier packets move it earlier (Advanced).
		if st.Late > 10 || st.Resyncs+st.Advanced == 0 || len(got) < 2990 {
			t.Fatalf("%v ppm: played %d, stats %+v", ppm, len(got), st)
		}
		if st.MaxDelay > 40*time.Millisecond+65*time.Millisecond {
			t.Fatalf("%v ppm: held up to %v", ppm, st.MaxDelay)
		}
	}
}

func TestLongGapMovesTheWindow(t *testing.T) {
	b := New(Config{Mode: Fixed, Target: 20 * time.Millisecond, Capacity: 16})
	as := append(spurt(0, 0, 0, 5, none), spurt(1000, 1000*960, 20*time.Second, 5, none)...)
	got := run(b, 1, as)
	if len(got) != 10 {
		t.Fatalf("played %v, stats %+v", seqs(got), b.Stats())
	}
}

func BenchmarkPushPop(b *testing.B) {
	buf := New(Config{Mode: Adaptive})
	payload := make([]byte, 80)
	now := t0
	var seq uint16
	var ts uint32
	b.ReportAllocs()
	for b.Loop() {
		buf.Push(Packet{SSRC: 1, Seq: seq, TS: ts, Payload: payload}, now)
		now = now.Add(frame)
		_, _ = buf.Pop(now)
		seq++
		ts += 960
	}
}

func TestFirstPacketsReordered(t *testing.T) {
	as := spurt(100, 96000, 0, 10, none)
	as[0].at, as[1].at = as[1].at, as[0].at // 101 arrives first
	b := New(Config{Mode: Fixed, Target: 40 * time.Millisecond})
	got := run(b, 1, as)
	if !slices.Equal(seqs(got), []uint16{100, 101, 102, 103, 104, 105, 106, 107, 108, 109}) || b.Stats().Late != 0 {
		t.Fatalf("played %v, stats %+v", seqs(got), b.Stats())
	}
}

func TestAdaptiveGrowsWhenPacketsComeTooLate(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	// One spurt, no marker after the first packet, up to 50 ms of jitter,
	// starting from no delay at all.
	as := spurt(0, 0, 0, 500, func(i int) time.Duration {
		if i == 0 {
			return 0
		}
		return time.Duration(rng.Int64N(int64(50 * time.Millisecond)))
	})
	b := New(Config{Mode: Adaptive, Target: time.Millisecond, Min: 0, Max: 120 * time.Millisecond})
	got := run(b, 1, as)
	st := b.Stats()
	if st.Grown == 0 || st.Delay < 45*time.Millisecond || st.Late > 5 || len(got) < 495 {
		t.Fatalf("played %d, stats %+v", len(got), st)
	}
	for i := 1; i < len(got); i++ {
		if got[i].seq <= got[i-1].seq {
			t.Fatalf("out of order: %d after %d", got[i].seq, got[i-1].seq)
		}
	}
}

func TestOpusDurationsTellDTXWithoutMarker(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	// Five spurts of 1 s with 1 s of DTX between them, no marker bits;
	// jitter up to 40 ms in the first two, none after.
	var as []arrival
	for k := 0; k < 5; k++ {
		sp := spurt(uint16(k*50), uint32(k*100*960), time.Duration(k)*2*time.Second, 50, func(i int) time.Duration {
			if k < 2 && i > 1 { // the spurt's first packets in order: a reordered start hides the pause
				return time.Duration(rng.Int64N(int64(40 * time.Millisecond)))
			}
			return 0
		})
		sp[0].marker = false
		as = append(as, sp...)
	}
	b := New(Config{Mode: Adaptive, Max: 120 * time.Millisecond})
	// run() does not set Samples: push by hand with 20 ms Opus durations.
	slices.SortStableFunc(as, func(x, y arrival) int { return int(x.at - y.at) })
	drain := func(at time.Duration) {
		for {
			if _, ok := b.Pop(t0.Add(at)); !ok {
				return
			}
		}
	}
	for _, a := range as {
		drain(a.at) // what was due before this packet came
		b.Push(Packet{SSRC: 1, Seq: a.seq, TS: a.ts, Samples: 960}, t0.Add(a.at))
		drain(a.at)
	}
	st := b.Stats()
	if st.DTX != 4 {
		t.Fatalf("DTX pauses %d, want 4", st.DTX)
	}
	// The delay followed the jitter down once it stopped, at a pause.
	if st.Delay > 20*time.Millisecond {
		t.Fatalf("delay %v after three clean spurts", st.Delay)
	}
}

// BenchmarkManyStreams is one worker's share of sori-mediabench's load:
// 1600 adaptive buffers, each op one packet pushed into each at its 20 ms
// tick and what is due popped, with NextDeadline after each as the relay
// asks it. The buffers do not fit in the cache as one does.
func BenchmarkManyStreams(b *testing.B) {
	const streams = 1600
	bufs := make([]*Buffer, streams)
	for i := range bufs {
		bufs[i] = New(Config{Mode: Adaptive})
	}
	payload := make([]byte, 80)
	now := t0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		seq, ts := uint16(i), uint32(i)*960
		for k, buf := range bufs {
			at := now.Add(time.Duration(k) * 10 * time.Microsecond)
			buf.Push(Packet{SSRC: uint32(k), Seq: seq, TS: ts, Payload: payload}, at)
			_, _ = buf.NextDeadline()
			for {
				if _, ok := buf.Pop(at); !ok {
					break
				}
			}
			_, _ = buf.NextDeadline()
		}
		now = now.Add(frame)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*streams), "ns/pkt")
}

func TestRingStaysSmallAndGrowsForABurst(t *testing.T) {
	b := New(Config{Mode: Fixed, Target: 60 * time.Millisecond})
	// 2 s in order: the ring keeps its first size.
	as := spurt(0, 0, 0, 100, none)
	// Then 60 packets held up 1 s by the path, all arriving at once: more
	// than the small ring holds from the playout point, fewer than Capacity.
	burst := spurt(100, 100*960, 2*time.Second, 60, func(i int) time.Duration { return time.Second - time.Duration(i)*frame })
	run(b, 1, as[:100])
	if len(b.slots) != firstSlots {
		t.Fatalf("ring %d slots after a steady stream, want %d", len(b.slots), firstSlots)
	}
	b2 := New(Config{Mode: Fixed, Target: 60 * time.Millisecond})
	got := run(b2, 1, append(as, burst...))
	st := b2.Stats()
	if st.Overflow != 0 || len(b2.slots) <= firstSlots {
		t.Fatalf("ring %d slots, stats %+v", len(b2.slots), st)
	}
	for i := 1; i < len(got); i++ {
		if got[i].seq <= got[i-1].seq {
			t.Fatalf("out of order: %d after %d", got[i].seq, got[i-1].seq)
		}
	}
	// The burst came late for its timestamps: a resync plays it in order,
	// none given up (what is still held plays after the script's end).
	if len(got)+b2.Len()+int(st.Late) != 160 {
		t.Fatalf("played %d + held %d + late %d of 160, stats %+v", len(got), b2.Len(), st.Late, st)
	}
}

func TestGrowingKeepsWaitingAndPlayedPackets(t *testing.T) {
	b := New(Config{Mode: Fixed, Target: 20 * time.Millisecond})
	now := t0
	for i := 0; i < 10; i++ {
		b.Push(Packet{SSRC: 1, Seq: uint16(i), TS: uint32(i) * 960}, now.Add(time.Duration(i)*frame))
	}
	// 0..8 played, 9 waits.
	for {
		if _, ok := b.Pop(now.Add(9*frame + 10*time.Millisecond)); !ok {
			break
		}
	}
	at := now.Add(9*frame + 15*time.Millisecond)
	// 30 ahead of the playout point: the ring grows.
	if r := b.Push(Packet{SSRC: 1, Seq: 39, TS: 39 * 960}, at); r != Queued {
		t.Fatalf("push 39: %v", r)
	}
	if len(b.slots) < 32 {
		t.Fatalf("ring %d slots", len(b.slots))
	}
	if r := b.Push(Packet{SSRC: 1, Seq: 8, TS: 8 * 960}, at); r != Duplicate {
		t.Fatalf("played 8 again: %v, want Duplicate", r)
	}
	if p, ok := b.Pop(now.Add(10 * frame)); !ok || p.Seq != 9 {
		t.Fatalf("after growing popped %v %v, want 9", p.Seq, ok)
	}
	if b.Len() != 1 {
		t.Fatalf("held %d, want 1 (39)", b.Len())
	}
}

func TestLateFirstPacketDoesNotDelayTheSpurt(t *testing.T) {
	// The spurt's first packet comes 15 ms late, the rest on time: the
	// base moves to the second packet's pace (advance), and every packet,
	// the first too, plays 40 ms after its send time.
	as := spurt(0, 0, 0, 50, func(i int) time.Duration {
		if i == 0 {
			return 15 * time.Millisecond
		}
		return 0
	})
	b := New(Config{Mode: Fixed, Target: 40 * time.Millisecond})
	got := run(b, 1, as)
	if len(got) != 50 || b.Stats().Advanced != 1 || b.Stats().Late != 0 {
		t.Fatalf("played %d, stats %+v", len(got), b.Stats())
	}
	for _, p := range got {
		if want := time.Duration(p.seq)*frame + 40*time.Millisecond; p.at != want {
			t.Fatalf("packet %d played at %v, want %v", p.seq, p.at, want)
		}
	}
}

func TestTimestampJumpWithoutMarkerPlaysAtOnce(t *testing.T) {
	// A sender moves its timestamps 10 s ahead mid-spurt, with no marker
	// and no pause: the packets after the jump are not held 10 s; the base
	// moves to them, and they play 40 ms after they arrive.
	as := spurt(0, 0, 0, 20, none)
	as = append(as, spurt(20, 20*960+10*48000, 20*frame, 20, none)...)
	as[20].marker = false
	b := New(Config{Mode: Fixed, Target: 40 * time.Millisecond})
	got := run(b, 1, as)
	if len(got) != 40 {
		t.Fatalf("played %d, stats %+v", len(got), b.Stats())
	}
	for _, p := range got[20:] {
		if want := time.Duration(p.seq)*frame + 40*time.Millisecond; p.at != want {
			t.Fatalf("packet %d played at %v, want %v", p.seq, p.at, want)
		}
	}
}

// TestAdaptiveShrinksWithoutPauses: a stream that never pauses (one
// marker, as phones without DTX send) brings a delay that is more than it
// needs down to its latest packet's lateness plus growMargin, a step a
// packet, and keeps what periodic late packets need.
func TestAdaptiveShrinksWithoutPauses(t *testing.T) {
	const n = 1000 // 20 s
	cases := []struct {
		name     string
		target   time.Duration
		delay    func(i int) time.Duration
		min, max time.Duration // the delay at the end
		shrinks  bool
		paced    bool // no packet sent much sooner than its pace (no growth reorders the held ones)
	}{
		{"first delay too long", 40 * time.Millisecond, func(i int) time.Duration {
			return time.Duration(i%4) * time.Millisecond // 0-3 ms
		}, 7 * time.Millisecond, 10 * time.Millisecond, true, true},
		{"grown for a stall", 10 * time.Millisecond, func(i int) time.Duration {
			if i >= 250 && i < 253 {
				return time.Duration(60-20*(i-250)) * time.Millisecond // a 60 ms stall at 5 s
			}
			return time.Duration(i%3) * time.Millisecond
		}, 6 * time.Millisecond, 10 * time.Millisecond, true, true},
		{"late packet every 2 s", 10 * time.Millisecond, func(i int) time.Duration {
			if i%100 == 50 {
				return 30 * time.Millisecond
			}
			return time.Duration(i%3) * time.Millisecond
		}, 35 * time.Millisecond, 45 * time.Millisecond, true, false}, // the first window sheds 3 ms; the late packet grows it back
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := New(Config{Mode: Adaptive, Target: c.target, Max: 120 * time.Millisecond})
			got := run(b, 1, spurt(0, 0, 0, n, c.delay))
			st := b.Stats()
			if st.Delay < c.min || st.Delay > c.max {
				t.Errorf("delay %v at the end, want %v-%v; stats %+v", st.Delay, c.min, c.max, st)
			}
			if (st.Shrunk > 0) != c.shrinks {
				t.Errorf("shrunk %d times, want shrinking %v: %+v", st.Shrunk, c.shrinks, st)
			}
			if len(got) < n-2 || st.Late > 2 {
				t.Errorf("played %d of %d, late %d", len(got), n, st.Late)
			}
			for i := 1; i < len(got); i++ {
				if got[i].seq <= got[i-1].seq {
					t.Fatalf("out of order: %d after %d", got[i].seq, got[i-1].seq)
				}
				// A shrink step sends a packet 1 ms sooner than its pace
				// (the scheduler here pops on whole milliseconds).
				if gap := got[i].at - got[i-1].at; c.paced && got[i].seq == got[i-1].seq+1 && gap < frame-2*time.Millisecond {
					t.Fatalf("packet %d %v after the previous one", got[i].seq, gap)
				}
			}
		})
	}
}

// TestAdaptiveLateArrivals: a packet that comes after its successor was
// played grows the delay as one still in time does, so the next one like
// it plays; a copy far older than the largest delay (a stale duplicate the
// ring no longer holds) leaves the delay alone.
func TestAdaptiveLateArrivals(t *testing.T) {
	cases := []struct {
		name      string
		extra     arrival // pushed besides 200 packets of a clean stream
		wantGrown bool
	}{
		// Packet 100 comes 30 ms late, after 101 (due 8 ms after it came) played.
		{"after its successor", arrival{100, 100 * 960, false, 100*frame + 30*time.Millisecond}, true},
		{"stale copy", arrival{20, 20 * 960, false, 150 * frame}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := New(Config{Mode: Adaptive, Target: 8 * time.Millisecond, Max: 120 * time.Millisecond})
			as := spurt(0, 0, 0, 200, none)
			if c.extra.seq == 100 {
				as = slices.DeleteFunc(as, func(a arrival) bool { return a.seq == 100 })
			}
			run(b, 1, append(as, c.extra))
			st := b.Stats()
			if (st.Grown > 0) != c.wantGrown {
				t.Errorf("grown %d, want growth %v: %+v", st.Grown, c.wantGrown, st)
			}
			if c.wantGrown && st.Delay < 30*time.Millisecond {
				t.Errorf("delay %v after a packet 30 ms late, want at least 30 ms: %+v", st.Delay, st)
			}
		})
	}
}
