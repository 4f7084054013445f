package relay

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"

	"github.com/sori-voice/sori/media/rtpstats"
)

// State is what a stream learned and counted, for an anchor that keeps
// its calls across a restart (media/anchorstate): the addresses, totals,
// the phone's last RTCP view and round trip, and the SRTP/SRTCP counters
// the phone's replay protection checks. The jitter buffer's contents are
// not kept: it holds at most its delay (≤ 120 ms) of audio, which is due
// long before a restarted anchor relays again, so it would be dropped as
// late anyway.
type State struct {
	Expected  netip.AddrPort `json:"expected,omitzero"`  // from SDP
	Latched   netip.AddrPort `json:"latched,omitzero"`   // learned from the phone's RTP
	RTCPDest  netip.AddrPort `json:"rtcp_dest,omitzero"` // from SDP
	RTCPSeen  netip.AddrPort `json:"rtcp_seen,omitzero"` // learned from the phone's RTCP
	Mux       bool           `json:"mux,omitempty"`
	RTP       Counters       `json:"rtp"`
	RTCP      Counters       `json:"rtcp"`
	Last      time.Time      `json:"last,omitzero"` // the phone's last packet
	Reception rtpstats.State `json:"reception"`
	// SRTP rollover counters by SSRC, of the phone's RTP (In) and of the
	// RTP relayed to it (Out); a ROC of 0 is left out.
	InROC  map[uint32]uint32 `json:"in_roc,omitempty"`
	OutROC map[uint32]uint32 `json:"out_roc,omitempty"`
	// OutSRTCP is the SRTCP index by SSRC of the other phone's RTCP that
	// the anchor re-encrypts for this phone (its keys differ from the
	// other leg's). The phone's replay list drops an index it has seen,
	// so a restarted anchor that counted from 0 again would have every
	// relayed report refused for the rest of the call. The anchor's own
	// reports need none: their SSRC is new after a restart.
	OutSRTCP map[uint32]uint32 `json:"out_srtcp,omitempty"`
	// The phone's last receiver report on what reaches it, and the round
	// trip anchor ↔ phone: the call's record and MOS use them, and the
	// phone reports only every few seconds.
	Downstream *rtcp.ReceptionReport `json:"downstream,omitempty"`
	RTT        time.Duration         `json:"rtt,omitempty"`
}

// srtcpIndexMargin is added to a kept SRTCP index on a restore: the state
// was saved up to a few seconds before the anchor stopped, and a phone's
// RTCP comes every few seconds, so a few indexes may have been used since.
// Skipping ahead is harmless (the index has 31 bits); reusing one is not.
const srtcpIndexMargin = 1 << 10

// State returns the stream's addresses and counters now.
func (s *Stream) State() State {
	st := State{Expected: load(&s.expected), Latched: load(&s.latched), RTCPDest: load(&s.rtcpDest), RTCPSeen: load(&s.rtcpSeen),
		Mux: s.mux.Load(), Last: s.LastPacket()}
	st.RTP, st.RTCP = s.Stats()
	s.statsMu.Lock()
	st.Reception = s.stats.State()
	s.statsMu.Unlock()
	if d := s.Downstream(); d.Known {
		st.Downstream, st.RTT = &d.Report, d.RTT
	}
	if lc := s.crypto.Load(); lc != nil {
		var peerSSRC uint32
		peer := s.peer.Load()
		if peer != nil {
			peerSSRC = peer.ReceptionSnapshot().SSRC // before srtpMu: never two streams' locks at once
		}
		s.srtpMu.Lock()
		st.InROC = roc(st.InROC, lc.inRTP, st.Reception.SSRC, st.Reception.Started)
		st.OutROC = roc(st.OutROC, lc.outRTP, peerSSRC, peer != nil)
		if lc.outRTCP != nil && peer != nil {
			if i, ok := lc.outRTCP.Index(peerSSRC); ok && i != 0 {
				st.OutSRTCP = map[uint32]uint32{peerSSRC: i}
			}
		}
		s.srtpMu.Unlock()
	}
	return st
}

// roc adds ctx's rollover counter of ssrc to m when it is not 0.
func roc(m map[uint32]uint32, ctx *srtp.Context, ssrc uint32, known bool) map[uint32]uint32 {
	if ctx == nil || !known {
		return m
	}
	if r, ok := ctx.ROC(ssrc); ok && r != 0 {
		if m == nil {
			m = map[uint32]uint32{}
		}
		m[ssrc] = r
	}
	return m
}

// Restore puts back what State returned, after SetCrypto and before
// Start: packets from the latched addresses are taken at once, and the
// counters and SRTP rollover counters go on from there.
func (s *Stream) Restore(st State) {
	for _, a := range []struct {
		p *atomic.Pointer[netip.AddrPort]
		v netip.AddrPort
	}{{&s.expected, st.Expected}, {&s.latched, st.Latched}, {&s.rtcpDest, st.RTCPDest}, {&s.rtcpSeen, st.RTCPSeen}} {
		if a.v.IsValid() {
			store(a.p, a.v)
		}
	}
	s.mux.Store(st.Mux)
	s.rtp.set(st.RTP)
	s.rtcp.set(st.RTCP)
	if !st.Last.IsZero() {
		s.last.Store(st.Last.UnixNano())
	}
	s.statsMu.Lock()
	s.stats.Restore(st.Reception)
	s.statsMu.Unlock()
	if st.Downstream != nil {
		s.rtcpState.mu.Lock()
		s.rtcpState.downstream, s.rtcpState.haveDown, s.rtcpState.rtt = *st.Downstream, true, st.RTT
		s.rtcpState.mu.Unlock()
	}
	if lc := s.crypto.Load(); lc != nil {
		s.srtpMu.Lock()
		for ssrc, r := range st.InROC {
			if lc.inRTP != nil {
				lc.inRTP.SetROC(ssrc, r)
			}
		}
		for ssrc, r := range st.OutROC {
			if lc.outRTP != nil {
				lc.outRTP.SetROC(ssrc, r)
			}
		}
		for ssrc, i := range st.OutSRTCP {
			if lc.outRTCP != nil {
				lc.outRTCP.SetIndex(ssrc, min(i+srtcpIndexMargin, 1<<31-1))
			}
		}
		s.srtpMu.Unlock()
	}
}

func load(p *atomic.Pointer[netip.AddrPort]) netip.AddrPort {
	if a := p.Load(); a != nil {
		return *a
	}
	return netip.AddrPort{}
}

func (c *counters) set(v Counters) {
	c.packets.Store(v.Packets)
	c.bytes.Store(v.Bytes)
	c.errors.Store(v.Errors)
}

// Options are the stream's options as made.
func (s *Stream) Options() Options { return s.opts }

// Latched are the addresses learned from the phone's RTP and RTCP (zero:
// none yet); cheap enough to compare every second.
func (s *Stream) Latched() (rtp, rtcp netip.AddrPort) { return load(&s.latched), load(&s.rtcpSeen) }
