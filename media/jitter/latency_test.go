package jitter

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The latency a buffer adds over its own delay, on a simulated stream with
// jitter: every packet is sent at its timestamp's time, crosses a path of
// latPath plus its jitter, and is popped exactly when due (an ideal
// scheduler: the relay's worker adds its own wake-up lateness on top, see
// media/relay). What a packet adds is its playout time minus its send
// time, minus the fastest path, minus the delay the buffer reports then:
// 0 when the buffer holds every packet for its delay after the fastest
// packet's pace, positive when it plays a spurt late because the packet
// it was anchored on came late.

const latPath = time.Millisecond

// latPacket is one packet of a latency script: sent at sent, arriving at.
type latPacket struct {
	seq      uint16
	ts       uint32
	marker   bool
	sent, at time.Duration
}

// latJitter is a mediabench-like jitter: most packets within a
// millisecond, some a few, a few up to 25 ms late.
func latJitter(rng *rand.Rand) time.Duration {
	switch r := rng.IntN(100); {
	case r < 85:
		return time.Duration(rng.Int64N(int64(time.Millisecond)))
	case r < 97:
		return time.Millisecond + time.Duration(rng.Int64N(int64(7*time.Millisecond)))
	default:
		return 8*time.Millisecond + time.Duration(rng.Int64N(int64(17*time.Millisecond)))
	}
}

// latScript is n packets in talk spurts of spurtLen (0: one spurt, as
// sori-mediabench sends: a marker on the first packet only) with 400 ms
// pauses, sorted by arrival.
func latScript(seed uint64, n, spurtLen int) []latPacket {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	out := make([]latPacket, n)
	var sent time.Duration
	for i := range out {
		start := i == 0 || (spurtLen > 0 && i%spurtLen == 0)
		if start && i > 0 {
			sent += 400 * time.Millisecond
		}
		out[i] = latPacket{seq: uint16(i), ts: uint32(int64(sent) * 48000 / int64(time.Second)), marker: start, sent: sent}
		out[i].at = sent + latPath + latJitter(rng)
		sent += frame
	}
	slices.SortStableFunc(out, func(x, y latPacket) int { return int(x.at - y.at) })
	return out
}

// playoutLatency plays a script through b, popping each packet when it is
// due; it appends to over what each played packet added over the buffer's
// delay, and returns the sum of those delays. sent is each packet's send
// time by sequence number.
func playoutLatency(b *Buffer, script []latPacket, sent []time.Duration, over []time.Duration) ([]time.Duration, time.Duration) {
	var delays time.Duration
	pop := func(until time.Duration) {
		for {
			d, ok := b.NextDeadline()
			if !ok || d.Sub(t0) > until {
				return
			}
			at := d.Sub(t0)
			for {
				p, ok := b.Pop(t0.Add(at))
				if !ok {
					break
				}
				over = append(over, at-sent[p.Seq]-latPath-b.stats.Delay)
				delays += b.stats.Delay
			}
		}
	}
	for _, p := range script {
		pop(p.at)
		b.Push(Packet{SSRC: 1, Seq: p.seq, TS: p.ts, Marker: p.marker}, t0.Add(p.at))
		pop(p.at)
	}
	pop(script[len(script)-1].at + time.Hour)
	return over, delays
}

func sendTimes(script []latPacket) []time.Duration {
	sent := make([]time.Duration, 1<<16)
	for _, p := range script {
		sent[p.seq] = p.sent
	}
	return sent
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

var latCases = []struct {
	name     string
	cfg      Config
	spurtLen int
}{
	// sori-anchor's default, on sori-mediabench's stream: one marker, then
	// 50 packets/s without a pause; the delay starts at the first Target
	// (40 ms), grows when packets come later than it allows, and shrinks
	// to what the latest packets of the last seconds need. The delay a
	// packet is measured against is the one when it plays, so a shrink
	// step since it was queued counts as added latency here.
	{"adaptive/continuous", Config{Mode: Adaptive, Max: 120 * time.Millisecond}, 0},
	// A phone's talk spurts of 3 s (400 ms pauses): the adaptive delay is
	// set at each.
	{"adaptive/spurts", Config{Mode: Adaptive, Max: 120 * time.Millisecond}, 150},
	{"fixed40/spurts", Config{Mode: Fixed, Target: 40 * time.Millisecond}, 150},
}

// latStreams and latPackets: each case plays latStreams streams (seeds 1,
// 2, ...) of latPackets packets, 30 s each: across streams, some start on
// a packet that came late, as some of sori-mediabench's calls do.
const (
	latStreams = 20
	latPackets = 1500
)

// latRun plays each script through a new buffer (see playoutLatency),
// and sums the buffers' Late, Grown, Resyncs and Played.
func latRun(cfg Config, scripts [][]latPacket, sents [][]time.Duration, over []time.Duration) ([]time.Duration, time.Duration, Stats) {
	var delays time.Duration
	var st Stats
	for i, script := range scripts {
		b := New(cfg)
		var d time.Duration
		over, d = playoutLatency(b, script, sents[i], over)
		delays += d
		s := b.Stats()
		st.Late += s.Late
		st.Grown += s.Grown
		st.Resyncs += s.Resyncs
		st.Played += s.Played
	}
	return over, delays, st
}

func latScripts(first uint64, spurtLen int) ([][]latPacket, [][]time.Duration) {
	scripts := make([][]latPacket, latStreams)
	sents := make([][]time.Duration, latStreams)
	for i := range scripts {
		scripts[i] = latScript(first+uint64(i), latPackets, spurtLen)
		sents[i] = sendTimes(scripts[i])
	}
	return scripts, sents
}

// TestPlayoutLatencyOverDelay: with an ideal scheduler the buffer adds at
// most 2 ms over its delay at p99 (issue 16's target, the worker's
// wake-ups included), over three sets of streams, and plays nearly
// everything.
func TestPlayoutLatencyOverDelay(t *testing.T) {
	for _, c := range latCases {
		t.Run(c.name, func(t *testing.T) {
			for set := uint64(0); set < 3; set++ {
				scripts, sents := latScripts(1+set*latStreams, c.spurtLen)
				over, _, st := latRun(c.cfg, scripts, sents, nil)
				slices.Sort(over)
				if p99 := quantile(over, 0.99); p99 > 2*time.Millisecond {
					t.Errorf("set %d: p50 %v p99 %v over the delay; late %d, grown %d, resyncs %d", set, quantile(over, 0.5), p99, st.Late, st.Grown, st.Resyncs)
				}
				if lost := latStreams*latPackets - len(over); lost > latStreams*latPackets/200 {
					t.Errorf("set %d: %d of %d not played; late %d", set, lost, latStreams*latPackets, st.Late)
				}
			}
		})
	}
}

// BenchmarkPlayoutLatency plays 20 jittered streams of 30 s (1 500
// packets each, latJitter) per op through new buffers, popping each
// packet when due, and reports what the buffer adds over its own delay:
// p50 and p99 over all packets (p99-over-delay-ms; issue 16's target is
// ≤ 2 ms with the worker's wake-ups), the mean delay it was measured
// against (delay-ms), the share of packets played (played/pkt), and
// ns/pkt for each packet's Push, NextDeadline and Pop with the simulation
// around them.
func BenchmarkPlayoutLatency(b *testing.B) {
	for _, c := range latCases {
		b.Run(c.name, func(b *testing.B) {
			scripts, sents := latScripts(1, c.spurtLen)
			over := make([]time.Duration, 0, latStreams*latPackets)
			var delays time.Duration
			b.ReportAllocs()
			for b.Loop() {
				over, delays, _ = latRun(c.cfg, scripts, sents, over[:0])
			}
			n := len(over)
			slices.Sort(over)
			b.ReportMetric(float64(quantile(over, 0.5))/1e6, "p50-over-delay-ms")
			b.ReportMetric(float64(quantile(over, 0.99))/1e6, "p99-over-delay-ms")
			b.ReportMetric(float64(delays)/float64(max(n, 1))/1e6, "delay-ms")
			b.ReportMetric(float64(n)/float64(latStreams*latPackets), "played/pkt")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*latStreams*latPackets), "ns/pkt")
		})
	}
}
