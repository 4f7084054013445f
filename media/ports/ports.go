// Package ports hands out RTP/RTCP socket pairs from a port range: an even
// port for RTP and the next odd one for RTCP (RFC 3550 §11), bound on the
// anchor's media address.
package ports

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// ErrExhausted: no free pair is left in the range.
var ErrExhausted = errors.New("ports: range exhausted")

// Pair is an RTP socket and its RTCP socket.
type Pair struct {
	RTP, RTCP *net.UDPConn
	Port      int // the RTP port; RTCP is Port+1

	closer func()
}

// SetCloser makes Release call f to close the pair's sockets: for a user
// that took their descriptors over (media/relay on Linux moves them out of
// Go's poller into its own epoll workers and closes RTP and RTCP itself).
func (p *Pair) SetCloser(f func()) { p.closer = f }

// Allocator allocates pairs round robin over the range, so a port just
// released is not handed out again at once (late packets of the old call
// would reach the new one).
type Allocator struct {
	addr     netip.Addr
	min, max int // even min, max inclusive
	mu       sync.Mutex
	next     int
	used     map[int]bool
}

// New returns an allocator for [min, max] on addr.
func New(addr netip.Addr, min, max int) (*Allocator, error) {
	if min%2 == 1 {
		min++
	}
	if min < 1024 || max > 65535 || max < min+1 {
		return nil, fmt.Errorf("ports: bad range %d-%d", min, max)
	}
	return &Allocator{addr: addr, min: min, max: max, next: min, used: map[int]bool{}}, nil
}

// Size is the number of pairs in the range.
func (a *Allocator) Size() int { return (a.max - a.min + 1) / 2 }

// InUse is the number of pairs allocated.
func (a *Allocator) InUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.used)
}

// Allocate binds the next free pair. Ports another process holds are skipped.
func (a *Allocator) Allocate() (*Pair, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for tries := a.Size(); tries > 0; tries-- {
		p := a.next
		a.next += 2
		if a.next+1 > a.max {
			a.next = a.min
		}
		if a.used[p] {
			continue
		}
		rtp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.addr, uint16(p))))
		if err != nil {
			continue
		}
		rtcp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.addr, uint16(p+1))))
		if err != nil {
			rtp.Close()
			continue
		}
		a.used[p] = true
		return &Pair{RTP: rtp, RTCP: rtcp, Port: p}, nil
	}
	return nil, ErrExhausted
}

// Release closes the pair and frees its ports.
func (a *Allocator) Release(p *Pair) {
	if p.closer != nil {
		p.closer()
	}
	p.RTP.Close() // already closed when a closer took them over: no harm
	p.RTCP.Close()
	a.mu.Lock()
	delete(a.used, p.Port)
	a.mu.Unlock()
}

// ErrTaken: the pair asked for by Claim is allocated already or cannot be bound.
var ErrTaken = errors.New("ports: pair not available")

// Claim binds the pair whose RTP port is port, as Allocate would have: an
// anchor restoring its calls after a restart takes back the ports the
// phones still send to.
func (a *Allocator) Claim(port int) (*Pair, error) {
	if port%2 == 1 || port < a.min || port+1 > a.max {
		return nil, fmt.Errorf("%w: %d is not an RTP port of %d-%d", ErrTaken, port, a.min, a.max)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.used[port] {
		return nil, fmt.Errorf("%w: %d is in use", ErrTaken, port)
	}
	rtp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.addr, uint16(port))))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTaken, err)
	}
	rtcp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.addr, uint16(port+1))))
	if err != nil {
		rtp.Close()
		return nil, fmt.Errorf("%w: %w", ErrTaken, err)
	}
	a.used[port] = true
	if port >= a.next {
		// New calls go on after the restored ones, as they would have.
		a.next = port + 2
		if a.next+1 > a.max {
			a.next = a.min
		}
	}
	return &Pair{RTP: rtp, RTCP: rtcp, Port: port}, nil
}
