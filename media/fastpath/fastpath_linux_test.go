package fastpath

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
)

func listen(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ap(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func rtpPacket(seq uint16, pt byte) []byte {
	b := make([]byte, 12+20)
	b[0], b[1] = 0x80, pt
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], 960*uint32(seq))
	binary.BigEndian.PutUint32(b[8:], 0x5011)
	copy(b[12:], "twenty bytes of opus")
	return b
}

// receive reads one datagram within a second; ok false on a timeout.
func receive(t *testing.T, c *net.UDPConn) ([]byte, netip.AddrPort, bool) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(time.Second))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, netip.AddrPort{}, false
	}
	return buf[:n], from, true
}

func TestForwardsTheLatchedPhonesRTPInTheKernel(t *testing.T) {
	p, err := Open([]netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatalf("the fast path must load as root on Linux 6.6+: %v", err)
	}
	defer p.Close()
	phoneA, phoneB, stranger := listen(t, "127.0.0.1:0"), listen(t, "127.0.0.1:0"), listen(t, "127.0.0.1:0")
	legA, legB := listen(t, "127.0.0.7:0"), listen(t, "127.0.0.7:0")
	if err := p.Set(ap(legA), Route{Src: ap(phoneA), Out: ap(legB), Dst: ap(phoneB), ID: 42}); err != nil {
		t.Fatal(err)
	}
	records := make(chan Record, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx, func(r Record) { records <- r })

	cases := []struct {
		name   string
		from   *net.UDPConn
		packet []byte
		fast   bool // reaches phone B from leg B, unseen by leg A
	}{
		{"RTP from the latched phone", phoneA, rtpPacket(7, 111), true},
		{"RTP with the marker bit", phoneA, rtpPacket(8, 0x80|111), true},
		{"RTCP on the RTP port", phoneA, append([]byte{0x80, 200, 0, 6}, make([]byte, 24)...), false},
		{"STUN", phoneA, append([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42}, make([]byte, 12)...), false},
		{"too short for RTP", phoneA, []byte{0x80, 111, 0, 1}, false},
		{"RTP from another address", stranger, rtpPacket(9, 111), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := c.from.WriteToUDPAddrPort(c.packet, ap(legA)); err != nil {
				t.Fatal(err)
			}
			if c.fast {
				got, from, ok := receive(t, phoneB)
				if !ok || !bytes.Equal(got, c.packet) || from != ap(legB) {
					t.Fatalf("phone B got %x from %v (%v), want %x from %v", got, from, ok, c.packet, ap(legB))
				}
				select {
				case r := <-records:
					want := Record{ID: 42, SSRC: 0x5011, Seq: binary.BigEndian.Uint16(c.packet[2:]), TS: binary.BigEndian.Uint32(c.packet[4:]), Len: uint16(len(c.packet))}
					if d := time.Since(r.Arrival); d < 0 || d > 2*time.Second {
						t.Errorf("arrival %v is %v from now", r.Arrival, d)
					}
					r.Arrival = time.Time{}
					if r != want {
						t.Errorf("record %+v, want %+v", r, want)
					}
				case <-time.After(2 * time.Second):
					t.Fatal("no record of the forwarded packet")
				}
				return
			}
			got, from, ok := receive(t, legA)
			if !ok || !bytes.Equal(got, c.packet) || from != ap(c.from) {
				t.Fatalf("leg A got %x from %v (%v), want the packet from %v", got, from, ok, ap(c.from))
			}
		})
	}
	if c := p.Counts(); c.Forwarded != 2 || c.RingFull != 0 {
		t.Errorf("counts %+v, want 2 forwarded", c)
	}

	p.Delete(ap(legA))
	pkt := rtpPacket(10, 111)
	phoneA.WriteToUDPAddrPort(pkt, ap(legA))
	if got, _, ok := receive(t, legA); !ok || !bytes.Equal(got, pkt) {
		t.Fatalf("after Delete leg A got %x (%v), want the packet", got, ok)
	}
}

func TestRefusesWhatTheKernelCannotForward(t *testing.T) {
	p, err := Open([]netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a := netip.MustParseAddrPort("127.0.0.1:4000")
	v6 := netip.MustParseAddrPort("[::1]:4000")
	for _, r := range []Route{
		{Src: v6, Out: a, Dst: a},
		{Src: a, Out: netip.MustParseAddrPort("0.0.0.0:4000"), Dst: a},
		{Src: a, Out: a},
	} {
		if err := p.Set(a, r); err != ErrUnsupported {
			t.Errorf("Set(%+v) = %v, want ErrUnsupported", r, err)
		}
	}
}
