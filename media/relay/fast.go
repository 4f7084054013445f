package relay

import (
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/sori-voice/sori/media/fastpath"
)

// The kernel fast path (media/fastpath): once a plain RTP stream is
// latched and needs nothing but forwarding (no jitter buffer, no SRTP or
// ICE on either leg, no BUNDLE, the other phone consenting), the relay
// gives its route to the kernel, which forwards the latched phone's RTP
// without waking the anchor and reports each packet; the relay counts
// and measures those reports as it would the packets (fastRecord). Any
// change to a stream or the stream sending through it takes the route
// back (fastChanged); the next packet the relay sees sets it again if it
// still can. RTCP, STUN, DTLS and packets from any other source always
// reach the relay.

// fastState is a stream's part in the fast path; routes.mu guards all
// but the atomics.
type fastState struct {
	route  atomic.Pointer[fastpath.Route] // installed for this stream's RTP; nil: none
	feeder atomic.Pointer[Stream]         // the stream whose route sends out of this one
	never  atomic.Bool                    // the kernel cannot forward this stream (IPv6, a wildcard address)
	via    *Stream                        // the peer the route sends out of
	id     uint32                         // the stream's record ID, 0: none yet
	closed bool
}

// A record ID is the stream's slot in routes.byID (low idSlotBits) and the
// slot's generation, so that records of a closed stream still in the ring
// are not counted for the stream that took its slot.
const (
	idSlotBits = 20
	idSlotMask = 1<<idSlotBits - 1
)

type routeSlot struct {
	s  *Stream
	id uint32
}

var routes struct {
	path atomic.Pointer[fastpath.Path]

	mu   sync.Mutex
	free []uint32 // slots

	idMu sync.RWMutex // byID, for FastRecord against allocID and fastClose
	byID []routeSlot  // by slot
}

// SetFastPath gives the relay a loaded fast path (nil: none). Set it
// before streams start.
func SetFastPath(p *fastpath.Path) { routes.path.Store(p) }

func (s *Stream) local() netip.AddrPort {
	return netip.AddrPortFrom(s.pair.Addr(), uint16(s.pair.Port))
}

// fastCandidate is the pump's cheap test after it forwarded RTP of s:
// whether tryFast may set a route (it checks the rest, fastable).
func (s *Stream) fastCandidate() bool {
	return s.play == nil && s.fast.route.Load() == nil && !s.fast.never.Load() && routes.path.Load() != nil
}

// tryFast gives s's RTP route to the kernel if it can go there.
func (s *Stream) tryFast() {
	path := routes.path.Load()
	if path == nil || !s.fastable() {
		return
	}
	routes.mu.Lock()
	defer routes.mu.Unlock()
	// Again under the lock: every change that drops routes (fastChanged)
	// is stored before it takes the lock, so it is seen here or it drops
	// the route set here.
	if s.fast.closed || s.fast.route.Load() != nil || !s.fastable() {
		return
	}
	peer := s.peer.Load()
	if peer.fast.closed {
		return
	}
	dst, _ := peer.Endpoint()
	if s.fast.id == 0 {
		s.fast.id = allocID(s)
	}
	r := fastpath.Route{Src: *s.latched.Load(), Out: peer.local(), Dst: dst, ID: s.fast.id}
	if err := path.Set(s.local(), r); err != nil {
		s.fast.never.Store(true)
		if !errors.Is(err, fastpath.ErrUnsupported) {
			slog.Warn("fastpath: route not set; the relay forwards the stream", "port", s.pair.Port, "err", err)
		}
		return
	}
	peer.fast.feeder.Store(s)
	s.fast.via = peer
	s.fast.route.Store(&r)
}

// fastable: nothing of s or of the stream its RTP goes out of needs the
// relay for that RTP.
func (s *Stream) fastable() bool {
	peer := s.peer.Load()
	if s.latched.Load() == nil || peer == nil || s.play != nil || s.ice.Load() != nil || s.crypto.Load() != nil || s.bundle.Load() != nil {
		return false
	}
	if peer.crypto.Load() != nil || peer.ice.Load() != nil || peer.refused.Load() || peer.bundle.Load() != nil {
		return false
	}
	if f := peer.fast.feeder.Load(); f != nil && f != s {
		return false // another stream sends out of peer too: the relay keeps both
	}
	_, ok := peer.Endpoint()
	return ok
}

// fastChanged takes back the kernel's routes that depend on s: its own,
// and that of the stream sending out of it. Called after the change is
// stored, always under the lock (see tryFast); only signalling and a
// stream's latching change come here, never each packet.
func (s *Stream) fastChanged() {
	if routes.path.Load() == nil {
		return
	}
	routes.mu.Lock()
	defer routes.mu.Unlock()
	s.dropRouteLocked()
	if f := s.fast.feeder.Load(); f != nil {
		f.dropRouteLocked()
	}
}

func (s *Stream) dropRouteLocked() {
	if s.fast.route.Load() == nil {
		return
	}
	if path := routes.path.Load(); path != nil {
		path.Delete(s.local())
	}
	s.fast.route.Store(nil)
	if v := s.fast.via; v != nil {
		v.fast.feeder.CompareAndSwap(s, nil)
		s.fast.via = nil
	}
}

// fastClose takes s out of the fast path for good (its sockets close).
func (s *Stream) fastClose() {
	routes.mu.Lock()
	defer routes.mu.Unlock()
	s.fast.closed = true
	s.dropRouteLocked()
	if f := s.fast.feeder.Load(); f != nil {
		f.dropRouteLocked()
	}
	if s.fast.id != 0 {
		slot := s.fast.id & idSlotMask
		routes.idMu.Lock()
		routes.byID[slot].s = nil // its id stays: the next one's generation follows it
		routes.idMu.Unlock()
		routes.free = append(routes.free, slot)
		s.fast.id = 0
	}
}

// allocID: routes.mu held. Slot 0 is never used: ID 0 is "none".
func allocID(s *Stream) uint32 {
	routes.idMu.Lock()
	defer routes.idMu.Unlock()
	if len(routes.byID) == 0 {
		routes.byID = append(routes.byID, routeSlot{})
	}
	var slot, gen uint32
	if n := len(routes.free); n > 0 {
		slot = routes.free[n-1]
		routes.free = routes.free[:n-1]
		gen = (routes.byID[slot].id>>idSlotBits + 1) & (1<<(32-idSlotBits) - 1)
	} else {
		slot = uint32(len(routes.byID))
		routes.byID = append(routes.byID, routeSlot{})
	}
	id := slot | gen<<idSlotBits
	routes.byID[slot] = routeSlot{s: s, id: id}
	return id
}

// FastRecord counts and measures one packet the kernel forwarded, as the
// pump would have (fastpath.Path.Run's callback).
func FastRecord(r fastpath.Record) {
	slot := r.ID & idSlotMask
	routes.idMu.RLock()
	var s *Stream
	if slot != 0 && int(slot) < len(routes.byID) && routes.byID[slot].id == r.ID {
		s = routes.byID[slot].s
	}
	routes.idMu.RUnlock()
	if s == nil {
		return // the stream closed after the kernel forwarded its packet
	}
	s.rtp.packets.Add(1)
	s.rtp.bytes.Add(uint64(r.Len))
	s.last.Store(r.Arrival.UnixNano()) // as the pump does: at most a poll's 10 ms behind a packet it forwards
	s.statsMu.Lock()
	s.stats.Update(r.SSRC, r.Seq, r.TS, r.Arrival)
	s.statsMu.Unlock()
}

// FastRouted tells whether the kernel forwards s's RTP now.
func (s *Stream) FastRouted() bool { return s.fast.route.Load() != nil }
