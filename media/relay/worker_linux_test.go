package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/sori-voice/sori/media/jitter"
)

func TestPlayHeapPopsInDueOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		dues []int64
	}{
		{"empty", nil},
		{"one", []int64{5}},
		{"ascending", []int64{1, 2, 3, 4, 5, 6, 7}},
		{"descending", []int64{9, 8, 7, 6, 5, 4, 3, 2, 1}},
		{"repeats", []int64{3, 1, 3, 2, 1, 3}},
		{"mixed", []int64{50, 10, 40, 20, 30, 60, 0, 70, 15}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h playHeap
			for _, d := range tc.dues {
				h.push(playEntry{due: d})
			}
			var got []int64
			for len(h) > 0 {
				got = append(got, h.pop().due)
			}
			want := slices.Clone(tc.dues)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("popped %v, want %v", got, want)
			}
		})
	}
}

func TestRegistryReusesIndexesWithANewGeneration(t *testing.T) {
	var r registry
	a, b := &socket{}, &socket{}
	r.add(a)
	idx, gen := a.idx, a.gen
	if r.get(idx) != a {
		t.Fatal("added socket not found")
	}
	r.remove(idx)
	if r.get(idx) != nil {
		t.Fatal("removed socket still found")
	}
	r.add(b)
	if b.idx != idx || b.gen == gen || r.get(idx) != b {
		t.Fatalf("reuse: idx %d gen %d, was idx %d gen %d", b.idx, b.gen, idx, gen)
	}
	for i := 0; i < 2*chunkSize; i++ { // a second chunk
		r.add(&socket{})
	}
	if r.get(uint32(2*chunkSize-1)) == nil || r.get(maxChunks*chunkSize) != nil {
		t.Fatal("chunk lookup")
	}
}

// Release alone (no Stop) ends a stream: Wait returns, and the ports are
// free, the descriptors the worker held closed.
func TestReleaseClosesTheWorkersSockets(t *testing.T) {
	alloc := anchorPorts(t, 43400)
	p, err := alloc.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStream(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	alloc.Release(p)
	done := make(chan struct{})
	go func() { s.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Wait did not return after Release")
	}
	// Parked: still bound by the allocator, and by nothing else once it
	// lets them go (a receive left in a ring would hold them).
	if alloc.Parked() != 1 {
		t.Fatalf("%d pairs parked, want the released one", alloc.Parked())
	}
	alloc.Close()
	for _, port := range []int{p.Port, p.Port + 1} {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(port))))
		if err != nil {
			t.Fatalf("port %d still bound: %v", port, err)
		}
		c.Close()
	}
	s.SetEndpoint(netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.1:9"))
	if err := s.SendRTCP([]byte{0x80, 201, 0, 1, 0, 0, 0, 1}); err == nil {
		t.Fatal("sent from a closed socket")
	}
	// A stream released before it started is closed too.
	p2, _ := alloc.Allocate()
	s2, err := NewStream(p2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	alloc.Release(p2)
	s2.Start() // too late: nothing to relay
	s2.Wait()
}

// Many calls at once over the workers, without and with jitter buffers of
// different delays on one scheduler: every packet arrives once, in order,
// each held at least its buffer's delay and not much more.
func TestManyCallsShareTheWorkers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delays []time.Duration // one call each; 0: no buffer
	}{
		{"off", []time.Duration{0, 0, 0, 0, 0, 0, 0, 0}},
		{"fixed buffers", []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 60 * time.Millisecond, 20 * time.Millisecond}},
		{"mixed", []time.Duration{0, 30 * time.Millisecond, 0, 50 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alloc := anchorPorts(t, 43600)
			const packets = 15
			var wg sync.WaitGroup
			errs := make(chan string, len(tc.delays))
			for i, d := range tc.delays {
				o := Options{OpusPT: 111}
				if d > 0 {
					o.Jitter = &jitter.Config{Mode: jitter.Fixed, Target: d}
				}
				c := newCall(t, alloc, o, netip.AddrPort{})
				t.Cleanup(func() { c.a.Stop(); c.b.Stop() })
				wg.Add(1)
				go func(i int, d time.Duration, c *call) {
					defer wg.Done()
					start := time.Now()
					go func() {
						for k := 0; k < packets; k++ {
							time.Sleep(time.Until(start.Add(time.Duration(k) * 20 * time.Millisecond)))
							p := opusPacket(uint16(k))
							binary.BigEndian.PutUint32(p[8:], uint32(i))
							// Not send: it fails the test from this goroutine,
							// which may outlive it (a packet missing).
							_, _ = c.pa.conn.WriteToUDPAddrPort(p, c.portA())
						}
					}()
					for k := 0; k < packets; k++ {
						b, _, ok := c.pb.recv(2 * time.Second)
						if !ok {
							errs <- "call " + tc.name + ": packet missing"
							return
						}
						got := time.Now()
						seq := int(binary.BigEndian.Uint16(b[2:]))
						if seq != k {
							errs <- "out of order"
							return
						}
						// Played by timestamp from the earliest packet's
						// arrival: at least the delay after the packet's time
						// to be sent, less what the worker may send early
						// (playCoalesce).
						if held := got.Sub(start.Add(time.Duration(k) * 20 * time.Millisecond)); d > 0 && (held < d-playCoalesce-time.Millisecond || held > d+25*time.Millisecond) {
							errs <- "held " + held.String() + ", buffer " + d.String()
							return
						}
					}
					rtp, _ := c.a.Stats()
					if rtp.Packets != packets || rtp.Errors != 0 {
						errs <- "counters"
					}
				}(i, d, c)
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}
		})
	}
}

func TestHeldBufsReuseBySize(t *testing.T) {
	var h heldBufs
	a := h.get(92)
	if len(a) != smallBuf || cap(a) != smallBuf {
		t.Fatalf("small buffer len %d cap %d", len(a), cap(a))
	}
	b := h.get(92)
	if uintptr(unsafe.Pointer(&b[0]))-uintptr(unsafe.Pointer(&a[0])) != smallBuf {
		t.Fatalf("small buffers not adjacent slots of one slab")
	}
	big := h.get(1200)
	if cap(big) != bufSize {
		t.Fatalf("big buffer cap %d", cap(big))
	}
	h.put(a[:92])
	h.put(big[:1200])
	h.put(make([]byte, 10)) // not ours: dropped
	if c := h.get(10); &c[0] != &a[0] {
		t.Fatal("the last small buffer put back is not the next one out")
	}
	if c := h.get(1500); &c[0] != &big[0] {
		t.Fatal("the big buffer put back is not reused")
	}
	if n := testing.AllocsPerRun(100, func() { h.put(h.get(92)) }); n != 0 {
		t.Fatalf("%v allocations a get and put", n)
	}
}

// TestWorkersWaitRawWithASpareP runs the relay's tests again in a child
// process with GOMAXPROCS one more than the workers (as sori-anchor runs),
// where the workers wait in a raw epoll_pwait2 (maxWait).
func TestWorkersWaitRawWithASpareP(t *testing.T) {
	if os.Getenv("RELAY_RAW_CHILD") != "" {
		ws, err := workers()
		if err != nil {
			t.Fatal(err)
		}
		if !ws[0].raw {
			t.Fatalf("GOMAXPROCS %d, %d workers: not waiting raw", runtime.GOMAXPROCS(0), len(ws))
		}
		return
	}
	if testing.Short() {
		t.Skip("runs the relay tests again")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "TestWorkersWaitRaw|TestManyCallsShareTheWorkers|TestJitterBufferReordersAndPaces|TestRelayBothWays|TestReleaseClosesTheWorkersSockets", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "RELAY_RAW_CHILD=1", "GOMAXPROCS="+strconv.Itoa(DefaultWorkers()+1))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestWorkersWaitRawWithASpareP") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
