package relay

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// BUNDLE (RFC 8843): the sections of one a=group:BUNDLE on a WebRTC leg
// share the first one's transport, one socket, ICE path and DTLS-SRTP
// key. What arrives on that stream is decrypted there and then handed to
// the section it belongs to (Bundle.Route), whose own Stream, never
// read from the network, keeps the section's statistics and counters and
// relays to its peer, the other leg's matching section. What goes the
// other way needs nothing here: the other leg's sections have the
// transport stream as their peer, so it is sent from the one socket,
// encrypted with the one key (SRTP keeps a context per SSRC).

// BundleSection is one section of a bundle.
type BundleSection struct {
	Stream *Stream // its statistics, counters and peer; the transport's own for its section
	Mid    string
	PTs    []uint8  // its payload types: distinct across the bundle
	SSRCs  []uint32 // the sources its SDP declares (a=ssrc)
	// From is the other leg's stream whose media goes out on the
	// section (Sent); nil: none known.
	From *Stream
}

// Bundle demultiplexes one transport among its sections: by the
// packet's a=mid header extension (RFC 8843 §15.2) when the SDP mapped
// one, else by its SSRC (learnt from earlier packets that carried a mid
// or declared), else by its payload type. What it learns of an SSRC it
// keeps, so a stream that tagged its first packets only (as browsers do)
// keeps its section.
type Bundle struct {
	midID int // the mid extension's id; 0: none
	secs  []BundleSection
	sent  []atomic.Uint32 // by section: the last source Sent, plus one (0: none)

	mu     sync.Mutex
	learnt [32]learntSSRC
	next   int // the slot replaced next once learnt is full
}

type learntSSRC struct {
	ssrc uint32
	sec  int // 1-based: 0 is a free slot
}

// NewBundle makes the demultiplexer of sections; midID is the id the
// SDP maps the mid extension to (0: none).
func NewBundle(midID int, sections []BundleSection) *Bundle {
	return &Bundle{midID: midID, secs: append([]BundleSection(nil), sections...), sent: make([]atomic.Uint32, len(sections))}
}

// Sections are b's sections.
func (b *Bundle) Sections() []BundleSection { return b.secs }

// SetBundle makes s the transport of b's sections (nil: of none).
func (s *Stream) SetBundle(b *Bundle) {
	s.bundle.Store(b)
	s.fastChanged()
}

// Route is the section (an index of the sections) a decrypted RTP or
// RTCP packet belongs to; -1: none found (the transport's own section
// takes it). It allocates nothing.
func (b *Bundle) Route(pkt []byte) int {
	if isRTCP(pkt) {
		return b.routeRTCP(pkt)
	}
	if len(pkt) < 12 || pkt[0]>>6 != 2 {
		return -1
	}
	ssrc := binary.BigEndian.Uint32(pkt[8:12])
	if mid, ok := midOf(pkt, b.midID); ok {
		for i := range b.secs {
			if b.secs[i].Mid == string(mid) { // no allocation: a comparison
				b.learn(ssrc, i)
				return i
			}
		}
	}
	if i := b.bySSRC(ssrc); i >= 0 {
		return i
	}
	pt := pkt[1] & 0x7f
	for i := range b.secs {
		for _, p := range b.secs[i].PTs {
			if p == pt {
				b.learn(ssrc, i)
				return i
			}
		}
	}
	return -1
}

// routeRTCP goes by the sources a compound packet is about, which are
// the anchor's (what it sends the browser on a section, learnt by
// Sent or declared): a feedback message's media source (a PLI, a NACK:
// RFC 4585 §6.1), a report block's; then by its first sender's SSRC (the
// browser's own source, learnt from its RTP). Chrome's receive streams
// share one sender SSRC across a bundle, so that comes last.
func (b *Bundle) routeRTCP(pkt []byte) int {
	for at := 0; at+8 <= len(pkt); {
		typ, count := pkt[at+1], int(pkt[at]&0x1f)
		end := at + 4 + 4*int(binary.BigEndian.Uint16(pkt[at+2:]))
		if end > len(pkt) {
			break
		}
		about := -1 // where the SSRC this packet is about sits
		switch {
		case (typ == 205 || typ == 206) && end >= at+12:
			about = at + 8
		case typ == 201 && count > 0:
			about = at + 8
		case typ == 200 && count > 0:
			about = at + 28
		}
		if about >= 0 && about+4 <= end {
			if i := b.bySSRC(binary.BigEndian.Uint32(pkt[about:])); i >= 0 {
				return i
			}
		}
		at = end
	}
	return b.bySSRC(binary.BigEndian.Uint32(pkt[4:8]))
}

// Sent records that from, the other leg's stream of section i of b's
// sections (BundleSection.From), sends RTP from source ssrc: the
// browser's reports and feedback on it belong to that section. A
// source already known costs one atomic load.
func (b *Bundle) Sent(from *Stream, ssrc uint32) {
	for i := range b.secs {
		if b.secs[i].From != from {
			continue
		}
		if b.sent[i].Load() == ssrc+1 && ssrc != ^uint32(0) {
			return
		}
		b.sent[i].Store(ssrc + 1)
		b.learn(ssrc, i)
		return
	}
}

// bySSRC is the section ssrc was learnt or declared for; -1: none.
func (b *Bundle) bySSRC(ssrc uint32) int {
	b.mu.Lock()
	for _, l := range b.learnt {
		if l.sec != 0 && l.ssrc == ssrc {
			b.mu.Unlock()
			return l.sec - 1
		}
	}
	b.mu.Unlock()
	for i := range b.secs {
		for _, s := range b.secs[i].SSRCs {
			if s == ssrc {
				return i
			}
		}
	}
	return -1
}

// Learn records that ssrc is section i's: as a packet carrying its mid
// would, or a source the anchor sends on i (what the browser's reports
// are about).
func (b *Bundle) Learn(ssrc uint32, i int) { b.learn(ssrc, i) }

func (b *Bundle) learn(ssrc uint32, i int) {
	if i < 0 || i >= len(b.secs) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.learnt {
		if l := &b.learnt[k]; l.sec == 0 || l.ssrc == ssrc {
			l.ssrc, l.sec = ssrc, i+1
			return
		}
	}
	b.learnt[b.next] = learntSSRC{ssrc: ssrc, sec: i + 1}
	b.next = (b.next + 1) % len(b.learnt)
}

// midOf is the value of header extension id in RTP packet pkt (RFC 8285:
// one-byte or two-byte headers); false when it has none.
func midOf(pkt []byte, id int) ([]byte, bool) {
	if id == 0 || pkt[0]&0x10 == 0 {
		return nil, false
	}
	at := 12 + 4*int(pkt[0]&0x0f)
	if len(pkt) < at+4 {
		return nil, false
	}
	profile := binary.BigEndian.Uint16(pkt[at:])
	ext := pkt[at+4:]
	if n := 4 * int(binary.BigEndian.Uint16(pkt[at+2:])); n <= len(ext) {
		ext = ext[:n]
	} else {
		return nil, false
	}
	switch {
	case profile == 0xBEDE: // one-byte headers
		for k := 0; k < len(ext); {
			if ext[k] == 0 { // padding
				k++
				continue
			}
			eid, n := int(ext[k]>>4), int(ext[k]&0x0f)+1
			if eid == 15 {
				return nil, false
			}
			if k+1+n > len(ext) {
				return nil, false
			}
			if eid == id {
				return ext[k+1 : k+1+n], true
			}
			k += 1 + n
		}
	case profile&0xfff0 == 0x1000: // two-byte headers
		for k := 0; k+1 < len(ext); {
			if ext[k] == 0 {
				k++
				continue
			}
			eid, n := int(ext[k]), int(ext[k+1])
			if k+2+n > len(ext) {
				return nil, false
			}
			if eid == id {
				return ext[k+2 : k+2+n], true
			}
			k += 2 + n
		}
	}
	return nil, false
}

// received counts, times and measures a packet the bundle's transport
// handed section stream s: what its pump does for its own packets.
func (s *Stream) received(b []byte, rtcp bool, now time.Time) {
	c := &s.rtp
	if rtcp {
		c = &s.rtcp
	}
	c.packets.Add(1)
	c.bytes.Add(uint64(len(b)))
	s.last.Store(now.UnixNano())
	if rtcp {
		s.observeRTCP(b, now)
		return
	}
	s.statsMu.Lock()
	s.observe(b, now)
	s.statsMu.Unlock()
}
