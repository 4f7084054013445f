//go:build linux

package ports

import (
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func boundPorts(t *testing.T, p *Pair) (rtp, rtcp int) {
	t.Helper()
	port := func(fd int) int {
		sa, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}
		return sa.(*unix.SockaddrInet4).Port
	}
	a, b := p.FDs()
	return port(a), port(b)
}

// clock is a test's time for an Allocator.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func bindable(port int) bool {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// A released pair stays bound (parked), is not handed out again within
// Quarantine while other pairs are free, then is, with what it received
// meanwhile dropped and its full receive buffer back.
func TestReleasedPairsAreParkedThenReused(t *testing.T) {
	a, err := New(loopback, 45700, 45709) // 5 pairs
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	clk := &clock{t: time.Unix(1000, 0)}
	a.now = clk.now
	p, err := a.Allocate()
	if err != nil || p.Port != 45700 {
		t.Fatalf("first pair %v %v", p, err)
	}
	closed := false
	p.SetCloser(func() { closed = true })
	rtpFD, rtcpFD := p.FDs()
	for _, fd := range []int{rtpFD, rtcpFD} {
		// The relay reads each datagram's kernel arrival time.
		if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS); err != nil || on != 1 {
			t.Fatalf("SO_TIMESTAMPNS %d (%v), want on", on, err)
		}
	}
	a.Release(p)
	if !closed || a.InUse() != 0 || a.Parked() != 1 || bindable(45700) || bindable(45701) {
		t.Fatalf("released: closer %v, %d in use, %d parked, 45700 bindable %v", closed, a.InUse(), a.Parked(), bindable(45700))
	}
	if n, _ := unix.GetsockoptInt(rtpFD, unix.SOL_SOCKET, unix.SO_RCVBUF); n > 8192 {
		t.Fatalf("parked receive buffer %d bytes, want the minimum", n)
	}
	// A late packet of the old call, and a spray: both dropped on reuse.
	tx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	for i := range 10 {
		_, _ = tx.WriteToUDP([]byte{0x80, byte(i)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 45700 + i%2})
	}
	q, err := a.Allocate()
	if err != nil || q.Port != 45702 {
		t.Fatalf("within quarantine: got %v %v, want a fresh pair 45702", q, err)
	}
	clk.advance(Quarantine)
	r, err := a.Allocate()
	if err != nil || r.Port != 45700 || a.Parked() != 0 || a.InUse() != 2 {
		t.Fatalf("after quarantine: got %v %v (%d parked), want 45700 again", r, err, a.Parked())
	}
	if f1, f2 := r.FDs(); f1 != rtpFD || f2 != rtcpFD {
		t.Fatalf("reused pair has descriptors %d,%d, want the parked %d,%d", f1, f2, rtpFD, rtcpFD)
	}
	if n, _ := unix.GetsockoptInt(rtpFD, unix.SOL_SOCKET, unix.SO_RCVBUF); n < 65536 {
		t.Fatalf("reused receive buffer %d bytes, want the default back", n)
	}
	var buf [16]byte
	if _, _, err := unix.Recvfrom(rtpFD, buf[:], unix.MSG_DONTWAIT); err != unix.EAGAIN {
		t.Fatalf("a packet from while parked was kept: %v", err)
	}
	_, _ = tx.WriteToUDP([]byte{0x80, 0xff}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 45700})
	deadline := time.Now().Add(time.Second)
	for {
		n, _, err := unix.Recvfrom(rtpFD, buf[:], unix.MSG_DONTWAIT)
		if err == nil {
			if n != 2 || buf[1] != 0xff {
				t.Fatalf("got %x, want the new call's packet", buf[:n])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reused pair receives nothing: %v", err)
		}
		runtime.Gosched()
	}
	a.Release(q)
	a.Release(r)
	a.Release(r) // twice: no harm
	if a.Parked() != 2 || a.InUse() != 0 {
		t.Fatalf("%d parked, %d in use", a.Parked(), a.InUse())
	}
	a.Close()
	if a.Parked() != 0 || !bindable(45700) || !bindable(45702) {
		t.Fatal("Close left parked pairs bound")
	}
}

// With every other pair in use, a parked pair is handed out even within
// Quarantine (rather than ErrExhausted); Claim takes a parked pair; beyond
// the limit, released pairs are closed.
func TestParkedPairsUnderPressure(t *testing.T) {
	a, err := New(loopback, 45710, 45713) // 2 pairs
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	clk := &clock{t: time.Unix(1000, 0)}
	a.now = clk.now
	p1, _ := a.Allocate()
	p2, _ := a.Allocate()
	a.Release(p1)
	p3, err := a.Allocate()
	if err != nil || p3.Port != p1.Port {
		t.Fatalf("range full: got %v %v, want the parked %d", p3, err, p1.Port)
	}
	if _, err := a.Allocate(); err != ErrExhausted {
		t.Fatalf("all in use: %v", err)
	}
	a.Release(p2)
	c, err := a.Claim(p2.Port)
	if err != nil || c.Port != p2.Port || a.Parked() != 0 || a.InUse() != 2 {
		t.Fatalf("claim of a parked pair: %v %v, %d parked", c, err, a.Parked())
	}
	a.maxPark = 1
	a.Release(c)
	a.Release(p3)
	if a.Parked() != 1 || !bindable(p3.Port) {
		t.Fatalf("beyond the limit: %d parked, %d bindable %v", a.Parked(), p3.Port, bindable(p3.Port))
	}
}
