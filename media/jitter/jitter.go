// Package jitter is the anchor's jitter buffer for one inbound RTP stream,
// a plain type driven by the caller's clock: Push a packet when it arrives,
// Pop what is due at a time, NextDeadline for when to look again.
//
// A packet's playout time is set when it arrives: the talk spurt's base
// time, plus the distance of its RTP timestamp from the base's, plus the
// buffer's delay. The base is the earliest any packet of the spurt arrived
// for its timestamp (arrival − timestamp distance, the least so far), as
// NetEq measures delay relative to the fastest packet: the first packet of
// a spurt anchors it, and a later packet that comes earlier than its
// timestamp says moves the base, and what is held, that much earlier
// (advance), so a first packet delayed by jitter no longer delays the rest
// of the spurt. So output is paced by timestamp: Opus DTX (a timestamp
// jump with no sequence gap) is a pause, not a loss. The delay changes
// only when a talk spurt starts (marker bit) or when packets come later
// than it allows (grow), or keep coming well within it for a few seconds
// (shrink, a millisecond a 20 ms packet), so no frame is stretched or
// squeezed by more than that; moving the base earlier only
// ever sends a packet sooner than the previous one's pace. The playout is
// re-anchored at a talk spurt too, which absorbs the sender's clock drift;
// a stream that never pauses is re-anchored when its packets keep coming
// too late.
//
// Modes: Off relays at once in arrival order; Fixed holds every packet for
// Target; Adaptive (sori-anchor's default) sets the delay from the measured
// jitter, within [Min, Max].
package jitter

import (
	"math"
	"time"
)

// Mode is how the buffer delays packets.
type Mode int

// Modes.
const (
	Off Mode = iota
	Fixed
	Adaptive
)

func (m Mode) String() string {
	switch m {
	case Fixed:
		return "fixed"
	case Adaptive:
		return "adaptive"
	}
	return "off"
}

// Config configures a Buffer.
type Config struct {
	Mode      Mode
	ClockRate uint32        // RTP clock (48000 for Opus)
	Target    time.Duration // Fixed: the delay. Adaptive: the first delay (default Min)
	Min, Max  time.Duration // Adaptive bounds (default 0 and 120 ms)
	// Capacity is the most packets held (default 256, rounded up to a
	// power of two). A Fixed or Adaptive buffer's ring starts smaller
	// (firstSlots) and doubles, up to Capacity, when a packet comes beyond
	// it; see firstSlots.
	Capacity int
}

// Packet is one RTP packet in the buffer. Payload is not copied: the
// buffer holds it until Pop returns it (or drops it, see Push).
type Packet struct {
	SSRC    uint32
	Seq     uint16
	TS      uint32
	Marker  bool
	Payload []byte
	// Samples is how much audio the packet carries, in timestamp units
	// (for Opus, from its TOC byte: media/opus); 0 when unknown. A packet
	// that follows the previous one in sequence but starts after that one
	// ended comes after a DTX pause: a talk spurt starts, as with a marker.
	Samples uint32
}

// Result says what Push did with a packet.
type Result int

// Results. Anything but Queued means the packet was dropped, and its
// payload is the caller's again.
const (
	Queued    Result = iota
	Late             // its playout time had passed, or a later packet was played
	Duplicate        // already queued or played
	Overflow         // Off mode: the queue is full
)

// Stats are the buffer's counters.
type Stats struct {
	Queued, Played      uint64
	Late, Duplicates    uint64
	Reordered, Overflow uint64 // Overflow: packets given up because the window moved past them
	Resyncs             uint64 // playout re-anchored within a talk spurt (drift, stalls)
	Advanced            uint64 // playout base moved earlier: a packet came earlier than the base said (advance)
	Grown               uint64 // adaptive delay raised within a talk spurt because packets came too late
	Shrunk              uint64 // adaptive delay lowered within a talk spurt: packets kept coming well within it
	DTX                 uint64 // pauses seen (a packet starting after the previous one ended, no sequence gap)
	SSRCChanges         uint64
	Delay               time.Duration // the current (nominal) delay
	DelaySum            time.Duration // the delay each queued packet was given, summed: DelaySum/Queued is the mean
	MaxDelay            time.Duration // the longest a packet was held
}

// firstSlots is the ring a Fixed or Adaptive buffer starts with: at 50
// packets/s, 320 ms from the playout point, more than the most delay
// (Max, 120 ms by default) holds. The ring doubles up to Capacity when a
// packet arrives beyond it (a longer delay, shorter frames, a burst after
// a stall), so what is queued and played is as with a ring of Capacity;
// a packet far beyond even Capacity moves the window instead (Overflow).
//
// Why small: a worker of sori-anchor plays 1600 streams at once, and every
// packet lands in the next slot of its stream's ring, so the whole rings
// are the working set: 256 slots are 20 KB a stream, 32 MB for 1600,
// where 16 slots are 1.3 KB and 2 MB, within a core's L2 cache.
// BenchmarkManyStreams: see jitter_test.go.
const firstSlots = 16

// startBack is how far before the first packet of a stream the playout
// point starts (a quarter of the ring, at most 8 packets: 160 ms of 20 ms
// frames, more than the most delay), so that packets sent before it but
// arriving after it still play.
func startBack(slots int) int64 { return int64(min(slots/4, 8)) }

// empty marks a free slot: no extended sequence number is this low.
const empty = math.MinInt64

type slot struct {
	ext     int64 // extended sequence number; empty: free
	due     int64 // playout time, unix nanoseconds
	arrived int64
	played  bool
	pkt     Packet
}

// Buffer is one stream's jitter buffer.
type Buffer struct {
	cfg   Config
	slots []slot
	mask  int64
	most  int // the ring's largest size, a power of two

	started bool
	ssrc    uint32
	head    int64 // extended seq of the next packet to play
	high    int64 // highest extended seq pushed
	delay   time.Duration

	// Playout anchor: due(ts) = anchorAt + (extTS - anchorTS)/rate + delay.
	anchorAt int64
	anchorTS int64
	highTS   int64

	// Jitter estimate (RFC 3550 A.8, in nanoseconds) for Adaptive.
	haveTransit bool
	transit     float64
	jitter      float64

	lateRun int   // consecutive packets that came too late
	highEnd int64 // extended timestamp where the highest packet's audio ends; 0: unknown

	// Drift: the earliest a packet arrived, relative to the anchor, over
	// the current window of packets. Jitter only ever makes packets later,
	// so this minimum moves only when the sender's clock and ours drift
	// apart (or the path changes); the anchor follows it (earlier at once:
	// advance).
	winMin   int64
	winCount int

	// Shrink (Adaptive): the latest packet of each of the last
	// peakWindows drift windows (winMax, then peaks), on the same base as
	// winMin; when even the latest of them would have played with less
	// delay, shrinkLeft is what the delay still sheds, a step a packet.
	winMax     int64
	peaks      [peakWindows - 1]int64
	peakCount  int // complete windows in peaks since the anchor
	shrinkLeft int64
	guessed    bool // Adaptive: the delay is still New's first guess (Target), no window measured yet

	fifo       []Packet // Off mode
	fifoHead   int
	fifoLen    int
	stats      Stats
	clockNanos float64 // nanoseconds per timestamp unit
}

// New returns a Buffer.
func New(c Config) *Buffer {
	if c.ClockRate == 0 {
		c.ClockRate = 48000
	}
	if c.Max == 0 {
		c.Max = 120 * time.Millisecond
	}
	if c.Min > c.Max {
		c.Min = c.Max
	}
	n := 256
	if c.Capacity > 0 {
		n = 1
		for n < c.Capacity {
			n <<= 1
		}
	}
	b := &Buffer{cfg: c, most: n, clockNanos: 1e9 / float64(c.ClockRate)}
	if c.Mode == Off {
		b.fifo = make([]Packet, n)
		b.mask = int64(n - 1)
	} else {
		b.setRing(min(n, firstSlots))
	}
	switch c.Mode {
	case Fixed:
		b.delay = c.Target
	case Adaptive:
		if c.Target == 0 {
			c.Target = 40 * time.Millisecond // until the jitter is measured
		}
		b.delay = min(max(c.Target, c.Min), c.Max)
		b.guessed = true
	}
	b.stats.Delay = b.delay
	return b
}

// Stats returns the counters.
func (b *Buffer) Stats() Stats { return b.stats }

// Len is the number of packets held.
func (b *Buffer) Len() int {
	if b.cfg.Mode == Off {
		return b.fifoLen
	}
	n := 0
	for e := b.head; e <= b.high && e < b.head+int64(len(b.slots)); e++ {
		if s := &b.slots[e&b.mask]; s.ext == e && !s.played {
			n++
		}
	}
	return n
}

// Push adds a packet that arrived at now.
func (b *Buffer) Push(p Packet, now time.Time) Result {
	t := now.UnixNano()
	if b.cfg.Mode == Off {
		if b.fifoLen == len(b.fifo) {
			b.stats.Overflow++
			return Overflow
		}
		b.fifo[(b.fifoHead+b.fifoLen)&int(b.mask)] = p
		b.fifoLen++
		b.stats.Queued++
		return Queued
	}
	if !b.started || p.SSRC != b.ssrc {
		if b.started {
			b.stats.SSRCChanges++
			b.clear()
		}
		b.started, b.ssrc = true, p.SSRC
		// Packets sent before this one may still come (reordering): the
		// playout point starts a quarter of the window earlier.
		b.head, b.high = int64(p.Seq)-startBack(b.most), int64(p.Seq)
		b.highTS = int64(p.TS)
		b.haveTransit = false
		b.anchor(int64(p.TS), t)
	}
	ext := b.extSeq(p.Seq)
	ets := b.extTS(p.TS)
	b.updateJitter(ets, t)

	if ext < b.head {
		if s := &b.slots[ext&b.mask]; s.ext == ext && s.played {
			b.stats.Duplicates++
			return Duplicate
		}
		b.stats.Late++
		// Grow only for lateness the largest delay would have covered: a
		// packet later than that (a stale duplicate the ring no longer
		// holds, a straggler of a long stall) says nothing of the jitter.
		if due := b.due(ets); t-due+int64(growMargin) <= int64(b.cfg.Max-b.delay) {
			b.growFor(due, t)
		}
		return Late
	}
	if need := ext - b.head + 1; need > int64(len(b.slots)) && need <= int64(b.most) {
		b.grow(int(need))
	}
	if ext >= b.head+int64(len(b.slots)) {
		// Far ahead of the playout point (a long loss, a stall): what is
		// held before the window is given up so the stream goes on.
		newHead := ext - int64(len(b.slots)) + 1
		for e := b.head; e < newHead && e <= b.high && e < b.head+int64(len(b.slots)); e++ {
			if s := &b.slots[e&b.mask]; s.ext == e && !s.played {
				b.stats.Overflow++
				*s = slot{ext: empty}
			}
		}
		b.head = newHead
	}
	s := &b.slots[ext&b.mask]
	if s.ext == ext {
		b.stats.Duplicates++
		return Duplicate
	}

	// After a DTX pause the sender may not set the marker bit; the Opus
	// durations tell the pause anyway.
	dtx := ext == b.high+1 && b.highEnd != 0 && ets > b.highEnd+int64(b.cfg.ClockRate/100) // > 10 ms of nothing
	if dtx {
		b.stats.DTX++
	}
	// A talk spurt starts: the delay may change, and the playout is
	// anchored on this packet. Only when nothing of the previous spurt is
	// still waiting, so the spurts cannot overlap.
	if (p.Marker || dtx) && ext > b.high && b.Len() == 0 {
		if b.cfg.Mode == Adaptive {
			b.delay = b.target()
			b.stats.Delay = b.delay
		}
		b.anchor(ets, t)
	}
	// How late the packet is for the base (span: one division, which
	// the anchor's moves below leave as it is).
	sp := b.span(ets - b.anchorTS)
	off := t - (b.anchorAt + sp)
	if off < -earlyStep {
		b.advance(-off)
		off = 0
	}
	b.followDrift(off)
	if b.shrinkLeft > 0 && ext == b.high+1 && ets > b.highTS {
		b.shrink(ets - b.highTS)
	}
	due := b.anchorAt + sp + int64(b.delay)
	due += int64(b.growFor(due, t))
	if due < t {
		// Too late to play. Several in a row: the path got longer at once.
		b.lateRun++
		if b.lateRun < 3 {
			b.stats.Late++
			return Late
		}
		b.resync(ets, t)
		due = b.due(ets)
	}
	b.lateRun = 0

	if ext < b.high {
		b.stats.Reordered++
	}
	*s = slot{ext: ext, due: due, arrived: t, pkt: p}
	if ext > b.high {
		b.highEnd = 0
		if p.Samples > 0 {
			b.highEnd = ets + int64(p.Samples)
		}
	}
	b.high = max(b.high, ext)
	b.highTS = max(b.highTS, ets)
	b.stats.Queued++
	b.stats.DelaySum += b.delay
	return Queued
}

// growFor grows an adaptive delay that a packet due at due, arriving at
// t, came too late for, and returns by how much. It grows at once: the
// stream pauses for the difference (no frame is stretched); it shrinks at
// talk spurts, and within one a step a packet (shrink). A packet that
// comes after the one following it was played grows it too, as NetEq's
// delay manager counts every arrival: else a path that delays one packet
// a second past its successor's playout loses that packet every time.
func (b *Buffer) growFor(due, t int64) time.Duration {
	if due >= t || b.cfg.Mode != Adaptive || b.delay >= b.cfg.Max {
		return 0
	}
	grown := min(max(b.target(), b.delay+time.Duration(t-due)+growMargin), b.cfg.Max)
	d := grown - b.delay
	b.delay = grown
	b.shrinkLeft = 0
	b.stats.Delay = grown
	b.stats.Grown++
	return d
}

func (b *Buffer) resync(ets, t int64) {
	b.anchor(ets, t)
	b.stats.Resyncs++
}

func (b *Buffer) anchor(ets, t int64) {
	b.anchorTS, b.anchorAt = ets, t
	b.lateRun, b.winCount = 0, 0
	b.peakCount, b.shrinkLeft = 0, 0
}

// growMargin is what an adaptive delay keeps over the latest packet it
// has to wait for: when it grows for a late packet, and when it shrinks.
const growMargin = 5 * time.Millisecond

// Shrinking within a talk spurt. Phones that send no DTX (most, by
// default) never start another spurt, so a delay that grew for a stall, or
// the first 40 ms before the jitter was measured, would stay for the
// whole call. So, as NetEq accelerates when its buffer runs above its
// target for a while, the delay comes down to what the last peakWindows
// seconds needed: the latest packet of those windows plus growMargin (and
// no less than target and Min); New's first guess comes down after the
// first window already, to what that one needed. The audio is not touched (Opus passes
// through): each packet goes out shrinkShare of its own duration sooner
// than its pace, 1 ms for a 20 ms frame, which the next hop's buffer
// takes as a packet a little early, never late. 40 ms come down to 10 in
// 0.6 s; a stall every few seconds keeps the delay it needs.
const (
	peakWindows = 4
	shrinkShare = 20 // 1/20 of a packet's duration
)

// shrink lowers the delay by one step for a packet units of timestamp
// after the previous one.
func (b *Buffer) shrink(units int64) {
	step := min(b.shrinkLeft, b.span(units)/shrinkShare)
	b.delay -= time.Duration(step)
	b.shrinkLeft -= step
	b.stats.Delay = b.delay
}

// planShrink, at the end of a drift window, sets what the delay sheds if
// the latest packet of the last peakWindows windows would have played
// with growMargin to spare under a smaller one.
func (b *Buffer) planShrink() {
	latest := b.winMax
	for _, p := range b.peaks[:b.peakCount] {
		latest = max(latest, p)
	}
	copy(b.peaks[1:], b.peaks[:len(b.peaks)-1])
	b.peaks[0] = b.winMax
	guessed := b.guessed
	b.guessed = false
	if b.peakCount < len(b.peaks) {
		b.peakCount++
		if !guessed {
			return
		}
		// The first window of a stream replaces New's guess (40 ms) with
		// what it measured: waiting peakWindows for it held every call's
		// first 4.6 s at 40 ms (sori-mediabench, 200 calls on loopback:
		// mean delay 20 ms over the first 12 s, 8 ms after). A later
		// packet that needs more grows the delay at once, as ever.
	}
	if b.cfg.Mode != Adaptive {
		return
	}
	want := max(time.Duration(latest)+growMargin, b.target(), b.cfg.Min)
	if want >= b.delay-time.Millisecond {
		b.shrinkLeft = 0
		return
	}
	if b.shrinkLeft == 0 {
		b.stats.Shrunk++
	}
	b.shrinkLeft = int64(b.delay - want)
}

// earlyStep is how much earlier than the base says a packet must come to
// move the base (advance): less is below what the worker's wake-ups can
// tell, and would only cost a pass over the ring more often.
const earlyStep = int64(250 * time.Microsecond)

// advance moves the playout base d nanoseconds earlier, and with it every
// packet held: the packet that just came was that much faster than the one
// the base was taken from, so that one (and the spurt's pace since) was
// late by jitter, not by the path. Without it, a spurt whose first packet
// was delayed plays every packet late by as much (up to driftStep, when
// followDrift moved the anchor after a whole window): the relay's p99
// latency was 7 ms over the buffer's delay at 400 calls. A held packet is
// sent that much sooner (at once if that is past), in sequence order as
// ever; the one that follows what was already played comes d sooner than
// its pace, which the next hop's buffer takes as a packet early, never
// late. The drift window's minimum is restated on the new base.
func (b *Buffer) advance(d int64) {
	b.anchorAt -= d
	for e := b.head; e <= b.high && e < b.head+int64(len(b.slots)); e++ {
		if s := &b.slots[e&b.mask]; s.ext == e && !s.played {
			s.due -= d
		}
	}
	if b.winCount > 0 {
		b.winMin += d
		b.winMax += d
	}
	for i := range b.peaks[:b.peakCount] {
		b.peaks[i] += d
	}
	b.stats.Advanced++
}

// driftWindow packets (1 s of 20 ms frames) make one drift measurement;
// the anchor moves when the stream drifted more than driftStep. As advance
// follows every packet that comes early, what the window finds is packets
// coming later: a sender's clock slower than ours, or a longer path.
const (
	driftWindow = 50
	driftStep   = int64(5 * time.Millisecond)
)

// followDrift takes a packet's offset: its arrival less what the anchor
// says.
func (b *Buffer) followDrift(offset int64) {
	if b.winCount == 0 || offset < b.winMin {
		b.winMin = offset
	}
	if b.winCount == 0 || offset > b.winMax {
		b.winMax = offset
	}
	b.winCount++
	if b.winCount < driftWindow {
		return
	}
	if b.winMin > driftStep || b.winMin < -driftStep {
		// Later offsets are measured from the moved anchor: restate the
		// window peaks on it.
		b.anchorAt += b.winMin
		b.winMax -= b.winMin
		for i := range b.peaks[:b.peakCount] {
			b.peaks[i] -= b.winMin
		}
		b.stats.Resyncs++
	}
	b.planShrink()
	b.winCount = 0
}

func (b *Buffer) due(ets int64) int64 {
	return b.anchorAt + b.span(ets-b.anchorTS) + int64(b.delay)
}

// span is a timestamp distance in nanoseconds, exact for 48 kHz.
func (b *Buffer) span(units int64) int64 { return units * int64(time.Second) / int64(b.cfg.ClockRate) }

// Pop returns the next packet due at now, in sequence order; a missing
// packet is waited for until the one after it is due.
func (b *Buffer) Pop(now time.Time) (Packet, bool) {
	if b.cfg.Mode == Off {
		if b.fifoLen == 0 {
			return Packet{}, false
		}
		p := b.fifo[b.fifoHead]
		b.fifo[b.fifoHead] = Packet{}
		b.fifoHead = (b.fifoHead + 1) & int(b.mask)
		b.fifoLen--
		b.stats.Played++
		return p, true
	}
	t := now.UnixNano()
	for e := b.head; e <= b.high && e < b.head+int64(len(b.slots)); e++ {
		s := &b.slots[e&b.mask]
		if s.ext != e || s.played {
			continue
		}
		if s.due > t {
			return Packet{}, false
		}
		s.played = true
		p := s.pkt
		s.pkt.Payload = nil
		b.head = e + 1
		b.stats.Played++
		if held := time.Duration(t - s.arrived); held > b.stats.MaxDelay {
			b.stats.MaxDelay = held
		}
		return p, true
	}
	return Packet{}, false
}

// NextDeadline is when the next held packet is due (false: none held).
func (b *Buffer) NextDeadline() (time.Time, bool) {
	if b.cfg.Mode == Off {
		return time.Time{}, false // everything is due at once
	}
	for e := b.head; e <= b.high && e < b.head+int64(len(b.slots)); e++ {
		if s := &b.slots[e&b.mask]; s.ext == e && !s.played {
			return time.Unix(0, s.due), true
		}
	}
	return time.Time{}, false
}

// setRing makes an empty ring of n slots.
func (b *Buffer) setRing(n int) {
	b.slots = make([]slot, n)
	b.mask = int64(n - 1)
	for i := range b.slots {
		b.slots[i].ext = empty
	}
}

// grow doubles the ring until it holds need slots from the playout point
// (need <= b.most). What waits is kept; so are the played packets behind
// the playout point whose slots the new ring leaves free, which only tell
// duplicates.
func (b *Buffer) grow(need int) {
	n := len(b.slots)
	for n < need {
		n <<= 1
	}
	old := b.slots
	b.setRing(n)
	for i := range old {
		if o := &old[i]; o.ext != empty && o.ext >= b.head {
			b.slots[o.ext&b.mask] = *o
		}
	}
	for i := range old {
		if o := &old[i]; o.ext != empty && o.ext < b.head && b.slots[o.ext&b.mask].ext == empty {
			b.slots[o.ext&b.mask] = *o
		}
	}
}

func (b *Buffer) clear() {
	for i := range b.slots {
		b.slots[i] = slot{ext: empty}
	}
}

// extSeq extends a sequence number to the one nearest the highest seen.
func (b *Buffer) extSeq(seq uint16) int64 {
	d := int64(int16(seq - uint16(b.high)))
	return b.high + d
}

// extTS extends a timestamp to the one nearest the highest seen.
func (b *Buffer) extTS(ts uint32) int64 {
	d := int64(int32(ts - uint32(b.highTS)))
	return b.highTS + d
}

// updateJitter keeps RFC 3550's interarrival jitter, in nanoseconds.
func (b *Buffer) updateJitter(ets, t int64) {
	transit := float64(t) - float64(ets)*b.clockNanos
	if b.haveTransit {
		b.jitter += (math.Abs(transit-b.transit) - b.jitter) / 16
	}
	b.transit, b.haveTransit = transit, true
}

// target is the adaptive delay: enough for the packets the jitter delays
// most (four times RFC 3550's mean deviation), within the bounds.
func (b *Buffer) target() time.Duration {
	d := time.Duration(4 * b.jitter)
	return min(max(d, b.cfg.Min), b.cfg.Max)
}

// Jitter is the interarrival jitter the buffer measures.
func (b *Buffer) Jitter() time.Duration { return time.Duration(b.jitter) }
