package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sori-voice/sori/media/ports"
)

// On Linux no goroutine waits on a stream's socket. NewStream takes each
// socket's descriptor out of Go's poller (a duplicate is kept, the
// net.UDPConn closed), and Start hands both to one of a few workers
// (worker_linux.go), each an epoll instance and a goroutine: it sleeps in
// epoll_pwait2 until some of its sockets are readable or a jitter buffer's
// packet is due, drains each readable socket with recvmmsg, and sends what
// the wake-up forwards and plays out, from all its sockets, in one
// io_uring submit (uring_linux.go; a sendmmsg per batch without io_uring). The headers, addresses and buffers are the
// worker's own, reused, so forwarding allocates nothing
// (BenchmarkRelayLoad, BenchmarkForward).
//
// Measured under sori-mediabench's load (800 calls, 80,000 packets/s) with
// the former design, a goroutine per socket parked in Go's poller: 21 % of
// the anchor's CPU went to the scheduler (park, netpoll, findRunnable) and
// 9 % to epoll_wait, for one or two packets per wake-up; the workers do
// that bookkeeping once per epoll_pwait2 for many sockets.

// batch is the most datagrams one recvmmsg or sendmmsg moves.
const batch = 16

// mmsghdr is struct mmsghdr (linux/socket.h) on 64-bit Linux.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// socket is one of a stream's sockets: its pair's descriptor, never in
// Go's poller.
type socket struct {
	v6   bool // an IPv6 socket
	s    *Stream
	rtcp bool
	idx  uint32 // in sockets, for epoll events
	gen  uint32

	mu sync.RWMutex // read-held around each system call on fd, held to close it
	fd int          // -1 once closed

	// queued counts sends on fd waiting in a worker's sendRing; closing
	// stops new ones, and close waits for those queued. A counter, not
	// mu: one ring batch may hold several sends from one socket, and a
	// second RLock by the same goroutine deadlocks behind a waiting close.
	queued  atomic.Int32
	closing atomic.Bool

	// The worker goroutine's own, with a receive ring: a multishot
	// receive is armed; the socket is being removed (never re-armed).
	armed, removed bool
}

func newSocket(p *ports.Pair, rtcp bool) (*socket, error) {
	rfd, cfd := p.FDs()
	fd := rfd
	if rtcp {
		fd = cfd
	}
	return &socket{v6: p.Addr().Is6(), fd: fd}, nil
}

// close lets the descriptor go once no system call uses it: it is the
// pair's, which ports.Allocator parks or closes after the stream's closer.
func (k *socket) close() {
	k.closing.Store(true)
	for k.queued.Load() > 0 {
		runtime.Gosched() // a worker's batch is being sent: microseconds
	}
	k.mu.Lock()
	k.fd = -1
	k.mu.Unlock()
}

// writeTo sends one datagram (the anchor's own RTCP, and elsewhere than
// the workers).
func (k *socket) writeTo(b []byte, dst netip.AddrPort) error {
	var sa unix.RawSockaddrInet6
	n := putSockaddr(&sa, dst, k.v6)
	if n == 0 {
		return syscall.EAFNOSUPPORT
	}
	if len(b) == 0 {
		return nil
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.fd < 0 {
		return net.ErrClosed
	}
	_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(k.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), uintptr(n))
	if errno != 0 {
		return errno
	}
	return nil
}

// pumpState is a worker's buffers and message headers, used for one
// socket's batch at a time.
type pumpState struct {
	w    *worker
	s    *Stream
	rtcp bool

	in      [batch]mmsghdr
	inIov   [batch]unix.Iovec
	inNames [batch]unix.RawSockaddrInet6
	out     [batch]mmsghdr
	outIov  [batch]unix.Iovec
	outName unix.RawSockaddrInet6
	bufs    [][bufSize]byte            // [used:used+batch] for the next recvmmsg
	used    int                        // bufs holding packets queued in the worker's ring
	enc     [][bufSize + srtpRoom]byte // what goes to an SRTP leg, encrypted: [encUsed:]
	encUsed int                        // enc holding packets queued in the worker's ring
	rx      [batch]rxPacket            // what forward relays
	demux   [batch]int
	// What a bundle's transport (Stream.SetBundle) hands its other
	// sections: the packet's index in rx, its section, RTCP or not.
	bidx   [batch]int
	bdst   [batch]*Stream
	brtcp  [batch]bool
	played [batch][]byte
	nOut   int
	// sentHeld are jitter buffer copies queued in the ring: back to the
	// free list after its submit.
	sentHeld [][]byte
}

// rxPacket is a datagram received: in one of bufs (recvmmsg) or of the
// worker's recvRing buffers.
type rxPacket struct {
	b     []byte
	src   netip.AddrPort
	at    int64 // the kernel's arrival time (Unix ns; SO_TIMESTAMPNS), 0: the wake-up's
	trunc bool
}

// init sets up p for worker w (nil: a pump of its own, without a ring).
// With a ring, each recvmmsg reads into buffers of its own until the
// ring is sent, so one submit carries the packets of many sockets.
func (p *pumpState) init(w *worker) {
	p.w = w
	n := batch
	if w != nil && w.ring != nil {
		n = len(w.ring.hdrs) + batch
	}
	p.bufs = make([][bufSize]byte, n)
	p.enc = make([][bufSize + srtpRoom]byte, n)
	p.sentHeld = make([][]byte, 0, n)
	for i := range p.in {
		p.in[i].hdr.Name = (*byte)(unsafe.Pointer(&p.inNames[i]))
		p.in[i].hdr.Iov = &p.inIov[i]
		p.in[i].hdr.Iovlen = 1
		p.out[i].hdr.Iov = &p.outIov[i]
		p.out[i].hdr.Iovlen = 1
	}
}

// drain reads the socket until its queue is empty, forwarding each batch.
// The socket's lock is not held while forwarding, so no two sockets' locks
// are ever held together.
func (p *pumpState) drain(k *socket, now time.Time) {
	p.s, p.rtcp = k.s, k.rtcp
	for {
		if p.used+batch > len(p.bufs) {
			p.submit() // nothing queued refers to bufs or enc any more
			p.used, p.encUsed = 0, 0
		}
		for i := range p.in {
			p.inIov[i].Base = &p.bufs[p.used+i][0]
			p.inIov[i].SetLen(bufSize)
			p.in[i].hdr.Namelen = uint32(unsafe.Sizeof(p.inNames[i]))
			p.in[i].hdr.Flags = 0
		}
		k.mu.RLock()
		if k.fd < 0 {
			k.mu.RUnlock()
			return
		}
		// MSG_DONTWAIT: it never blocks, so a raw system call, without
		// the scheduler's entersyscall/exitsyscall.
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(k.fd), uintptr(unsafe.Pointer(&p.in[0])), batch, unix.MSG_DONTWAIT, 0, 0)
		k.mu.RUnlock()
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return // EAGAIN: drained
		}
		for i := 0; i < int(n); i++ {
			p.rx[i] = rxPacket{
				b:     p.bufs[p.used+i][:p.in[i].n],
				src:   sockaddrAddrPort(&p.inNames[i]),
				trunc: p.in[i].hdr.Flags&unix.MSG_TRUNC != 0,
			}
		}
		p.forward(int(n), now)
		if p.ring() {
			p.used += int(n) // queued in the ring until its submit
		}
		if int(n) < batch {
			// The queue was drained: the next packet is a new epoll edge,
			// so no system call is spent learning it is empty.
			return
		}
	}
}

func (p *pumpState) forward(n int, wall time.Time) {
	s := p.s
	c := &s.rtp
	if p.rtcp {
		c = &s.rtcp
	}
	// RTCP multiplexed on the RTP port (RFC 5761) goes to the RTCP port of
	// a peer that does not multiplex.
	demux := !p.rtcp && s.mux.Load()
	if peer := s.peer.Load(); peer == nil || peer.mux.Load() {
		demux = false
	}
	p.nOut = 0
	nDemux := 0
	var packets, bytes, errors uint64
	if !p.rtcp {
		s.statsMu.Lock()
	}
	lc := s.crypto.Load() // nil: plain RTP, as it arrives
	if lc != nil {
		lc.mu.Lock()
	}
	bd := s.bundle.Load()
	nBundled := 0
	var sentOn *Bundle // the bundle s's RTP goes out on (Bundle.Sent)
	if peer := s.peer.Load(); peer != nil {
		sentOn = peer.bundle.Load()
	}
	for i := 0; i < n; i++ {
		b := p.rx[i].b
		size := len(b)
		if p.rx[i].trunc || size == 0 {
			errors++
			continue
		}
		packets++
		bytes += uint64(size)
		// RTP is measured and buffered at its arrival in the kernel:
		// the worker's own lateness (a busy wake-up) is not the phone's
		// jitter, so it neither counts in the hop's jitter nor makes the
		// buffer's delay grow. rtpengine reads SO_TIMESTAMP likewise.
		at := wall
		if p.rx[i].at != 0 {
			at = time.Unix(0, p.rx[i].at)
		}
		if lc != nil {
			// STUN and DTLS go to the leg's keying before latching: only
			// media moves the stream, and on a WebRTC leg only media from
			// an address ICE validated.
			src := p.rx[i].src
			if !p.rtcp && s.takeOther(b, src) {
				continue
			}
			if !s.iceAllows(src) {
				errors++
				continue
			}
		}
		if !s.accept(p.rx[i].src, p.rtcp) {
			errors++
			continue
		}
		if lc != nil {
			dec, err := lc.decrypt(b, p.rtcp || isRTCP(b))
			if err != nil || len(dec) == 0 || &dec[0] != &b[0] {
				errors++ // forged, replayed, not SRTP, or not keyed yet
				continue
			}
			b, size = dec, len(dec)
			p.rx[i].b = b
		}
		if bd != nil {
			if sec := bd.Route(b); sec >= 0 && bd.secs[sec].Stream != nil && bd.secs[sec].Stream != s {
				// Another section's: counted, measured and relayed as its own.
				packets--
				bytes -= uint64(size)
				t, isCtl := bd.secs[sec].Stream, p.rtcp || isRTCP(b)
				when := at // its RTP at the kernel's arrival, as below
				if isCtl {
					when = wall
				}
				t.received(b, isCtl, when)
				p.bidx[nBundled], p.bdst[nBundled], p.brtcp[nBundled] = i, t, isCtl
				nBundled++
				continue
			}
		}
		switch {
		case p.rtcp || isRTCP(b):
			s.observeRTCP(b, wall)
			if demux {
				p.demux[nDemux] = i
				nDemux++
				continue
			}
		default:
			s.observe(b, at)
			if sentOn != nil && len(b) >= 12 {
				sentOn.Sent(s, binary.BigEndian.Uint32(b[8:12]))
			}
			if s.play != nil && isRTP(b) {
				store := p.w.held.get(len(b))
				if due, ok := s.enqueue(b, at, store); !ok {
					p.w.held.put(store)
					errors++ // late or duplicate: the jitter buffer counts which
				} else if due != 0 {
					p.w.schedule(s, due)
				}
				continue
			}
		}
		p.outIov[p.nOut].Base = &b[0]
		p.outIov[p.nOut].SetLen(size)
		p.nOut++
	}
	if lc != nil {
		lc.mu.Unlock()
	}
	if !p.rtcp {
		s.statsMu.Unlock()
	}
	c.packets.Add(packets)
	c.bytes.Add(bytes)
	if errors > 0 {
		c.errors.Add(errors)
	}
	s.last.Store(wall.UnixNano())
	fwd := p.nOut
	if p.nOut > 0 {
		p.flush(c, p.rtcp)
	}
	if nDemux > 0 {
		p.nOut = 0
		for _, i := range p.demux[:nDemux] {
			p.outIov[p.nOut].Base = &p.rx[i].b[0]
			p.outIov[p.nOut].SetLen(len(p.rx[i].b))
			p.nOut++
		}
		p.flush(c, true)
	}
	if nBundled > 0 {
		p.flushBundled(nBundled)
	}
	if fwd > 0 && !p.rtcp && s.fastCandidate() {
		s.tryFast() // plain RTP that only needed forwarding: the kernel can take it from here
	}
	for i := range p.rx[:n] {
		p.rx[i].b = nil
	}
}

// flushBundled relays the bundled packets forward set aside, each
// section's RTP and RTCP in one flush from that section's stream.
func (p *pumpState) flushBundled(n int) {
	transport := p.s
	for k := 0; k < n; k++ {
		d, rtcp := p.bdst[k], p.brtcp[k]
		if d == nil {
			continue
		}
		p.nOut = 0
		for j := k; j < n; j++ {
			if p.bdst[j] == d && p.brtcp[j] == rtcp {
				b := p.rx[p.bidx[j]].b
				p.outIov[p.nOut].Base = &b[0]
				p.outIov[p.nOut].SetLen(len(b))
				p.nOut++
				p.bdst[j] = nil
			}
		}
		c := &d.rtp
		if rtcp {
			c = &d.rtcp
		}
		p.s = d
		p.flush(c, rtcp)
	}
	p.s = transport
}

// isRTCP tells RTCP from RTP on a multiplexed port: RTCP packet types
// 192-223 sit where RTP has marker+payload type 64-95 (RFC 5761 §4).
func isRTCP(b []byte) bool { return len(b) >= 8 && b[1] >= 192 && b[1] <= 223 }

// flush sends p.outIov[:nOut] to p.s's peer's RTP (rtcp false) or RTCP
// side. UDP never waits for room: a full socket buffer drops, as a router
// would.
func (p *pumpState) flush(c *counters, rtcp bool) {
	if p.s.heldBack(p.nOut) {
		return // the other side's keys are not there yet (srtp.go)
	}
	sock, dst, ok := p.s.out(rtcp)
	if !ok {
		c.errors.Add(uint64(p.nOut)) // the other side has no address yet
		return
	}
	if lc := sock.s.crypto.Load(); lc != nil && !p.protect(lc, c, rtcp) {
		return
	}
	if p.ring() {
		r := p.w.ring
		for i := 0; i < p.nOut; i++ {
			if r.full() {
				p.submit()
			}
			r.add(sock, dst, unsafe.Slice(p.outIov[i].Base, p.outIov[i].Len), c)
		}
		return
	}
	nameLen := putSockaddr(&p.outName, dst, sock.v6)
	if nameLen == 0 {
		c.errors.Add(uint64(p.nOut))
		return
	}
	for i := 0; i < p.nOut; i++ {
		p.out[i].hdr.Name = (*byte)(unsafe.Pointer(&p.outName))
		p.out[i].hdr.Namelen = nameLen
	}
	sock.mu.RLock()
	defer sock.mu.RUnlock()
	if sock.fd < 0 {
		c.errors.Add(uint64(p.nOut)) // the other side's socket is closed
		return
	}
	for sent := 0; sent < p.nOut; {
		n, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(sock.fd), uintptr(unsafe.Pointer(&p.out[sent])), uintptr(p.nOut-sent), unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 || n == 0 {
			c.errors.Add(uint64(p.nOut - sent)) // full
			return
		}
		sent += int(n)
	}
}

// ring reports whether p sends through its worker's io_uring.
func (p *pumpState) ring() bool { return p.w != nil && p.w.ring != nil }

// submit sends what the worker's ring holds and returns the jitter
// buffers' copies it sent to their free list. The caller decides whether
// bufs may be reused (no forward in progress).
func (p *pumpState) submit() {
	if p.w == nil || p.w.ring == nil {
		return
	}
	p.w.ring.submit()
	for i, b := range p.sentHeld {
		p.w.held.put(b)
		p.sentHeld[i] = nil
	}
	p.sentHeld = p.sentHeld[:0]
}

// protect encrypts p.outIov[:nOut] for an SRTP peer into p.enc, dropping
// (and counting) what cannot be; false when nothing is left to send.
func (p *pumpState) protect(lc *legCrypto, c *counters, rtcp bool) bool {
	base := 0
	if p.ring() {
		// The encrypted copies wait in enc for the ring's submit.
		if p.encUsed+p.nOut > len(p.enc) {
			p.submit()
			p.encUsed = 0
		}
		base = p.encUsed
		p.encUsed += p.nOut
	}
	kept := 0
	lc.mu.Lock()
	for i := 0; i < p.nOut; i++ {
		src := unsafe.Slice(p.outIov[i].Base, p.outIov[i].Len)
		e := &p.enc[base+i]
		out, err := lc.encrypt(e[:0], src, rtcp || isRTCP(src))
		if err != nil || len(out) == 0 || &out[0] != &e[0] {
			c.errors.Add(1) // not RTP, or the peer not keyed yet: never sent in clear
			continue
		}
		p.outIov[kept].Base = &e[0]
		p.outIov[kept].SetLen(len(out))
		kept++
	}
	lc.mu.Unlock()
	p.nOut = kept
	return kept > 0
}

func sockaddrAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr).Unmap()
		return netip.AddrPortFrom(a, ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// putSockaddr writes dst for a socket of the given family (an IPv6 socket
// reaches IPv4 phones at v4-mapped addresses); 0 when it cannot.
func putSockaddr(sa *unix.RawSockaddrInet6, dst netip.AddrPort, v6 bool) uint32 {
	*sa = unix.RawSockaddrInet6{}
	if !v6 {
		if !dst.Addr().Is4() {
			return 0
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		sa4.Port = htons(dst.Port())
		sa4.Addr = dst.Addr().As4()
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	sa.Port = htons(dst.Port())
	sa.Addr = dst.Addr().As16()
	return unix.SizeofSockaddrInet6
}

func ntohs(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

func htons(p uint16) uint16 { return ntohs(p) }
