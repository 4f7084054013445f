// Package rtpstats keeps a received RTP stream's statistics as RFC 3550
// defines them: sequence tracking with wrap and restarts (A.1), expected
// and lost packets and the fraction lost per report interval (A.3), and
// interarrival jitter (A.8); plus duplicates and reordered packets, which
// the RFC's own counters fold into "received".
package rtpstats

import (
	"math"
	"time"
)

const (
	seqMod      = 1 << 16
	maxDropout  = 3000 // RFC 3550 A.1
	maxMisorder = 100
	window      = 1024 // sequence numbers behind the highest remembered for duplicates
)

// Arrival is how one packet was classified.
type Arrival int

// Arrivals.
const (
	InOrder   Arrival = iota // the next or a later sequence number
	Reordered                // an earlier, missing one
	Duplicate                // seen already
	Restart                  // a jump the source is taken to have restarted from
	Stray                    // a big jump, ignored until the next packet confirms it
)

// Receiver is the statistics of one stream (one SSRC) as received.
type Receiver struct {
	clockRate float64

	started  bool
	ssrc     uint32
	baseSeq  uint32
	maxSeq   uint16
	cycles   uint32
	badSeq   uint32
	received uint32 // distinct packets
	seen     [window / 64]uint64

	expectedPrior, receivedPrior uint32

	duplicates, reordered uint64
	bursts                uint64 // gaps in the sequence (runs of lost packets)

	// RFC 3611 §4.7.2 burst/gap state, in sequence order as packets arrive
	// in order: losses closer than Gmin received packets to each other
	// form a burst; a lost packet alone is a loss in a gap.
	bg          burstGap
	lastTS      uint32
	unitsPerPkt uint32 // timestamp units between consecutive packets (from the stream)

	haveTransit bool
	transit     float64
	jitter      float64 // timestamp units
}

// New returns a Receiver for an RTP clock rate (48000 for Opus).
func New(clockRate uint32) *Receiver { return &Receiver{clockRate: float64(clockRate)} }

// Update records a packet. A new SSRC starts the statistics over.
func (r *Receiver) Update(ssrc uint32, seq uint16, ts uint32, arrival time.Time) Arrival {
	if !r.started || ssrc != r.ssrc {
		r.reset(ssrc, seq)
		r.mark(r.ext(seq))
		r.received = 1
		r.bg.received()
		r.lastTS = ts
		r.jitterUpdate(ts, arrival)
		return InOrder
	}
	udelta := seq - r.maxSeq
	switch {
	case udelta == 0:
		r.duplicates++
		return Duplicate
	case udelta < maxDropout:
		if seq < r.maxSeq {
			r.cycles += seqMod
		}
		old := r.maxSeq
		if udelta > 1 {
			r.bursts++ // a reordered packet may fill it later; the count is an upper bound
			r.bg.lost(int(udelta - 1))
		} else if d := ts - r.lastTS; d > 0 && d < 48000 {
			r.unitsPerPkt = d
		}
		r.bg.received()
		r.lastTS = ts
		r.maxSeq = seq
		r.advance(old, seq)
		r.mark(r.ext(seq))
		r.received++
		r.jitterUpdate(ts, arrival)
		return InOrder
	case udelta <= seqMod-maxMisorder:
		// A very large jump: the source restarted, if the next packet
		// follows this one (RFC 3550 A.1).
		if uint32(seq) == r.badSeq {
			r.reset(ssrc, seq)
			r.mark(r.ext(seq))
			r.received = 1
			r.haveTransit = false
			r.jitterUpdate(ts, arrival)
			return Restart
		}
		r.badSeq = (uint32(seq) + 1) & (seqMod - 1)
		return Stray
	default:
		// Behind the highest: late, or a duplicate.
		ext := r.ext(seq)
		if ext < r.baseSeq {
			return Stray // from before the stream started
		}
		if r.marked(ext) {
			r.duplicates++
			return Duplicate
		}
		r.mark(ext)
		r.received++
		r.reordered++
		r.jitterUpdate(ts, arrival)
		return Reordered
	}
}

// burstGap follows RFC 3611's burst and gap periods with Gmin = 16.
type burstGap struct {
	run int // received packets since the last loss

	// the current cluster of losses (a burst once it has two)
	clusterLost, clusterPkts int

	burstLost, burstPkts, bursts uint64
	gapLost, gapPkts             uint64
}

const gmin = 16

func (b *burstGap) lost(n int) {
	if b.clusterLost > 0 && b.run < gmin {
		// Close to the previous loss: the same cluster, with the packets
		// received in between.
		b.clusterPkts += b.run + n
		b.clusterLost += n
	} else {
		b.closeCluster()
		b.gapPkts += uint64(b.run)
		b.clusterLost, b.clusterPkts = n, n
	}
	b.run = 0
}

func (b *burstGap) received() {
	b.run++
	if b.run == gmin {
		b.closeCluster()
	}
}

// closeCluster files the current cluster: a burst when it lost more than
// one packet, else a loss within a gap.
func (b *burstGap) closeCluster() {
	switch {
	case b.clusterLost > 1:
		b.bursts++
		b.burstLost += uint64(b.clusterLost)
		b.burstPkts += uint64(b.clusterPkts)
	case b.clusterLost == 1:
		b.gapLost++
		b.gapPkts++
	}
	b.clusterLost, b.clusterPkts = 0, 0
}

// BurstGap is RFC 3611 §4.7.2's burst and gap metrics.
type BurstGap struct {
	BurstDensity, GapDensity uint8 // fraction lost in bursts, in gaps (x/256)
	BurstDuration            time.Duration
	GapDuration              time.Duration
}

func (r *Receiver) burstGap() BurstGap {
	b := r.bg
	b.closeCluster() // the one in progress counts as it stands
	gapPkts := b.gapPkts + uint64(b.run)
	var out BurstGap
	if b.burstPkts > 0 {
		out.BurstDensity = uint8(min(b.burstLost*256/b.burstPkts, 255))
	}
	if gapPkts > 0 {
		out.GapDensity = uint8(min(b.gapLost*256/gapPkts, 255))
	}
	per := time.Duration(r.unitsPerPkt) * time.Second / time.Duration(r.clockRate)
	if per == 0 {
		per = 20 * time.Millisecond
	}
	if b.bursts > 0 {
		out.BurstDuration = time.Duration(b.burstPkts/b.bursts) * per
	}
	if gaps := b.bursts + 1; gapPkts > 0 {
		out.GapDuration = time.Duration(gapPkts/gaps) * per
	}
	return out
}

func (r *Receiver) reset(ssrc uint32, seq uint16) {
	*r = Receiver{clockRate: r.clockRate, started: true, ssrc: ssrc, baseSeq: uint32(seq), maxSeq: seq, badSeq: seqMod + 1,
		duplicates: r.duplicates, reordered: r.reordered, bursts: r.bursts, bg: r.bg, unitsPerPkt: r.unitsPerPkt}
}

// ext extends seq to 32 bits relative to the highest seen.
func (r *Receiver) ext(seq uint16) uint32 {
	e := r.cycles + uint32(seq)
	if seq > r.maxSeq && seq-r.maxSeq > seqMod/2 && r.cycles >= seqMod {
		e -= seqMod // just before a wrap we have already counted
	}
	return e
}

// The bitmap of sequence numbers seen, indexed by extended seq modulo the
// window; advance clears the slots the new highest moves past.
func (r *Receiver) advance(old, seq uint16) {
	for s := old + 1; s != seq+1; s++ {
		r.unmark(uint32(s))
	}
}

func (r *Receiver) mark(ext uint32)   { r.seen[(ext%window)/64] |= 1 << (ext % 64) }
func (r *Receiver) unmark(ext uint32) { r.seen[(ext%window)/64] &^= 1 << (ext % 64) }
func (r *Receiver) marked(ext uint32) bool {
	if r.ext(r.maxSeq)-ext >= window {
		return true // too old to tell: treat as seen, never count twice
	}
	return r.seen[(ext%window)/64]&(1<<(ext%64)) != 0
}

// jitterUpdate applies RFC 3550 A.8: J += (|D| - J) / 16, in timestamp units.
func (r *Receiver) jitterUpdate(ts uint32, arrival time.Time) {
	at := float64(arrival.UnixNano()) * r.clockRate / 1e9
	transit := at - float64(ts)
	if r.haveTransit {
		d := transit - r.transit
		// The timestamp may have wrapped between the two packets.
		if d > math.MaxUint32/2 {
			d -= math.MaxUint32 + 1
		} else if d < -math.MaxUint32/2 {
			d += math.MaxUint32 + 1
		}
		r.jitter += (math.Abs(d) - r.jitter) / 16
	}
	r.transit, r.haveTransit = transit, true
}

// Report is what a receiver report block says of the stream (RFC 3550
// §6.4.1), plus the counters the RFC leaves out.
type Report struct {
	SSRC           uint32
	ExtHighestSeq  uint32
	Expected       uint32
	Lost           int32 // cumulative, clamped to 24 bits signed
	FractionLost   uint8 // since the previous Report, in 1/256
	Jitter         uint32
	JitterDuration time.Duration
	Received       uint32 // distinct packets
	Duplicates     uint64
	Reordered      uint64
	Bursts         uint64 // runs of lost packets, for the E-model's burst ratio
	BurstGap       BurstGap
}

// Snapshot returns the statistics without starting a new interval (its
// FractionLost covers the interval so far).
func (r *Receiver) Snapshot() Report {
	ep, rp := r.expectedPrior, r.receivedPrior
	rep := r.Report()
	r.expectedPrior, r.receivedPrior = ep, rp
	return rep
}

// Report returns the statistics and starts a new fraction-lost interval.
func (r *Receiver) Report() Report {
	if !r.started {
		return Report{}
	}
	ext := r.cycles + uint32(r.maxSeq)
	expected := ext - r.baseSeq + 1
	lost := int64(expected) - int64(r.received)
	lost = max(min(lost, 0x7fffff), -0x800000)
	expInterval := expected - r.expectedPrior
	recInterval := r.received - r.receivedPrior
	r.expectedPrior, r.receivedPrior = expected, r.received
	var fraction uint8
	if lostInterval := int64(expInterval) - int64(recInterval); expInterval != 0 && lostInterval > 0 {
		fraction = uint8(lostInterval << 8 / int64(expInterval))
	}
	return Report{
		SSRC: r.ssrc, ExtHighestSeq: ext, Expected: expected, Lost: int32(lost), FractionLost: fraction,
		Jitter: uint32(r.jitter), JitterDuration: time.Duration(r.jitter / r.clockRate * float64(time.Second)),
		Received: r.received, Duplicates: r.duplicates, Reordered: r.reordered, Bursts: r.bursts,
		BurstGap: r.burstGap(),
	}
}

// State is everything a Receiver has counted, for an anchor that keeps its
// calls across a restart: Restore continues the statistics where they were.
type State struct {
	Started       bool      `json:"started,omitempty"`
	SSRC          uint32    `json:"ssrc,omitempty"`
	BaseSeq       uint32    `json:"base_seq,omitempty"`
	MaxSeq        uint16    `json:"max_seq,omitempty"`
	Cycles        uint32    `json:"cycles,omitempty"`
	BadSeq        uint32    `json:"bad_seq,omitempty"`
	Received      uint32    `json:"received,omitempty"`
	Seen          []uint64  `json:"seen,omitempty"`
	ExpectedPrior uint32    `json:"expected_prior,omitempty"`
	ReceivedPrior uint32    `json:"received_prior,omitempty"`
	Duplicates    uint64    `json:"duplicates,omitempty"`
	Reordered     uint64    `json:"reordered,omitempty"`
	Bursts        uint64    `json:"bursts,omitempty"`
	BurstGap      [8]uint64 `json:"burst_gap"` // run, cluster lost and packets, burst lost, packets and count, gap lost and packets
	LastTS        uint32    `json:"last_ts,omitempty"`
	UnitsPerPkt   uint32    `json:"units_per_pkt,omitempty"`
	HaveTransit   bool      `json:"have_transit,omitempty"`
	Transit       float64   `json:"transit,omitempty"`
	Jitter        float64   `json:"jitter,omitempty"`
}

// State returns what r has counted.
func (r *Receiver) State() State {
	b := r.bg
	return State{
		Started: r.started, SSRC: r.ssrc, BaseSeq: r.baseSeq, MaxSeq: r.maxSeq, Cycles: r.cycles, BadSeq: r.badSeq,
		Received: r.received, Seen: append([]uint64(nil), r.seen[:]...),
		ExpectedPrior: r.expectedPrior, ReceivedPrior: r.receivedPrior,
		Duplicates: r.duplicates, Reordered: r.reordered, Bursts: r.bursts,
		BurstGap: [8]uint64{uint64(b.run), uint64(b.clusterLost), uint64(b.clusterPkts), b.burstLost, b.burstPkts, b.bursts, b.gapLost, b.gapPkts},
		LastTS:   r.lastTS, UnitsPerPkt: r.unitsPerPkt, HaveTransit: r.haveTransit, Transit: r.transit, Jitter: r.jitter,
	}
}

// Restore puts back what State returned, keeping r's clock rate.
func (r *Receiver) Restore(s State) {
	*r = Receiver{clockRate: r.clockRate,
		started: s.Started, ssrc: s.SSRC, baseSeq: s.BaseSeq, maxSeq: s.MaxSeq, cycles: s.Cycles, badSeq: s.BadSeq,
		received: s.Received, expectedPrior: s.ExpectedPrior, receivedPrior: s.ReceivedPrior,
		duplicates: s.Duplicates, reordered: s.Reordered, bursts: s.Bursts,
		bg: burstGap{run: int(s.BurstGap[0]), clusterLost: int(s.BurstGap[1]), clusterPkts: int(s.BurstGap[2]),
			burstLost: s.BurstGap[3], burstPkts: s.BurstGap[4], bursts: s.BurstGap[5], gapLost: s.BurstGap[6], gapPkts: s.BurstGap[7]},
		lastTS: s.LastTS, unitsPerPkt: s.UnitsPerPkt, haveTransit: s.HaveTransit, transit: s.Transit, jitter: s.Jitter,
	}
	copy(r.seen[:], s.Seen)
}
