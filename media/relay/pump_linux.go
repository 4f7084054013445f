package relay

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The pump reads with recvmmsg and forwards with sendmmsg: one system
// call per batch each way. golang.org/x/net's ReadBatch allocates the
// source address of every packet; here the headers, addresses and buffers
// are reused, so forwarding allocates nothing (BenchmarkForward).

const (
	batch   = 16
	bufSize = 2048 // RTP over Ethernet fits; larger datagrams are truncated and dropped
)

// mmsghdr is struct mmsghdr (linux/socket.h) on 64-bit Linux.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

type buffers [batch][bufSize]byte

var bufPool = sync.Pool{New: func() any { return new(buffers) }}

type pumpState struct {
	s    *Stream
	rtcp bool

	in      [batch]mmsghdr
	inIov   [batch]unix.Iovec
	inNames [batch]unix.RawSockaddrInet6
	out     [batch]mmsghdr
	outIov  [batch]unix.Iovec
	outName unix.RawSockaddrInet6
	bufs    *buffers
	demux   [batch]int
	nOut    int
	sent    int
	sendErr syscall.Errno

	recvFn, sendFn func(fd uintptr) bool
	dead           error
}

func (s *Stream) pump(sock *socket, rtcp bool) {
	defer s.wg.Done()
	rc := sock.rc
	p := &pumpState{s: s, rtcp: rtcp}
	for i := range p.in {
		p.in[i].hdr.Name = (*byte)(unsafe.Pointer(&p.inNames[i]))
		p.in[i].hdr.Iov = &p.inIov[i]
		p.in[i].hdr.Iovlen = 1
		p.out[i].hdr.Iov = &p.outIov[i]
		p.out[i].hdr.Iovlen = 1
	}
	p.recvFn = p.recv
	p.sendFn = p.send
	for p.dead == nil {
		if err := rc.Read(p.recvFn); err != nil {
			return // closed
		}
	}
}

// recv drains the socket, forwarding each batch; false means "wait until
// readable again".
func (p *pumpState) recv(fd uintptr) bool {
	p.bufs = bufPool.Get().(*buffers)
	defer func() { bufPool.Put(p.bufs); p.bufs = nil }()
	for {
		for i := range p.in {
			p.inIov[i].Base = &p.bufs[i][0]
			p.inIov[i].SetLen(bufSize)
			p.in[i].hdr.Namelen = uint32(unsafe.Sizeof(p.inNames[i]))
			p.in[i].hdr.Flags = 0
		}
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&p.in[0])), batch, unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == unix.EAGAIN || errno == unix.EINTR:
			return false
		case errno != 0:
			p.dead = errno
			return true
		}
		p.forward(int(n))
		if int(n) < batch {
			// The queue was drained: wait for the next packet rather than
			// spend a system call learning it is empty (the poller's edge
			// for a packet that arrived meanwhile is not lost).
			return false
		}
	}
}

func (p *pumpState) forward(n int) {
	s := p.s
	c := &s.rtp
	if p.rtcp {
		c = &s.rtcp
	}
	wall := time.Now()
	now := wall.UnixNano()
	if !p.rtcp {
		s.statsMu.Lock()
		defer s.statsMu.Unlock()
	}
	// RTCP multiplexed on the RTP port (RFC 5761) goes to the RTCP port of
	// a peer that does not multiplex.
	demux := !p.rtcp && s.mux.Load()
	if peer := s.peer.Load(); peer == nil || peer.mux.Load() {
		demux = false
	}
	p.nOut = 0
	nDemux := 0
	for i := 0; i < n; i++ {
		size := int(p.in[i].n)
		if p.in[i].hdr.Flags&unix.MSG_TRUNC != 0 || size == 0 {
			c.errors.Add(1)
			continue
		}
		c.packets.Add(1)
		c.bytes.Add(uint64(size))
		if !s.accept(sockaddrAddrPort(&p.inNames[i]), p.rtcp) {
			c.errors.Add(1)
			continue
		}
		switch {
		case p.rtcp || isRTCP(p.bufs[i][:size]):
			s.observeRTCP(p.bufs[i][:size], wall)
			if demux {
				p.demux[nDemux] = i
				nDemux++
				continue
			}
		default:
			s.observe(p.bufs[i][:size], wall)
			if s.play != nil && isRTP(p.bufs[i][:size]) {
				if !s.enqueue(p.bufs[i][:size], wall) {
					c.errors.Add(1) // late or duplicate: the jitter buffer counts which
				}
				continue
			}
		}
		p.outIov[p.nOut].Base = &p.bufs[i][0]
		p.outIov[p.nOut].SetLen(size)
		p.nOut++
	}
	s.last.Store(now)
	if p.nOut > 0 {
		p.flush(c, p.rtcp)
	}
	if nDemux > 0 {
		p.nOut = 0
		for _, i := range p.demux[:nDemux] {
			p.outIov[p.nOut].Base = &p.bufs[i][0]
			p.outIov[p.nOut].SetLen(int(p.in[i].n))
			p.nOut++
		}
		p.flush(c, true)
	}
}

// isRTCP tells RTCP from RTP on a multiplexed port: RTCP packet types
// 192-223 sit where RTP has marker+payload type 64-95 (RFC 5761 §4).
func isRTCP(b []byte) bool { return len(b) >= 8 && b[1] >= 192 && b[1] <= 223 }

// flush sends p.out[:nOut] to the peer's RTP (rtcp false) or RTCP side.
func (p *pumpState) flush(c *counters, rtcp bool) {
	sock, dst, ok := p.s.out(rtcp)
	if !ok {
		c.errors.Add(uint64(p.nOut)) // the other side has no address yet
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
	rc := sock.rc
	p.sent = 0
	for p.sent < p.nOut {
		p.sendErr = 0
		if err := rc.Write(p.sendFn); err != nil || p.sendErr != 0 {
			c.errors.Add(uint64(p.nOut - p.sent)) // the other side's socket is closed or full
			return
		}
	}
}

// send writes what is left of the batch; UDP never waits for room: a full
// socket buffer drops, as a router would.
func (p *pumpState) send(fd uintptr) bool {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&p.out[p.sent])), uintptr(p.nOut-p.sent), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		if errno == unix.EINTR {
			return false
		}
		p.sendErr = errno
		return true
	}
	p.sent += int(n)
	return true
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
