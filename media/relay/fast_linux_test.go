package relay

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/fastpath"
	"github.com/sori-voice/sori/media/jitter"
)

// withFastPath loads the kernel fast path for the test's streams; the
// relay's other tests run without it.
func withFastPath(t *testing.T) *fastpath.Path {
	t.Helper()
	path, err := fastpath.Open([]netip.Addr{loopback})
	if err != nil {
		t.Fatalf("the fast path must load as root on Linux 6.6+ (sori-anchor falls back to the relay without it): %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = path.Run(ctx, FastRecord); close(done) }()
	SetFastPath(path)
	t.Cleanup(func() {
		SetFastPath(nil)
		cancel()
		<-done
		path.Close()
	})
	return path
}

// eventually waits up to a second for cond, checking each millisecond:
// the kernel's records reach the relay within fastpath's poll interval.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("after a second: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// relayed sends seq from→to and checks it arrives at rcv from the anchor's
// port want, unchanged.
func relayed(t *testing.T, from, rcv *phone, to, want netip.AddrPort, seq uint16) {
	t.Helper()
	from.send(to, opusPacket(seq))
	got, src, ok := rcv.recv(time.Second)
	if !ok || !bytes.Equal(got, opusPacket(seq)) || src != want {
		t.Fatalf("packet %d: ok=%v from %s (want %s), same=%v", seq, ok, src, want, bytes.Equal(got, opusPacket(seq)))
	}
}

func TestKernelForwardsALatchedPlainStream(t *testing.T) {
	path := withFastPath(t)
	alloc := anchorPorts(t, 48400)
	c := newCall(t, alloc, Options{Handover: true}, netip.AddrPort{})
	// The first packets of each leg go through the relay, which latches
	// and then gives the route to the kernel.
	relayed(t, c.pa, c.pb, c.portA(), c.portB(), 1)
	relayed(t, c.pb, c.pa, c.portB(), c.portA(), 1001)
	eventually(t, "both legs routed in the kernel", func() bool { return c.a.FastRouted() && c.b.FastRouted() })
	before := path.Counts().Forwarded
	for seq := uint16(2); seq <= 100; seq++ {
		relayed(t, c.pa, c.pb, c.portA(), c.portB(), seq)
		relayed(t, c.pb, c.pa, c.portB(), c.portA(), 1000+seq)
	}
	if n := path.Counts().Forwarded - before; n < 2*99 {
		t.Fatalf("the kernel forwarded %d of the 198 packets after the routes were set", n)
	}
	// Counted and measured as if the relay had forwarded them.
	eventually(t, "A's 100 packets counted", func() bool { rtp, _ := c.a.Stats(); return rtp.Packets == 100 })
	eventually(t, "B's 100 packets counted", func() bool { rtp, _ := c.b.Stats(); return rtp.Packets == 100 })
	rtpA, _ := c.a.Stats()
	if rtpA.Bytes != 100*uint64(len(opusPacket(1))) || rtpA.Errors != 0 {
		t.Fatalf("A's counters %+v", rtpA)
	}
	if r := c.a.ReceptionSnapshot(); r.Received != 100 || r.Expected != 100 || r.Lost != 0 || r.SSRC != 0x1234 {
		t.Fatalf("A's reception %+v", r)
	}
	if time.Since(c.a.LastPacket()) > time.Second {
		t.Fatalf("A's last packet %v ago", time.Since(c.a.LastPacket()))
	}

	// A moves from Wi-Fi to LTE: its first packet from there reaches the
	// relay, which moves both routes; B's media follows A.
	lte := newPhone(t)
	relayed(t, lte, c.pb, c.portA(), c.portB(), 101)
	if ep, _ := c.a.Endpoint(); ep != lte.addr() {
		t.Fatalf("A's endpoint %s after the handover, want %s", ep, lte.addr())
	}
	relayed(t, c.pb, lte, c.portB(), c.portA(), 1101)
	eventually(t, "both legs routed again", func() bool { return c.a.FastRouted() && c.b.FastRouted() })
	before = path.Counts().Forwarded
	for seq := uint16(102); seq <= 110; seq++ {
		relayed(t, lte, c.pb, c.portA(), c.portB(), seq)
		relayed(t, c.pb, lte, c.portB(), c.portA(), 1000+seq)
	}
	if n := path.Counts().Forwarded - before; n < 18 {
		t.Fatalf("after the handover the kernel forwarded %d of 18", n)
	}

	// B withdraws consent: nothing reaches it, not even from the kernel.
	c.b.SetConsent(false)
	if c.a.FastRouted() {
		t.Fatal("A's route stayed after B withdrew consent")
	}
	lte.send(c.portA(), opusPacket(111))
	if _, _, ok := c.pb.recv(200 * time.Millisecond); ok {
		t.Fatal("a packet reached B without its consent")
	}
	c.b.SetConsent(true)
	relayed(t, lte, c.pb, c.portA(), c.portB(), 112)
	eventually(t, "A routed again with consent", c.a.FastRouted)

	// B's stream closes: A's route out of it goes with it.
	alloc.Release(c.b.Pair())
	if c.a.FastRouted() {
		t.Fatal("A's route stayed after B's stream closed")
	}
	lte.send(c.portA(), opusPacket(113))
	if got, _, ok := c.pb.recv(200 * time.Millisecond); ok {
		t.Fatalf("B got %x after its stream closed", got)
	}
}

func TestKernelLeavesBufferedStreamsToTheRelay(t *testing.T) {
	path := withFastPath(t)
	c := newCall(t, anchorPorts(t, 48600), Options{Jitter: &jitter.Config{Mode: jitter.Fixed, Target: 20 * time.Millisecond}}, netip.AddrPort{})
	for seq := uint16(1); seq <= 20; seq++ {
		relayed(t, c.pa, c.pb, c.portA(), c.portB(), seq)
	}
	if c.a.FastRouted() || path.Counts().Forwarded != 0 {
		t.Fatal("a stream with a jitter buffer was given to the kernel")
	}
	if rtp, _ := c.a.Stats(); rtp.Packets != 20 {
		t.Fatalf("A's counters %+v", rtp)
	}
}
