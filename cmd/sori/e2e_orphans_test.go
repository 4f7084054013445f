package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/nodes"
)

// looseConn is a phone's UDP socket that sends its requests to its node
// but takes messages from anywhere, and answers each request where it
// came from: a phone whose calls another node adopted gets that node's
// BYEs, and its 200s go back there.
type looseConn struct {
	*net.UDPConn
	node *net.UDPAddr
	mu   sync.Mutex
	from net.Addr // of the last message read
}

func (c *looseConn) Read(p []byte) (int, error) {
	n, from, err := c.ReadFrom(p)
	if from != nil {
		c.mu.Lock()
		c.from = from
		c.mu.Unlock()
	}
	return n, err
}

func (c *looseConn) Write(p []byte) (int, error) {
	to := c.RemoteAddr()
	if !bytes.HasPrefix(p, []byte("SIP/2.0 ")) {
		to = c.node // a request: to the phone's node
	}
	return c.WriteTo(p, to)
}

// RemoteAddr is where the last message came from (the phone's node before any).
func (c *looseConn) RemoteAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.from != nil {
		return c.from
	}
	return c.node
}

// newLooseUA is newUA over a looseConn to node addr.
func newLooseUA(t *testing.T, addr, user string) *ua {
	t.Helper()
	node, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	c := &looseConn{UDPConn: uc, node: node}
	return &ua{sipConn: &sipConn{t: t, transport: "udp", conn: c, reader: bufio.NewReader(c), local: uc.LocalAddr().String()},
		user: user, password: user + "-secret"}
}

// twoNodes starts nodes a (on 127.0.0.3) and b (127.0.0.2), one service on
// the Redis at storeURL, each anchoring on ng and writing its records in
// its own file under dir.
func twoNodes(t *testing.T, storeURL, ng, dir string) (a, b *sipNode) {
	t.Helper()
	type pair struct{ a, b *sipNode }
	p := withFreshPorts(t, func() (pair, error) {
		ids, ips := []string{"a", "b"}, []string{"127.0.0.3", "127.0.0.2"}
		ports := []int{freeSIPPort(t), freeSIPPort(t)}
		peers := fmt.Sprintf(`["tcp:%s:%d", "tcp:%s:%d"]`, ips[0], ports[0], ips[1], ports[1])
		var started []*sipNode
		for i, id := range ids {
			httpAddr := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
			cdr := filepath.Join(dir, "cdr-"+id+".jsonl")
			cfg := fmt.Sprintf(`sip:
  domain: sori.test
  listen: ["udp:%[1]s:%[2]d", "tcp:%[1]s:%[2]d"]
  auth_secret: e2e-shared-secret-0123456789
  node_id: %[3]s
  node_address: tcp:%[1]s:%[2]d
  nodes: %[4]s
  timer_j: 500ms
  timer_c: 30s
registrar:
  store: %[5]q
  store_timeout: 300ms
media:
  anchors: [%[6]q]
cdr:
  file: %[7]s
http:
  listen: %[8]s
log:
  level: debug
users:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
`, ips[i], ports[i], id, peers, storeURL, ng, cdr, httpAddr)
			n, err := launchNode(t, cfg, ports[i], httpAddr)
			if err != nil {
				for _, s := range started {
					s.stop()
				}
				return pair{}, err
			}
			started = append(started, &sipNode{node: n, id: id, ip: ips[i], cdr: cdr})
		}
		return pair{started[0], started[1]}, nil
	})
	return p.a, p.b
}

// Two nodes on one Redis. 10 calls are answered through node b, each
// anchored on sori-anchor, whose media never flows; then b is killed
// (SIGKILL) and does not come back. Once b's heartbeat has been gone for
// nodes.GoneAfter, node a adopts b's calls: into its own index, held, and
// reclaimed on the anchor, which then reports their media timeouts to a.
// b started again after that adopts none of them. Every call ends as a
// media timeout on a: BYE to both phones, one record each (none by b),
// the anchor at 0 calls, nothing left saved or indexed in Redis.
func TestDialogsOfANodeGoneForGoodAdopted(t *testing.T) {
	t.Parallel()
	const n = 10
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	// Silent calls end 25 s after their answer: after a adopted them
	// (GoneAfter, 15 s, from b's kill), so the anchor's report goes to a.
	an := startAnchor(t, "-media-timeout", "25s")
	a, b := twoNodes(t, rs.URL(), an.ng, t.TempDir())
	ctx := context.Background()

	e := &restartedCalls{rdb: rdb, an: an, endingCall: &endingCall{n: b.node, cdr: a.cdr, ma: newMediaSocket(t), mb: newMediaSocket(t)}}
	e.alice, e.bob = newLooseUA(t, b.sipAddr(), "alice"), newLooseUA(t, b.sipAddr(), "bob")
	if res := e.bob.registerAuth("bob", "bob-secret", "orphans-reg@test", 1, e.contact()); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	for range n {
		inv, res := e.answer(t)
		e.cs = append(e.cs, answeredCall{inv, res})
	}
	if got := an.metric(t, "sori_anchor_calls"); got != fmt.Sprint(n) {
		t.Fatalf("sori-anchor holds %s calls, want %d", got, n)
	}
	indexed := func(node string) int64 {
		t.Helper()
		c, err := rdb.ZCard(ctx, "sori:dlgs:{"+node+"}").Result()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if states, _ := dialogKeys(t, rdb); states == n && indexed("b") == n {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("%d calls saved in Redis (%d in b's index), want %d", states, indexed("b"), n)
		}
	}

	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.exited
	killed := time.Now()
	for within := nodes.GoneAfter + 3*nodes.BeatTTL; ; time.Sleep(50 * time.Millisecond) {
		if v, _ := metricSample(t, a.node, "sori_calls_adopted_total"); v == n {
			break
		} else if time.Since(killed) > within {
			t.Fatalf("node a adopted %v calls within %v of b's kill, want %d", v, within, n)
		}
	}
	// Not before b's heartbeat had been gone for GoneAfter (its last beat
	// was at most BeatEvery before the kill).
	took := time.Since(killed)
	if took < nodes.GoneAfter-nodes.BeatEvery-500*time.Millisecond {
		t.Fatalf("b's calls adopted %v after its kill, before GoneAfter (%v)", took, nodes.GoneAfter)
	}
	t.Logf("b's calls adopted by a %v after b's kill", took.Round(100*time.Millisecond))
	if !strings.Contains(a.log(), "calls of a node gone for good adopted") {
		t.Errorf("a does not log the adoption:\n%s", tail(a.log(), 4000))
	}
	if ia, ib := indexed("a"), indexed("b"); ia != n || ib != 0 {
		t.Fatalf("indexes after the adoption: a %d, b %d; want %d and 0", ia, ib, n)
	}
	if v, _ := metricSample(t, a.node, `sori_calls_active{state="answered"}`); v != n {
		t.Fatalf("a holds %v answered calls after the adoption, want %d", v, n)
	}

	// b comes back now: its calls are a's, it adopts none.
	cfg, err := os.ReadFile(b.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	b2 := runNode(t, string(cfg), b.port, b.http)
	if v, _ := metricSample(t, b2, "sori_calls_adopted_total"); v != 0 {
		t.Fatalf("b, back, adopted %v calls, want 0", v)
	}
	if v, _ := metricSample(t, b2, "sori_calls_held"); v != 0 {
		t.Fatalf("b, back, holds %v calls, want 0", v)
	}

	e.n = a.node
	e.endOnTheirOwn(t, n, 40*time.Second, calls.MediaTimeout, "media-timeout")
	waitRecords(t, b.cdr, 0, "node b's (its calls ended on a)", func(calls.Record) bool { return true })
	if strings.Contains(a.log(), "call ended on another node") {
		t.Errorf("an adopted call was ended twice:\n%s", tail(a.log(), 4000))
	}
	if strings.Contains(a.log(), "adopted call gone from its anchor") {
		// Slow machine: the anchor timed the calls out before a reclaimed them.
		t.Logf("some calls timed out on the anchor before a reclaimed them")
	}
}
