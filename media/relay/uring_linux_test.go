package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ringFixture is n sockets on loopback that each send one datagram per
// round to one receiving socket.
func ringFixture(tb testing.TB, n int) ([]*socket, *net.UDPConn, netip.AddrPort) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	_ = rx.SetReadBuffer(8 << 20)
	tb.Cleanup(func() { rx.Close() })
	socks := make([]*socket, n)
	for i := range socks {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		socks[i] = socketOf(tb, c)
	}
	return socks, rx, rx.LocalAddr().(*net.UDPAddr).AddrPort()
}

func drainRx(tb testing.TB, rx *net.UDPConn, n int) {
	buf := make([]byte, 2048)
	for i := 0; i < n; i++ {
		if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkSendFromManySockets: one datagram from each of 256 sockets per
// op, by sendmmsg per socket (as flush) or through the ring in one call.
func BenchmarkSendFromManySockets(b *testing.B) {
	const n = 256
	pkt := make([]byte, 172)
	b.Run("sendmmsg", func(b *testing.B) {
		socks, rx, dst := ringFixture(b, n)
		var p pumpState
		p.init(nil)
		for b.Loop() {
			for _, k := range socks {
				nameLen := putSockaddr(&p.outName, dst, false)
				p.out[0].hdr.Name = (*byte)(unsafe.Pointer(&p.outName))
				p.out[0].hdr.Namelen = nameLen
				p.outIov[0].Base = &pkt[0]
				p.outIov[0].SetLen(len(pkt))
				k.mu.RLock()
				_, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(k.fd), uintptr(unsafe.Pointer(&p.out[0])), 1, unix.MSG_DONTWAIT, 0, 0)
				k.mu.RUnlock()
				if errno != 0 {
					b.Fatal(errno)
				}
			}
			drainRx(b, rx, n)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/pkt")
	})
	b.Run("ring", func(b *testing.B) {
		socks, rx, dst := ringFixture(b, n)
		r, err := newSendRing(n)
		if err != nil {
			b.Fatal(err)
		}
		defer r.close()
		var c counters
		for b.Loop() {
			for _, k := range socks {
				r.add(k, dst, pkt, &c)
			}
			r.submit()
			drainRx(b, rx, n)
		}
		if c.errors.Load() != 0 {
			b.Fatalf("%d errors", c.errors.Load())
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/pkt")
	})
}

// The ring sends each datagram from its own socket, several from one
// socket in a batch too, and counts what it could not send.
func TestSendRing(t *testing.T) {
	socks, rx, dst := ringFixture(t, 3)
	r, err := newSendRing(4)
	if err != nil {
		t.Fatalf("io_uring: %v (the workers would fall back to sendmmsg)", err)
	}
	defer r.close()
	var c counters
	want := map[string]int{}
	for i, k := range []int{0, 1, 0, 2} {
		pkt := []byte{byte(i), byte(k)}
		r.add(socks[k], dst, pkt, &c)
		want[string(pkt)] = localPort(t, socks[k])
	}
	if !r.full() {
		t.Fatal("four sends in a ring of four: not full")
	}
	r.submit()
	// A closed socket queues nothing; a v6 destination on a v4 socket neither.
	socks[2].close()
	r.add(socks[2], dst, []byte{9, 9}, &c)
	r.add(socks[1], netip.MustParseAddrPort("[::1]:9"), []byte{8, 8}, &c)
	r.submit()
	if got := c.errors.Load(); got != 2 {
		t.Errorf("errors %d, want 2", got)
	}
	buf := make([]byte, 16)
	_ = rx.SetReadDeadline(time.Now().Add(2 * time.Second))
	for range want {
		n, from, err := rx.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		port, ok := want[string(buf[:n])]
		if !ok || int(from.Port()) != port {
			t.Errorf("datagram %v from %v: want port %d", buf[:n], from, port)
		}
		delete(want, string(buf[:n]))
	}
	if socks[1].queued.Load() != 0 || socks[0].queued.Load() != 0 {
		t.Error("sockets still counted as queued after submit")
	}
}

// socketOf makes a relay socket of c's descriptor (a duplicate; c is
// closed), as a pair's would be; it is closed at the test's end.
func socketOf(tb testing.TB, c *net.UDPConn) *socket {
	tb.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd, err = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || fd < 0 {
		tb.Fatal(err)
	}
	c.Close()
	k := &socket{fd: fd}
	tb.Cleanup(func() { k.close(); unix.Close(fd) })
	return k
}

func localPort(tb testing.TB, k *socket) int {
	sa, err := unix.Getsockname(k.fd)
	if err != nil {
		tb.Fatal(err)
	}
	return sa.(*unix.SockaddrInet4).Port
}
