package ports

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

var loopback = netip.MustParseAddr("127.0.0.1")

func TestAllocatesEvenOddPairsRoundRobin(t *testing.T) {
	a, err := New(loopback, 41001, 41010) // odd start rounds up: 41002-41010, 4 pairs
	if err != nil {
		t.Fatal(err)
	}
	if a.Size() != 4 {
		t.Fatalf("size %d", a.Size())
	}
	// Another process holds 41004: that pair is skipped.
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41004})
	if err != nil {
		t.Skip("port 41004 is taken on this machine")
	}
	defer busy.Close()
	var got []*Pair
	for {
		p, err := a.Allocate()
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rtp, rtcp := boundPorts(t, p); p.Port%2 != 0 || rtp != p.Port || rtcp != p.Port+1 {
			t.Fatalf("pair %d: bound on %d and %d", p.Port, rtp, rtcp)
		}
		got = append(got, p)
	}
	if len(got) != 3 || got[0].Port != 41002 || got[1].Port != 41006 || got[2].Port != 41008 || a.InUse() != 3 {
		t.Fatalf("allocated %d pairs, in use %d", len(got), a.InUse())
	}
	for _, p := range got {
		a.Release(p)
	}
	busy.Close()
	if a.InUse() != 0 {
		t.Fatalf("%d in use after release", a.InUse())
	}
	// A released pair is not handed out again while others are free: late
	// packets of the old call must not reach a new one.
	first, _ := a.Allocate()
	a.Release(first)
	second, err := a.Allocate()
	if err != nil || second.Port == first.Port {
		t.Fatalf("got %d again right after releasing it (%v)", first.Port, err)
	}
	a.Release(second)
}

func TestBadRanges(t *testing.T) {
	for _, r := range [][2]int{{80, 2000}, {30000, 70000}, {30000, 30000}, {30001, 30001}} {
		if _, err := New(loopback, r[0], r[1]); err == nil {
			t.Errorf("range %v accepted", r)
		}
	}
}

func TestClaimBindsTheSamePairAgain(t *testing.T) {
	a, err := New(netip.MustParseAddr("127.0.0.1"), 45600, 45609)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Claim(45604)
	if err != nil || p.Port != 45604 || a.InUse() != 1 {
		t.Fatalf("claim: %v %v", p, err)
	}
	if _, err := a.Claim(45604); !errors.Is(err, ErrTaken) {
		t.Fatalf("a second claim: %v", err)
	}
	for _, bad := range []int{45605, 45598, 45610} {
		if _, err := a.Claim(bad); !errors.Is(err, ErrTaken) {
			t.Fatalf("claim %d: %v", bad, err)
		}
	}
	// New pairs come after the claimed one, and never it.
	q, err := a.Allocate()
	if err != nil || q.Port != 45606 {
		t.Fatalf("allocate after claim: %v %v", q, err)
	}
	a.Release(p)
	a.Release(q)
	// A port another socket holds cannot be claimed, and nothing is left bound.
	held, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 45601})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := a.Claim(45600); !errors.Is(err, ErrTaken) || a.InUse() != 0 {
		t.Fatalf("claim of a held pair: %v, %d in use", err, a.InUse())
	}
	if c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 45600}); err != nil {
		t.Fatalf("the failed claim left its RTP port bound: %v", err)
	} else {
		c.Close()
	}
}
