package relay

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/rtpstats"
)

// fuzzPackets splits data into datagrams: a length byte, a byte of
// milliseconds since the previous one, then the datagram.
func fuzzPackets(data []byte, each func(b []byte, gap time.Duration)) {
	for len(data) >= 2 {
		n, gap := int(data[0]), time.Duration(data[1])*time.Millisecond
		data = data[2:]
		n = min(n, len(data))
		each(data[:n], gap)
		data = data[n:]
	}
}

// packets is a fuzz seed of RTP and RTCP datagrams.
func packets(ps ...[]byte) []byte {
	var out []byte
	for _, p := range ps {
		out = append(out, byte(len(p)), 20)
		out = append(out, p...)
	}
	return out
}

func rtpPacket(seq uint16, ts uint32, payload []byte, mod func(*rtp.Header)) []byte {
	h := rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: ts, SSRC: 0x1234}
	if mod != nil {
		mod(&h)
	}
	b, _ := (&rtp.Packet{Header: h, Payload: payload}).Marshal()
	return b
}

func rtcpPacket(ps ...rtcp.Packet) []byte {
	b, _ := rtcp.Marshal(ps)
	return b
}

// FuzzPackets runs what a phone's datagrams meet in the relay, socket
// aside: the header reads (RTP or RTCP, media or not), the reception
// statistics, the RTCP observed (SR, RR), the jitter buffer with the
// payload's Opus duration, and the anchor's own report from it all. No
// panic, the payload lies inside the packet, the report is valid RTCP.
func FuzzPackets(f *testing.F) {
	opus20 := []byte{0xfc, 1, 2, 3}
	f.Add(packets(rtpPacket(1, 960, opus20, nil), rtpPacket(2, 1920, opus20, nil), rtpPacket(4, 3840, opus20, nil), rtpPacket(3, 2880, opus20, nil)))
	f.Add(packets(rtpPacket(65535, 0xffffff00, opus20, func(h *rtp.Header) { h.Marker = true; h.CSRC = []uint32{1, 2} }),
		rtpPacket(0, 0x40, opus20, func(h *rtp.Header) { _ = h.SetExtension(1, []byte{1, 2, 3}) }),
		rtpPacket(1, 0x400, append(opus20, 0, 0, 3), func(h *rtp.Header) { h.Padding = true; h.PaddingSize = 3 })))
	f.Add(packets(rtcpPacket(&rtcp.SenderReport{SSRC: 0x1234, NTPTime: 0x1122334455667788, Reports: []rtcp.ReceptionReport{{SSRC: 9, LastSenderReport: 0x33445566, Delay: 65536}}}),
		rtcpPacket(&rtcp.ReceiverReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: 0x1234, LastSenderReport: 0x33445566, Delay: 1}}}, rtcp.NewCNAMESourceDescription(9, "x")),
		rtpPacket(7, 7, nil, nil)))
	f.Add(packets([]byte{0, 1, 0, 0}, []byte{0x16, 0xfe, 0xfd}, []byte{0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, []byte{0xbf, 0xc8, 0, 0, 0, 0, 0, 0}))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mode := range []jitter.Mode{jitter.Fixed, jitter.Adaptive} {
			s := &Stream{opts: Options{OpusPT: 111}, stats: rtpstats.New(clockRate)}
			peer := &Stream{opts: Options{OpusPT: 111}, stats: rtpstats.New(clockRate)}
			s.peer.Store(peer)
			peer.peer.Store(s)
			s.play = &playout{buf: jitter.New(jitter.Config{Mode: mode, ClockRate: clockRate, Target: 40 * time.Millisecond, Capacity: 64}),
				wake: make(chan struct{}, 1), stop: make(chan struct{}), mode: mode, max: 120 * time.Millisecond}
			now := time.Unix(1_800_000_000, 0)
			fuzzPackets(data, func(b []byte, gap time.Duration) {
				now = now.Add(gap)
				_ = notMedia(b)
				if isRTCP(b) {
					s.observeRTCP(b, now)
					peer.observeRTCP(b, now)
					return
				}
				s.observe(b, now)
				if !isRTP(b) {
					return
				}
				if p, ok := rtpPayload(b); ok {
					if len(p) > len(b)-12 || (len(p) > 0 && &p[len(p)-1] != &b[12+int(b[0]&0x0f)*4+extLen(b)+len(p)-1]) {
						t.Fatalf("payload of %d bytes outside the packet of %d", len(p), len(b))
					}
				}
				store := make([]byte, len(b))
				if _, ok := s.enqueue(b, now, store); ok {
					for {
						if _, ok := s.play.buf.Pop(now); !ok {
							break
						}
					}
				}
			})
			if b, _, ok := s.Report(now, s.JitterFigures()); ok {
				if _, err := rtcp.Unmarshal(b); err != nil {
					t.Fatalf("the anchor's report does not parse: %v", err)
				}
			}
			_ = s.Downstream()
		}
	})
}

// extLen is the bytes of b's header extension, after its CSRCs.
func extLen(b []byte) int {
	if b[0]&0x10 == 0 {
		return 0
	}
	n := 12 + 4*int(b[0]&0x0f)
	return 4 + 4*int(binary.BigEndian.Uint16(b[n+2:n+4]))
}
