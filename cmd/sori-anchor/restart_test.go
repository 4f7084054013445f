package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/rtptest"
	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

// anchorProcess is a sori-anchor run by a test.
type anchorProcess struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startAnchorProcess(t *testing.T, bin string, logs *syncBuffer, args ...string) *anchorProcess {
	t.Helper()
	p := &anchorProcess{cmd: exec.Command(bin, args...), logs: logs, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = logs, logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			t.Error("sori-anchor did not stop within 10 s of SIGTERM")
		}
	})
	return p
}

// freeRange is a range of n UDP ports on 127.0.0.1 that none of the
// machine's other tests holds now.
func freeRange(t *testing.T, from, n int) int {
	t.Helper()
	for lo := from; lo+n < 60000; lo += n {
		var held []net.PacketConn
		ok := true
		for p := lo; p < lo+n && ok; p++ {
			c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			held = append(held, c)
		}
		for _, c := range held {
			c.Close()
		}
		if ok {
			return lo
		}
	}
	t.Fatal("no free port range")
	return 0
}

func freeUDP(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// heard is where a phone's latest packet came from; zero before the first.
func heard(p *rtptest.Stream) netip.AddrPort {
	a, _ := p.Last()
	return a.From
}

// phoneSDP is a phone's Opus offer or answer for its stream.
func phoneSDP(p *rtptest.Stream) string {
	return fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n", p.Port())
}

func ngDo(t *testing.T, c *ng.Client, server netip.AddrPort, req ng.Dict) ng.Dict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Do(ctx, server, req)
	if err != nil {
		t.Fatalf("ng %s: %v", req.Str("command"), err)
	}
	if res.Str("result") != "ok" && res.Str("result") != "pong" {
		t.Fatalf("ng %s: %v", req.Str("command"), res)
	}
	return res
}

func anchorPort(t *testing.T, body string) netip.AddrPort {
	t.Helper()
	s, err := sdp.Parse([]byte(body))
	if err != nil || len(s.Media) != 1 {
		t.Fatalf("SDP %v:\n%s", err, body)
	}
	return netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port))
}

// waitUntil polls cond (a state another process changes) until it holds.
func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
	}
}

func rtpPackets(q ng.Dict) int64 {
	n, _ := q.Dict("totals").Dict("RTP").Int("packets")
	return n
}

// buildAnchor is this sori-anchor built for the test, with a Redis of
// its own and a client of it.
func buildAnchor(t *testing.T) (bin, redisURL string, rdb *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	rdb = redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	bin = filepath.Join(t.TempDir(), "sori-anchor")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin, srv.URL(), rdb
}

// redisAnchor is a sori-anchor a test runs with -redis, an ng client of
// it, and its calls as Redis keeps them.
type redisAnchor struct {
	t      *testing.T
	bin    string
	args   []string
	logs   *syncBuffer
	proc   *anchorProcess
	ng     netip.AddrPort
	client *ng.Client
	store  *anchorstate.Store
}

// startRedisAnchor runs bin on n free ports from portsFrom on, keeping its
// calls in redisURL every second as redisID ("": its default, its ng
// address); once it answers a ping. Its log is logged if the test fails.
func startRedisAnchor(t *testing.T, bin, redisURL string, rdb *redis.Client, portsFrom, n int, redisID string) *redisAnchor {
	t.Helper()
	a := &redisAnchor{t: t, bin: bin, logs: &syncBuffer{}, ng: freeUDP(t)}
	lo := freeRange(t, portsFrom, n)
	a.args = []string{"-ng", a.ng.String(), "-rtp-ports", fmt.Sprintf("%d-%d", lo, lo+n-1), "-listen", "127.0.0.1", "-http", "",
		"-jitter-buffer", "off", "-media-timeout", "30s", "-redis", redisURL, "-redis-every", "1s"}
	storeID := a.ng.String()
	if redisID != "" {
		a.args = append(a.args, "-redis-id", redisID)
		storeID = redisID
	}
	a.proc = startAnchorProcess(t, bin, a.logs, a.args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sori-anchor log:\n%s", a.logs.String())
		}
	})
	client, err := ng.NewClient("127.0.0.1:0", 50*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	a.client = client
	ngDo(t, client, a.ng, ng.Dict{"command": "ping"})
	if a.store, err = anchorstate.NewStore(rdb, anchorstate.Options{ID: storeID, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	return a
}

// stop sends the anchor sig and waits for it to exit.
func (a *redisAnchor) stop(sig syscall.Signal) {
	a.t.Helper()
	if err := a.proc.cmd.Process.Signal(sig); err != nil {
		a.t.Fatal(err)
	}
	<-a.proc.done
}

// start runs the stopped anchor again with the same flags, until it
// answers a ping.
func (a *redisAnchor) start() {
	a.t.Helper()
	a.proc = startAnchorProcess(a.t, a.bin, a.logs, a.args...)
	ngDo(a.t, a.client, a.ng, ng.Dict{"command": "ping"})
}

// restart stops the anchor with sig and starts it again.
func (a *redisAnchor) restart(sig syscall.Signal) {
	a.t.Helper()
	a.stop(sig)
	a.start()
}

// keptWebRTC is, of the calls Redis has, each leg's first WebRTC media.
func (a *redisAnchor) keptWebRTC() ([]*anchorstate.WebRTC, error) {
	got, _, err := a.store.Load(context.Background())
	var ws []*anchorstate.WebRTC
	for _, c := range got {
		for _, l := range c.Legs {
			if w := l.Medias[0].WebRTC; w != nil {
				ws = append(ws, w)
			}
		}
	}
	return ws, err
}

// newPlainPhone is a plain RTP phone on 127.0.0.1: its socket, its Opus
// SDP, and the payloads of the Opus it hears.
func newPlainPhone(t *testing.T) (*net.UDPConn, string, <-chan []byte) {
	t.Helper()
	phone, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { phone.Close() })
	sdp := fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n",
		phone.LocalAddr().(*net.UDPAddr).Port)
	return phone, sdp, webrtctest.PlainRTP(phone)
}

// TestCallsSurviveAnAnchorKill is issue 18's anchor restart: 20 answered
// calls with RTP both ways, the anchor SIGKILLed and started again with
// the same flags; every call's media goes on through the same ports, its
// counters go on from where Redis had them, and a deleted call leaves
// nothing in Redis.
func TestCallsSurviveAnAnchorKill(t *testing.T) { restartUnderCalls(t, syscall.SIGKILL, "SIGKILL") }

// TestCallsSurviveAnAnchorStop is the same with SIGTERM: the anchor lets
// go of its ports but keeps its calls in Redis for the next start.
func TestCallsSurviveAnAnchorStop(t *testing.T) { restartUnderCalls(t, syscall.SIGTERM, "SIGTERM") }

func restartUnderCalls(t *testing.T, sig syscall.Signal, name string) {
	const calls = 20
	bin, redisURL, rdb := buildAnchor(t)
	anchor := startRedisAnchor(t, bin, redisURL, rdb, 50000, 200, "")
	client, ngAddr, store, logs := anchor.client, anchor.ng, anchor.store, anchor.logs

	// 20 calls, each answered, with RTP both ways every 20 ms; and one
	// more whose port the test takes while the anchor is down.
	type testCall struct {
		id   string
		a, b *rtptest.Stream
	}
	var cs []testCall
	for i := range calls + 1 {
		c := testCall{id: fmt.Sprintf("restart-%d@127.0.0.1", i), a: rtptest.New(t, uint32(0xa000+i)), b: rtptest.New(t, uint32(0xb000+i))}
		offer := ngDo(t, client, ngAddr, ng.Dict{"command": "offer", "call-id": c.id, "from-tag": "a", "sdp": phoneSDP(c.a)})
		answer := ngDo(t, client, ngAddr, ng.Dict{"command": "answer", "call-id": c.id, "from-tag": "a", "to-tag": "b", "sdp": phoneSDP(c.b)})
		c.b.SetTarget(anchorPort(t, offer.Str("sdp")))
		c.a.SetTarget(anchorPort(t, answer.Str("sdp")))
		cs = append(cs, c)
	}
	blocked := cs[calls]
	cs = cs[:calls]
	stop := rtptest.Pace(func() {
		for _, c := range cs {
			_ = c.a.Send()
			_ = c.b.Send()
		}
	})
	defer stop()

	// Media flows, and Redis has every call with its latched addresses
	// and counters written by a periodic save.
	kept := map[string]anchorstate.Call{}
	waitUntil(t, "every call kept with its media", 10*time.Second, func() bool {
		got, _, err := store.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range got {
			if len(k.Legs) == 2 && k.Legs[0].Medias[0].Stream.Latched.IsValid() && k.Legs[1].Medias[0].Stream.Latched.IsValid() &&
				k.Legs[0].Medias[0].Stream.RTP.Packets > 0 && k.Legs[1].Medias[0].Stream.RTP.Packets > 0 {
				kept[k.ID] = k
			}
		}
		for _, c := range cs {
			if heard(c.a) == (netip.AddrPort{}) || heard(c.b) == (netip.AddrPort{}) {
				return false
			}
		}
		return len(kept) == calls
	})
	srcA, srcB := map[string]netip.AddrPort{}, map[string]netip.AddrPort{}
	for _, c := range cs {
		srcA[c.id], srcB[c.id] = heard(c.a), heard(c.b)
		if srcA[c.id] != c.a.Target() || srcB[c.id] != c.b.Target() {
			t.Fatalf("%s: phones hear the anchor from %s and %s, want %s and %s", c.id, srcA[c.id], srcB[c.id], c.a.Target(), c.b.Target())
		}
	}
	savedPackets := map[string]uint64{}
	for id, k := range kept {
		savedPackets[id] = k.Legs[0].Medias[0].Stream.RTP.Packets + k.Legs[1].Medias[0].Stream.RTP.Packets
	}

	// SIGKILL: nothing is written on the way out; SIGTERM: the last
	// snapshots are.
	after := map[*rtptest.Stream]uint16{} // by phone, the first packet its peer sends from now on
	for _, c := range cs {
		after[c.a], after[c.b] = c.b.Sent()+1, c.a.Sent()+1
	}
	killed := time.Now()
	anchor.stop(sig)
	var hold *net.UDPConn
	waitUntil(t, "the killed anchor's port free", 10*time.Second, func() bool {
		var err error
		hold, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(blocked.b.Target()))
		return err == nil
	})
	t.Logf("the stopped anchor's ports free %s after the %s", time.Since(killed), name)
	defer hold.Close()
	anchor.start()

	var gap time.Duration
	for _, c := range cs {
		for _, p := range []*rtptest.Stream{c.a, c.b} {
			first, ok := p.Await(10*time.Second, func(x rtptest.Arrival) bool { return x.Seq >= after[p] })
			if !ok {
				t.Fatalf("%s: no RTP relayed after the restart (%d packets before)", c.id, len(p.Arrivals()))
			}
			gap = max(gap, first.At.Sub(killed))
		}
		if a, b := heard(c.a), heard(c.b); a != srcA[c.id] || b != srcB[c.id] {
			t.Fatalf("%s: after the restart the phones hear %s and %s, want the same ports %s and %s", c.id, a, b, srcA[c.id], srcB[c.id])
		}
		q := ngDo(t, client, ngAddr, ng.Dict{"command": "query", "call-id": c.id})
		if n := rtpPackets(q); n <= int64(savedPackets[c.id]) || savedPackets[c.id] == 0 {
			t.Fatalf("%s: %d RTP packets counted after the restart, %d kept before it: the counters did not go on", c.id, n, savedPackets[c.id])
		}
	}
	t.Logf("%d calls: the gap from %s to the first packet relayed by the restarted anchor was %s (max over calls and directions)", calls, name, gap.Round(time.Millisecond))

	// The call whose port was taken is dropped, from the anchor and Redis.
	if res, err := client.Do(context.Background(), ngAddr, ng.Dict{"command": "query", "call-id": blocked.id}); err != nil || res.Str("result") != "error" {
		t.Fatalf("the blocked call after the restart: %v %v", res, err)
	}
	if n := rdb.Exists(context.Background(), store.Key(blocked.id)).Val(); n != 0 || !strings.Contains(logs.String(), "kept call not restored, dropped") {
		t.Fatalf("the blocked call: %d keys left in Redis, or no log of it", n)
	}

	stop()
	for _, c := range cs {
		del := ngDo(t, client, ngAddr, ng.Dict{"command": "delete", "call-id": c.id, "from-tag": "a"})
		if rtpPackets(del) <= int64(savedPackets[c.id]) {
			t.Fatalf("%s: delete reports %v", c.id, del.Dict("totals"))
		}
	}
	// A delete's reply comes once Redis has it: nothing of the calls is
	// left, only the anchor's certificate for new WebRTC legs, the same
	// across the restart (both starts logged its fingerprint).
	keys, err := rdb.Keys(context.Background(), "sori:anchor:*").Result()
	if err != nil || len(keys) != 1 || !strings.HasSuffix(keys[0], ":cert") {
		t.Fatalf("keys left in Redis after every delete: %v %v", keys, err)
	}
	if started := loggedFingerprints(logs.String()); len(started) != 2 || started[0] != started[1] {
		t.Fatalf("the starts before and after the %s logged fingerprints %q", name, started)
	}
}
