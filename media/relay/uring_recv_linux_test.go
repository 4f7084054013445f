package relay

import (
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recvOnRing runs f on a locked thread with a receive ring of nbufs
// buffers, as a worker does.
func recvOnRing(t *testing.T, nbufs int, f func(r *recvRing)) {
	t.Helper()
	if err := CheckRecvRing(); err != nil || !ringOn || !recvRingOn {
		t.Skipf("receiving without io_uring here (RELAY_SEND_RING/RELAY_RECV_RING, or %v): the epoll tests cover it", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		r, err := newRecvRing(nbufs)
		if err != nil {
			t.Error(err)
			return
		}
		defer r.close()
		f(r)
	}()
	<-done
}

type ringCQE struct {
	ud    uint64
	res   int32
	more  bool
	bid   uint16
	hasBu bool
}

// takeCQEs waits until want completions for ud are posted (or 2 s pass)
// and returns them, others dropped.
func takeCQEs(r *recvRing, ud uint64, want int) []ringCQE {
	var got []ringCQE
	for deadline := time.Now().Add(2 * time.Second); len(got) < want && time.Now().Before(deadline); {
		r.wait(int64(20*time.Millisecond), false)
		head, tail := atomic.LoadUint32(r.cqHead), atomic.LoadUint32(r.cqTail)
		for ; head != tail; head++ {
			c := r.cqes[head&*r.cqMask]
			if c.userData != ud {
				continue
			}
			got = append(got, ringCQE{ud: c.userData, res: c.res, more: c.flags&ioringCQEFMore != 0,
				bid: uint16(c.flags >> ioringCQEBufferShift), hasBu: c.flags&ioringCQEFBuffer != 0})
		}
		atomic.StoreUint32(r.cqHead, head)
	}
	return got
}

// A socket's multishot receive delivers each datagram with its source,
// stops (without losing any) when the buffers run out, and goes on once
// they are given back and it is armed again; a cancelled one ends.
func TestRecvRingRunsOutOfBuffersAndRearms(t *testing.T) {
	recvOnRing(t, 4, func(r *recvRing) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		dst := c.LocalAddr().(*net.UDPAddr).AddrPort()
		k := socketOf(t, c)
		k.idx, k.gen = 7, 9
		ud := sockUserData(k)
		// As media/ports sets it on the relay's sockets: each datagram
		// comes with its arrival time in the kernel.
		if err := unix.SetsockoptInt(k.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			t.Fatal(err)
		}
		tx := newPhone(t)
		const total = 10
		sentFrom := time.Now().UnixNano()
		for i := 0; i < total; i++ {
			tx.send(dst, opusPacket(uint16(i)))
		}
		r.arm(k)
		var seqs []uint16
		rounds := 0
		for len(seqs) < total && rounds < 5 {
			rounds++
			cqes := takeCQEs(r, ud, 5) // at most 4 packets, then the end
			if len(cqes) == 0 {
				t.Fatalf("round %d: no completion; got %v so far", rounds, seqs)
			}
			ended := false
			for _, c := range cqes {
				if c.hasBu {
					src, b, at, trunc := r.packet(c.bid, c.res)
					if trunc || sockaddrAddrPort(src) != tx.addr() {
						t.Fatalf("packet from %v (truncated %v), want from %v", sockaddrAddrPort(src), trunc, tx.addr())
					}
					if now := time.Now().UnixNano(); at < sentFrom || at > now {
						t.Fatalf("packet %d arrived at %d by the kernel, want between its sending (%d) and now (%d)", len(seqs), at, sentFrom, now)
					}
					want := opusPacket(uint16(len(seqs)))
					if string(b) != string(want) {
						t.Fatalf("packet %d: %x, want %x", len(seqs), b, want)
					}
					seqs = append(seqs, uint16(b[2])<<8|uint16(b[3]))
					r.give(c.bid)
				}
				if !c.more {
					ended = true
				}
			}
			r.publish()
			if len(seqs) < total {
				if !ended {
					t.Fatalf("round %d: %d packets and still armed with 4 buffers", rounds, len(seqs))
				}
				r.arm(k)
			}
		}
		if len(seqs) != total {
			t.Fatalf("received %d of %d: %v", len(seqs), total, seqs)
		}
		if rounds < 3 {
			t.Fatalf("10 packets through 4 buffers in %d rounds: the buffers never ran out", rounds)
		}
		// Still armed after the last packet (buffers back): cancel ends it.
		tx.send(dst, opusPacket(total))
		if cqes := takeCQEs(r, ud, 1); len(cqes) != 1 || !cqes[0].hasBu {
			t.Fatalf("after re-arming: %+v", cqes)
		} else {
			r.give(cqes[0].bid)
			r.publish()
		}
		r.cancel(ud)
		cqes := takeCQEs(r, ud, 1)
		if len(cqes) != 1 || cqes[0].more {
			t.Fatalf("cancel: %+v, want one last completion", cqes)
		}
	})
}

// Streams relayed through the ring: removing a stream cancels its
// sockets' receives, so its ports can be bound again at once (a request
// left in the ring would keep the socket open).
func TestRecvRingReleasesPortsOnClose(t *testing.T) {
	ws, err := workers()
	if err != nil {
		t.Fatal(err)
	}
	if ws[0].rx == nil {
		t.Skip("workers receive through epoll here (RELAY_SEND_RING/RELAY_RECV_RING off, or no multishot recvmsg): TestReleaseClosesTheWorkersSockets covers it")
	}
	alloc := anchorPorts(t, 43800)
	for round := 0; round < 3; round++ {
		c := newCall(t, alloc, Options{}, netip.AddrPort{})
		c.pa.send(c.portA(), opusPacket(1))
		if _, from, ok := c.pb.recv(2 * time.Second); !ok || from != c.portB() {
			t.Fatalf("round %d: not relayed (from %v)", round, from)
		}
		ports := []int{c.a.Port(), c.a.Port() + 1, c.b.Port(), c.b.Port() + 1}
		alloc.Release(c.a.Pair())
		alloc.Release(c.b.Pair())
		c.a.Wait()
		c.b.Wait()
		alloc.Close() // parked pairs closed: nothing else may hold them
		for _, port := range ports {
			l, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(port))))
			if err != nil {
				t.Fatalf("round %d: port %d still bound: %v", round, port, err)
			}
			l.Close()
		}
	}
}
