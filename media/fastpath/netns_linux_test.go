package fastpath

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Three network namespaces joined by veth pairs: phone A, the anchor (S)
// and phone B, addressed inside 127.0.0.0/8 (route_localnet, and no
// loopback interface up) so that nothing leaves loopback addresses, yet A
// and B are other hosts to the anchor: its program must look the route up,
// rewrite the checksums right and redirect the packet out of another
// interface, as it does to a phone on the Internet.
type netnsLab struct {
	t       *testing.T
	a, s, b string
}

// ipPath is iproute2's ip, also where PATH lacks the sbin directories
// (make deps installs it when absent).
func ipPath() string {
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "ip"
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(ipPath(), args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v\n%s", args, err, out)
	}
}

func newNetnsLab(t *testing.T) *netnsLab {
	t.Helper()
	id := os.Getpid() % 100000
	l := &netnsLab{t: t, a: fmt.Sprintf("sfp%da", id), s: fmt.Sprintf("sfp%ds", id), b: fmt.Sprintf("sfp%db", id)}
	for _, ns := range []string{l.a, l.s, l.b} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command(ipPath(), "netns", "del", ns).Run() })
		ipCmd(t, "netns", "exec", ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet")
	}
	ipCmd(t, "-n", l.s, "link", "add", "sa", "type", "veth", "peer", "name", "va", "netns", l.a)
	ipCmd(t, "-n", l.s, "link", "add", "sb", "type", "veth", "peer", "name", "vb", "netns", l.b)
	for _, c := range []struct{ ns, dev, addr string }{
		{l.s, "sa", "127.1.0.1/24"}, {l.s, "sb", "127.2.0.1/24"}, {l.a, "va", "127.1.0.2/24"}, {l.b, "vb", "127.2.0.2/24"},
	} {
		ipCmd(t, "-n", c.ns, "addr", "add", c.addr, "dev", c.dev)
		ipCmd(t, "-n", c.ns, "link", "set", c.dev, "up")
	}
	return l
}

// in runs f on a thread of its own in namespace ns: sockets and the
// program's attachment made there stay there.
func (l *netnsLab) in(ns string, f func() error) {
	l.t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		err = f()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread() // else the thread ends with the goroutine
		}
		done <- err
	}()
	if err := <-done; err != nil {
		l.t.Fatalf("in %s: %v", ns, err)
	}
}

func (l *netnsLab) listen(ns, addr string) *net.UDPConn {
	var c *net.UDPConn
	l.in(ns, func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	l.t.Cleanup(func() { c.Close() })
	return c
}

// udpChecksum is RFC 768's over the IPv4 pseudo-header and the datagram.
func udpChecksum(src, dst netip.Addr, udp []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	s, d := src.As4(), dst.As4()
	add(s[:])
	add(d[:])
	sum += unix.IPPROTO_UDP + uint32(len(udp))
	add(udp)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	return c
}

func TestForwardsToAnotherHostWithItsChecksums(t *testing.T) {
	l := newNetnsLab(t)
	legA, legB := l.listen(l.s, "127.1.0.1:0"), l.listen(l.s, "127.2.0.1:0")
	phoneB := l.listen(l.b, "127.2.0.2:0")
	var p *Path
	l.in(l.s, func() (err error) {
		p, err = Open([]netip.Addr{netip.MustParseAddr("127.1.0.1"), netip.MustParseAddr("127.2.0.1")})
		return err
	})
	defer p.Close()
	// Phone A sends from a raw socket: its UDP checksum is computed here,
	// whole (no offload), so phone B's kernel verifies the one it gets.
	var raw int
	l.in(l.a, func() (err error) {
		raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
		return err
	})
	defer unix.Close(raw)
	phoneA := netip.MustParseAddrPort("127.1.0.2:40000")
	if err := p.Set(ap(legA), Route{Src: phoneA, Out: ap(legB), Dst: ap(phoneB), ID: 7}); err != nil {
		t.Fatal(err)
	}
	records := make(chan Record, 8)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.Run(ctx, func(r Record) { records <- r }) }()

	send := func(seq uint16, corrupt bool) {
		t.Helper()
		payload := rtpPacket(seq, 111)
		udp := make([]byte, 8+len(payload))
		binary.BigEndian.PutUint16(udp[0:], phoneA.Port())
		binary.BigEndian.PutUint16(udp[2:], ap(legA).Port())
		binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
		copy(udp[8:], payload)
		sum := udpChecksum(phoneA.Addr(), ap(legA).Addr(), udp)
		if corrupt {
			sum ^= 0x0101
		}
		binary.BigEndian.PutUint16(udp[6:], sum)
		to := &unix.SockaddrInet4{Addr: ap(legA).Addr().As4()}
		if err := unix.Sendto(raw, udp, 0, to); err != nil {
			t.Fatal(err)
		}
	}
	awaitRecord := func(seq uint16) {
		t.Helper()
		select {
		case r := <-records:
			if r.ID != 7 || r.Seq != seq {
				t.Fatalf("record %+v, want stream 7 seq %d", r, seq)
			}
		case <-time.After(time.Second):
			t.Fatalf("no record of packet %d: the kernel did not forward it (counts %+v)", seq, p.Counts())
		}
	}

	// A datagram with a wrong checksum is forwarded with one still wrong:
	// phone B's kernel drops it, so a right checksum there is the program's.
	send(1, true)
	awaitRecord(1)
	if b, _, ok := receive(t, phoneB); ok {
		t.Fatalf("phone B accepted a datagram whose checksum was wrong: %x", b)
	}
	for seq := uint16(2); seq <= 4; seq++ {
		send(seq, false)
		awaitRecord(seq)
		got, from, ok := receive(t, phoneB)
		if !ok || !bytes.Equal(got, rtpPacket(seq, 111)) || from != ap(legB) {
			t.Fatalf("phone B got %x from %v (%v), want packet %d from %v", got, from, ok, seq, ap(legB))
		}
	}
	if n := p.Counts().Forwarded; n != 4 {
		t.Fatalf("forwarded %d in the kernel, want 4", n)
	}
}
