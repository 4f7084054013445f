package relay

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pion/srtp/v3"

	"github.com/sori-voice/sori/media/rtpstats"
)

// State is what a stream learned and counted, for an anchor that keeps
// its calls across a restart (media/anchorstate). Only the addresses and
// totals: the jitter buffer and the RTCP round trip start afresh.
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
}

// State returns the stream's addresses and counters now.
func (s *Stream) State() State {
	st := State{Expected: load(&s.expected), Latched: load(&s.latched), RTCPDest: load(&s.rtcpDest), RTCPSeen: load(&s.rtcpSeen),
		Mux: s.mux.Load(), Last: s.LastPacket()}
	st.RTP, st.RTCP = s.Stats()
	s.statsMu.Lock()
	st.Reception = s.stats.State()
	s.statsMu.Unlock()
	if lc := s.crypto.Load(); lc != nil {
		var peerSSRC uint32
		peer := s.peer.Load()
		if peer != nil {
			peerSSRC = peer.ReceptionSnapshot().SSRC // before srtpMu: never two streams' locks at once
		}
		s.srtpMu.Lock()
		st.InROC = roc(st.InROC, lc.inRTP, st.Reception.SSRC, st.Reception.Started)
		st.OutROC = roc(st.OutROC, lc.outRTP, peerSSRC, peer != nil)
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
