package relay

import (
	"sync"
	"time"

	"github.com/pion/rtcp"

	"github.com/sori-voice/sori/media/quality"
	"github.com/sori-voice/sori/media/rtpstats"
)

// The anchor reads the RTCP each phone sends, as it relays it: the phone's
// sender reports (for LSR/DLSR in the anchor's own reports to it) and its
// receiver reports, which tell how the media the anchor sends reaches it
// (the hop anchor → phone, with the hop before it). An SR from the other
// phone that the anchor forwards to this one is remembered, so this one's
// RR answering it gives the round trip anchor ↔ phone.

type srForwarded struct {
	lsr uint32 // middle 32 bits of its NTP time
	at  time.Time
}

type rtcpState struct {
	mu         sync.Mutex
	lastSR     uint32 // the phone's last SR, middle 32 bits of its NTP time
	lastSRAt   time.Time
	forwarded  [8]srForwarded
	next       int
	downstream rtcp.ReceptionReport // the phone's latest report on the media it receives
	haveDown   bool
	rtt        time.Duration
	localSSRC  uint32
}

// Downstream is what the phone last reported of the media it receives
// through the anchor, and the round trip anchor ↔ phone (0: unknown).
type Downstream struct {
	Report rtcp.ReceptionReport
	Known  bool
	RTT    time.Duration
}

// Downstream returns the phone's own view of what it receives.
func (s *Stream) Downstream() Downstream {
	s.rtcpState.mu.Lock()
	defer s.rtcpState.mu.Unlock()
	return Downstream{Report: s.rtcpState.downstream, Known: s.rtcpState.haveDown, RTT: s.rtcpState.rtt}
}

// observeRTCP reads an RTCP compound packet from the phone. RTCP is rare
// (every few seconds), so parsing it with pion/rtcp may allocate.
func (s *Stream) observeRTCP(b []byte, now time.Time) {
	pkts, err := rtcp.Unmarshal(b)
	if err != nil {
		return
	}
	peer := s.peer.Load()
	st := &s.rtcpState
	for _, p := range pkts {
		var reports []rtcp.ReceptionReport
		switch x := p.(type) {
		case *rtcp.SenderReport:
			lsr := uint32(x.NTPTime >> 16)
			st.mu.Lock()
			st.lastSR, st.lastSRAt = lsr, now
			st.mu.Unlock()
			if peer != nil {
				peer.rtcpState.noteForwarded(lsr, now)
			}
			reports = x.Reports
		case *rtcp.ReceiverReport:
			reports = x.Reports
		}
		for _, r := range reports {
			st.mu.Lock()
			st.downstream, st.haveDown = r, true
			if r.LastSenderReport != 0 {
				for _, f := range st.forwarded {
					if f.lsr == r.LastSenderReport && !f.at.IsZero() {
						dlsr := time.Duration(r.Delay) * time.Second / 65536
						if rtt := now.Sub(f.at) - dlsr; rtt >= 0 {
							st.rtt = rtt
						}
					}
				}
			}
			st.mu.Unlock()
		}
	}
}

func (st *rtcpState) noteForwarded(lsr uint32, at time.Time) {
	st.mu.Lock()
	st.forwarded[st.next] = srForwarded{lsr: lsr, at: at}
	st.next = (st.next + 1) % len(st.forwarded)
	st.mu.Unlock()
}

// Report builds the anchor's RTCP to the phone about the media it
// receives from it (the hop phone → anchor): a receiver report, the
// anchor's CNAME, and an RFC 3611 VoIP metrics block. ok is false when
// nothing was received from the phone yet.
func (s *Stream) Report(now time.Time, jb JitterFigures) (b []byte, rep rtpstats.Report, ok bool) {
	rep = s.Reception()
	if rep.Expected == 0 {
		return nil, rep, false
	}
	st := &s.rtcpState
	st.mu.Lock()
	if st.localSSRC == 0 {
		st.localSSRC = uint32(now.UnixNano()) | 1
	}
	self := st.localSSRC
	var lsr, dlsr uint32
	if !st.lastSRAt.IsZero() {
		lsr = st.lastSR
		dlsr = uint32(now.Sub(st.lastSRAt) * 65536 / time.Second)
	}
	rtt := st.rtt
	st.mu.Unlock()

	lost := uint32(max(rep.Lost, 0)) & 0xffffff
	leg := quality.Leg{Expected: uint64(rep.Expected), Lost: uint64(max(rep.Lost, 0)), Discarded: jb.Discarded,
		Bursts: rep.Bursts, Delay: rtt/2 + jb.Nominal}
	r := leg.R()
	voip := &rtcp.VoIPMetricsReportBlock{
		XRHeader:       rtcp.XRHeader{BlockType: rtcp.VoIPMetricsReportBlockType},
		SSRC:           rep.SSRC,
		LossRate:       rate256(uint64(max(rep.Lost, 0)), uint64(rep.Expected)),
		DiscardRate:    rate256(jb.Discarded, uint64(rep.Expected)),
		RoundTripDelay: uint16(min(rtt.Milliseconds(), 65535)),
		EndSystemDelay: uint16(min(jb.Nominal.Milliseconds(), 65535)),
		SignalLevel:    127, NoiseLevel: 127, RERL: 127, // not measured: the anchor does not decode audio
		Gmin:       16, // RFC 3611's recommended value
		RFactor:    uint8(max(min(r, 100), 0)),
		ExtRFactor: 127,
		MOSLQ:      uint8(quality.MOS(r)*10 + 0.5),
		MOSCQ:      uint8(quality.MOS(r)*10 + 0.5),
		RXConfig:   jb.RXConfig,
		JBNominal:  uint16(min(jb.Nominal.Milliseconds(), 65535)),
		JBMaximum:  uint16(min(jb.Maximum.Milliseconds(), 65535)),
		JBAbsMax:   uint16(min(jb.AbsMax.Milliseconds(), 65535)),
	}
	voip.BurstDensity, voip.GapDensity = rep.BurstGap.BurstDensity, rep.BurstGap.GapDensity
	voip.BurstDuration = uint16(min(rep.BurstGap.BurstDuration.Milliseconds(), 65535))
	voip.GapDuration = uint16(min(rep.BurstGap.GapDuration.Milliseconds(), 65535))
	pkts := []rtcp.Packet{
		&rtcp.ReceiverReport{SSRC: self, Reports: []rtcp.ReceptionReport{{
			SSRC: rep.SSRC, FractionLost: rep.FractionLost, TotalLost: lost, LastSequenceNumber: rep.ExtHighestSeq,
			Jitter: rep.Jitter, LastSenderReport: lsr, Delay: dlsr,
		}}},
		rtcp.NewCNAMESourceDescription(self, "sori-anchor"),
		&rtcp.ExtendedReport{SenderSSRC: self, Reports: []rtcp.ReportBlock{voip}},
	}
	b, err := rtcp.Marshal(pkts)
	if err != nil {
		return nil, rep, false
	}
	return b, rep, true
}

// JitterFigures are the jitter buffer's part of a report (zero when off).
type JitterFigures struct {
	Discarded                uint64
	Nominal, Maximum, AbsMax time.Duration
	RXConfig                 uint8 // RFC 3611 §4.7.6: 0 unspecified, bits 5-4 JB adaptive (3) or fixed (2)
}

func rate256(n, of uint64) uint8 {
	if of == 0 {
		return 0
	}
	return uint8(min(n*256/of, 255))
}

// SendRTCP sends an RTCP packet of the anchor's own to the phone, from the
// port the phone sends its RTCP to.
func (s *Stream) SendRTCP(b []byte) error {
	dst, ok := s.rtcpEndpoint()
	if !ok || s.refused.Load() {
		return nil
	}
	sock := s.rtcpSock
	if s.mux.Load() {
		sock = s.rtpSock
	}
	b, ok = s.protectOwn(b)
	if !ok {
		return errNotKeyed
	}
	return sock.writeTo(b, dst)
}
