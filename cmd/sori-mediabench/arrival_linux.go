package main

import (
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// arrivalOOB is room for one control message: the kernel's arrival time
// of a datagram (SCM_TIMESTAMPNS).
const arrivalOOB = unix.SizeofCmsghdr + int(unsafe.Sizeof(unix.Timespec{}))

// stampArrivals asks the kernel to note when each datagram reaches c
// (SO_TIMESTAMPNS), so a packet's latency ends when it arrived at the
// generator's socket, not when the generator, on the same cores as the
// relay, got round to reading it: the relay's added latency, not the
// generator's.
func stampArrivals(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return err
	}
	return serr
}

// arrival is the kernel's arrival time in oob (Unix ns), 0 when it holds
// none.
func arrival(oob []byte) int64 {
	if len(oob) < arrivalOOB {
		return 0
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	if h.Level != unix.SOL_SOCKET || h.Type != unix.SCM_TIMESTAMPNS || int(h.Len) < arrivalOOB {
		return 0
	}
	ts := (*unix.Timespec)(unsafe.Pointer(&oob[unix.SizeofCmsghdr]))
	return ts.Nano()
}
