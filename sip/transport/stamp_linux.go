package transport

import (
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// stampArrivals has the kernel stamp each datagram c receives with the
// time it arrived (SO_TIMESTAMPNS): how long a request waited before sori
// read it is what sip/overload sheds by. False if it cannot.
func stampArrivals(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return false
	}
	return true
}

// sizeofTimespec is the kernel's struct timespec here.
const sizeofTimespec = int(unsafe.Sizeof(unix.Timespec{}))

// oobSize holds one SCM_TIMESTAMPNS message.
var oobSize = unix.CmsgSpace(sizeofTimespec)

// arrival is the SCM_TIMESTAMPNS time in a datagram's control messages;
// zero if there is none. Parsed by hand: unix.ParseSocketControlMessage
// allocates a slice for every datagram.
func arrival(oob []byte) time.Time {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0])) // oob is 8-aligned, each message too (CmsgSpace)
		n := int(h.Len)
		if n < unix.SizeofCmsghdr || n > len(oob) {
			return time.Time{}
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && n >= unix.CmsgLen(sizeofTimespec) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			return time.Unix(ts.Unix())
		}
		oob = oob[min(unix.CmsgSpace(n-unix.CmsgLen(0)), len(oob)):]
	}
	return time.Time{}
}
