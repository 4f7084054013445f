// Package stamp has the kernel note when each datagram reaches a UDP
// socket (SO_TIMESTAMPNS) and reads that time from a datagram's control
// messages: how long a SIP request waited before sori read it (what
// sip/overload sheds by), and where sori-mediabench's latency ends.
package stamp

import (
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On has the kernel stamp each datagram c receives with the time it
// arrived.
func On(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("SO_TIMESTAMPNS: %w", serr)
	}
	return nil
}

// sizeofTimespec is the kernel's struct timespec here.
const sizeofTimespec = int(unsafe.Sizeof(unix.Timespec{}))

// OOBSize holds one SCM_TIMESTAMPNS message.
var OOBSize = unix.CmsgSpace(sizeofTimespec)

// Arrival is the SCM_TIMESTAMPNS time in a datagram's control messages;
// zero if there is none. Parsed by hand: unix.ParseSocketControlMessage
// allocates a slice for every datagram.
func Arrival(oob []byte) time.Time {
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
