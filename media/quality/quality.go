// Package quality scores a call leg with the ITU-T G.107 E-model, from
// what the anchor measures: packet loss (with jitter-buffer discards), how
// bursty it is, and one-way delay.
//
//	R   = (Ro - Is) - Id - Ie_eff + A
//	Ro - Is = 93.2          G.107 §7 with every default parameter
//	A   = 0                 no advantage factor (mobile users still expect quality)
//	Id  = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)
//	                         the delay impairment for one-way delay d in ms, as
//	                         simplified by Cole and Rosenbluth, "Voice over IP
//	                         performance monitoring", ACM CCR 31(2), 2001
//	Ie_eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)     G.107 §7.2 (7-29)
//	Ie  = 0, Bpl = 25.1     ITU-T publishes no Opus values (G.113 Appendix I
//	                         lists older codecs). These are G.113 Appendix I's
//	                         figures for G.711 with packet loss concealment: no
//	                         coding impairment, and loss robustness like a codec
//	                         that conceals. Opus at VoIP bitrates with in-band FEC
//	                         conceals at least as well, so MOS is a floor.
//	BurstR = observed mean burst length / mean burst length of random loss
//	                         at the same rate (G.107 §7.2: 1 is random, > 1 bursty)
//	MOS = 1 + 0.035 R + R (R - 60)(100 - R) 7e-6, for 0 < R < 100   G.107 Annex B
package quality

import "time"

// Constants of the model (see the package comment for their sources).
const (
	RoMinusIs = 93.2
	Ie        = 0.0
	Bpl       = 25.1
)

// Leg is what is known of one direction of a call.
type Leg struct {
	Expected  uint64        // packets the sender sent (by sequence numbers)
	Lost      uint64        // never arrived
	Discarded uint64        // arrived too late for the jitter buffer
	Bursts    uint64        // runs of consecutive losses
	Delay     time.Duration // one-way: network (half the round trip) plus jitter buffer
}

// LossRate is the fraction of packets the listener did not hear.
func (l Leg) LossRate() float64 {
	if l.Expected == 0 {
		return 0
	}
	return float64(min(l.Lost+l.Discarded, l.Expected)) / float64(l.Expected)
}

// BurstR is G.107's burst ratio; 1 when nothing was lost.
func (l Leg) BurstR() float64 {
	p := l.LossRate()
	if l.Lost == 0 || l.Bursts == 0 || p >= 1 {
		return 1
	}
	mean := float64(l.Lost) / float64(l.Bursts)
	return max(mean*(1-p), 1) // mean burst of random loss at rate p is 1/(1-p)
}

// R is the E-model's transmission rating.
func (l Leg) R() float64 {
	return RFactor(l.LossRate(), l.BurstR(), l.Delay)
}

// MOS is the estimated mean opinion score, 1 to 4.5.
func (l Leg) MOS() float64 { return MOS(l.R()) }

// RFactor computes R for a loss rate (0..1), burst ratio and one-way delay.
func RFactor(loss, burstR float64, delay time.Duration) float64 {
	d := float64(delay) / float64(time.Millisecond)
	id := 0.024 * d
	if d > 177.3 {
		id += 0.11 * (d - 177.3)
	}
	ppl := 100 * loss
	ieEff := Ie
	if ppl > 0 {
		ieEff = Ie + (95-Ie)*ppl/(ppl/burstR+Bpl)
	}
	return RoMinusIs - id - ieEff
}

// MOS maps R to a mean opinion score (G.107 Annex B).
func MOS(r float64) float64 {
	switch {
	case r <= 0:
		return 1
	case r >= 100:
		return 4.5
	}
	return 1 + 0.035*r + r*(r-60)*(100-r)*7e-6
}
