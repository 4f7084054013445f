//go:build linux

package ports

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// On Linux the pair is two raw non-blocking descriptors: media/relay's
// workers receive and send on them with their own epoll or io_uring, so
// Go's poller never sees them.
type pairSockets struct{ rtp, rtcp int }

// FDs are the pair's descriptors: the Allocator's, until Release; a user
// must stop using them in its closer.
func (p *Pair) FDs() (rtp, rtcp int) { return p.socks.rtp, p.socks.rtcp }

func bindPair(addr netip.Addr, port int) (*Pair, error) {
	rtp, err := bindUDP(addr, port)
	if err != nil {
		return nil, err
	}
	rtcp, err := bindUDP(addr, port+1)
	if err != nil {
		unix.Close(rtp)
		return nil, err
	}
	return &Pair{Port: port, addr: addr, socks: pairSockets{rtp, rtcp}}, nil
}

func bindUDP(addr netip.Addr, port int) (int, error) {
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: port, Addr: addr.As4()}
	if addr.Is6() {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: port, Addr: addr.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("ports: socket: %w", err)
	}
	if family == unix.AF_INET6 && !addr.IsUnspecified() {
		// A v6 address takes v6 only; "::" takes IPv4 too, as Go's
		// ListenUDP does.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	} else if family == unix.AF_INET6 {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	}
	// Each datagram carries its arrival time in the kernel, which the
	// relay's io_uring receive reads (SCM_TIMESTAMPNS) for the stream's
	// jitter and its jitter buffer.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("ports: bind %s: %w", netip.AddrPortFrom(addr, uint16(port)), err)
	}
	return fd, nil
}

// park shrinks the receive buffers to the kernel's minimum, so that a
// parked pair's packets (late ones of its call, or anyone's spraying the
// range) hold a few kilobytes of kernel memory, not its full buffer.
func (s *pairSockets) park() bool {
	for _, fd := range []int{s.rtp, s.rtcp} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 0) != nil {
			return false
		}
	}
	return true
}

// unpark drops what the pair received while parked and gives it back the
// default receive buffer. One poll of both sockets says whether there is
// anything to drop (mostly not), where a recvfrom on each said it and
// allocated its source address: two pairs taken and released cost 4
// allocations and 7.7-9.0 µs of CPU before, none and 7.2-8.1 µs after
// (BenchmarkAllocateRelease, 2026-12-04; the rest is SO_RCVBUF).
func (s *pairSockets) unpark() error {
	fds := [2]unix.PollFd{{Fd: int32(s.rtp), Events: unix.POLLIN}, {Fd: int32(s.rtcp), Events: unix.POLLIN}}
	n, err := unix.Poll(fds[:], 0)
	if err != nil {
		n = len(fds) // unknown: drain both, as before
		fds[0].Revents, fds[1].Revents = unix.POLLIN, unix.POLLIN
	}
	var buf [1]byte
	for _, p := range fds[:] {
		if n > 0 && p.Revents != 0 {
			for range 64 { // a minimal buffer holds a few datagrams
				// read takes one datagram, whatever its length, as
				// recvfrom with MSG_TRUNC did; the socket does not block.
				if _, err := unix.Read(int(p.Fd), buf[:]); err != nil {
					break
				}
			}
		}
		if err := unix.SetsockoptInt(int(p.Fd), unix.SOL_SOCKET, unix.SO_RCVBUF, defaultRcvBuf()); err != nil {
			return fmt.Errorf("ports: SO_RCVBUF: %w", err)
		}
	}
	return nil
}

func (s *pairSockets) close() {
	unix.Close(s.rtp)
	unix.Close(s.rtcp)
}

// defaultRcvBuf is the SO_RCVBUF value that gives a socket the default
// buffer back: the kernel doubles what it is given.
var defaultRcvBuf = sync.OnceValue(func() int {
	n := 212992 // Linux's usual net.core.rmem_default
	if b, err := os.ReadFile("/proc/sys/net/core/rmem_default"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			n = v
		}
	}
	return n / 2
})
