// Package weather is the loss weather map's model: call records folded
// into cells (hour, network, access type, hop, tag) of counters that add
// across hours and nodes, and the queries that group cells and turn the
// merged counters into figures with their uncertainty.
//
// The backends keep the cells: memweather in the process, redisweather in
// Redis shared by every node. The HTTP handlers are in weather/page, the
// worst recent calls in weather/worst.
package weather

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/weather/stats"
)

// Hops: which direction of a phone's media a cell counts.
const (
	// Uplink is phone → anchor, measured by the anchor from the RTP
	// sequence numbers it received.
	Uplink = "uplink"
	// Downlink is anchor → phone, from the fraction lost in the phone's
	// own RTCP receiver reports.
	Downlink = "downlink"
)

// OtherNetwork names the network of a side the record gives none.
const OtherNetwork = "other"

// Cell is the key counters are kept under.
type Cell struct {
	Hour    time.Time // UTC, the start of the hour
	Network string    // the configured network of the phone, "other" when none
	Access  string    // AccessType's name, "unknown" when none
	Hop     string    // Uplink or Downlink
	Tag     string    // "key=value" of one of the user's tags; "" for the total over all
}

// The fixed bins of the histograms. They are part of the stored data
// (memory and Redis keep counts per bin): changing them needs a Rebuild.
var (
	// LossBins are per-call loss, in %: exactly 0, then up to 0.1, 0.25 ...
	LossBins = stats.Bins{Upper: []float64{0, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100}}
	// JitterBins are per-call jitter, in ms; above 1000 counts in the last.
	JitterBins = stats.Bins{Upper: []float64{5, 10, 20, 30, 40, 60, 80, 100, 150, 200, 300, 500, 1000}}
	// MOSBins are per-call MOS by 0.1 from 1.0 to 4.5 (the E-model's range).
	MOSBins = stats.Bins{Min: 1, Upper: mosBounds()}
)

// Bin counts of the histograms.
const (
	NLossBins   = 15
	NJitterBins = 13
	NMOSBins    = 35
)

func mosBounds() []float64 {
	b := make([]float64, NMOSBins)
	for i := range b {
		b[i] = float64(11+i) / 10 // 1.1 ... 4.5, exact decimal values
	}
	return b
}

// Counters are what a cell keeps: integers only, so that adding them is
// exact and every backend and node gives the same figures for the same
// records. MOS is kept in hundredths.
type Counters struct {
	Calls    int64 // call sides counted (a call between two phones is two)
	Expected int64 // packets expected (see Observe for the downlink)
	Lost     int64 // of them, lost
	Over1    int64 // calls whose loss was above 1 %
	Over5    int64 // calls whose loss was above 5 %
	Loss     [NLossBins]int64
	Jitter   [NJitterBins]int64
	JitterMS int64 // the sum of the calls' jitter, ms
	MOS      [NMOSBins]int64
	MOSCalls int64 // calls with a MOS (the uplink's)
	MOSSum   int64 // Σ MOS·100
	MOSSumSq int64 // Σ (MOS·100)²
}

// Add adds o to c.
func (c *Counters) Add(o *Counters) {
	c.Calls += o.Calls
	c.Expected += o.Expected
	c.Lost += o.Lost
	c.Over1 += o.Over1
	c.Over5 += o.Over5
	stats.Add(c.Loss[:], o.Loss[:])
	stats.Add(c.Jitter[:], o.Jitter[:])
	c.JitterMS += o.JitterMS
	stats.Add(c.MOS[:], o.MOS[:])
	c.MOSCalls += o.MOSCalls
	c.MOSSum += o.MOSSum
	c.MOSSumSq += o.MOSSumSq
}

// Sub takes o from c (o is a part of c: what Add added).
func (c *Counters) Sub(o *Counters) {
	var neg Counters
	neg.Add(o)
	neg.negate()
	c.Add(&neg)
}

func (c *Counters) negate() {
	for _, p := range []*int64{&c.Calls, &c.Expected, &c.Lost, &c.Over1, &c.Over5, &c.JitterMS, &c.MOSCalls, &c.MOSSum, &c.MOSSumSq} {
		*p = -*p
	}
	for _, s := range [][]int64{c.Loss[:], c.Jitter[:], c.MOS[:]} {
		for i := range s {
			s[i] = -s[i]
		}
	}
}

// IsZero reports whether every counter is zero.
func (c *Counters) IsZero() bool { return *c == Counters{} }

// Observation is one record's contribution to one cell.
type Observation struct {
	Cell     Cell
	Counters Counters
}

// Hour is the hour a record counts in: its answer (when media began),
// else its start, in UTC.
func Hour(r calls.Record) time.Time {
	t := r.Start
	if r.Answer != nil && !r.Answer.IsZero() {
		t = *r.Answer
	}
	return t.UTC().Truncate(time.Hour)
}

// Observe folds a record into the cells it adds to. Each side with media
// adds to its uplink cell and, when its phone sent RTCP, its downlink
// cell; each of those once for the total (Tag "") and once per tag of the
// user's.
//
// Uplink: the packets the phone sent (by sequence numbers) and lost before
// the anchor, the anchor's jitter and E-model MOS.
//
// Downlink: the record has the phone's reported loss of the hop anchor →
// phone (down_loss_pct) but no packet count, so the packets expected are
// estimated as those the anchor relayed to it, the other side's sent less
// its lost, and the lost as that times down_loss_pct (rounded); with no
// other side only the call and its loss % are counted. A side whose
// down_loss_pct, down_jitter_ms and rtt_ms are all zero is taken as a
// phone that sent no RTCP (the record cannot tell it from a perfect
// downlink with no RTT measured). The downlink has no MOS.
func Observe(r calls.Record) []Observation {
	hour := Hour(r)
	var out []Observation
	sides := [2][2]*calls.MediaQuality{{r.CallerMedia, r.CalleeMedia}, {r.CalleeMedia, r.CallerMedia}}
	for _, s := range sides {
		self, other := s[0], s[1]
		if self == nil {
			continue
		}
		cell := Cell{Hour: hour, Network: self.Network, Access: self.Access}
		if cell.Network == "" {
			cell.Network = OtherNetwork
		}
		if cell.Access == "" {
			cell.Access = AccessUnknown
		}
		if self.Sent > 0 {
			var c Counters
			c.observe(self.Sent, max(self.Lost, 0), self.LossPct, self.JitterMS, self.MOS)
			cell.Hop = Uplink
			out = appendTagged(out, cell, c, self.Tags)
		}
		if self.DownLossPct > 0 || self.DownJitterMS > 0 || self.RTTMS > 0 {
			var expected, lost int64
			if other != nil && other.Sent > 0 {
				expected = max(other.Sent-max(other.Lost, 0), 0)
				lost = int64(math.Round(float64(expected) * min(max(self.DownLossPct, 0), 100) / 100))
			}
			var c Counters
			c.observe(expected, lost, self.DownLossPct, self.DownJitterMS, 0)
			cell.Hop = Downlink
			out = appendTagged(out, cell, c, self.Tags)
		}
	}
	return out
}

// observe counts one call side's hop.
func (c *Counters) observe(expected, lost int64, lossPct float64, jitterMS int64, mos float64) {
	lossPct = min(max(lossPct, 0), 100)
	c.Calls = 1
	c.Expected, c.Lost = expected, min(lost, expected)
	if lossPct > 1 {
		c.Over1 = 1
	}
	if lossPct > 5 {
		c.Over5 = 1
	}
	c.Loss[LossBins.Index(lossPct)]++
	jitterMS = max(jitterMS, 0)
	c.Jitter[JitterBins.Index(float64(jitterMS))]++
	c.JitterMS = jitterMS
	if mos > 0 {
		m := int64(math.Round(min(max(mos, 1), 4.5) * 100))
		c.MOS[MOSBins.Index(float64(m)/100)]++
		c.MOSCalls, c.MOSSum, c.MOSSumSq = 1, m, m*m
	}
}

// appendTagged appends the total cell and one cell per tag, in key order.
func appendTagged(out []Observation, cell Cell, c Counters, tags map[string]string) []Observation {
	out = append(out, Observation{Cell: cell, Counters: c})
	keys := make([]string, 0, len(tags))
	for k := range tags {
		if ValidTagKey(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		cell.Tag = k + "=" + tags[k]
		out = append(out, Observation{Cell: cell, Counters: c})
	}
	return out
}

// ValidTagKey tells whether k can name a tag: not empty, no '=' or ','
// (the cell's "key=value" and the query's list would be ambiguous).
func ValidTagKey(k string) bool {
	return k != "" && !strings.ContainsAny(k, "=,")
}
