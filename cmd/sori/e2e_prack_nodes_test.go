package main

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/calls"
)

// steer has phone's requests go to node n from now on, as its DNS
// would send them when the service's name resolves to n.
func steer(t *testing.T, phone *ua, n *sipNode) {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", n.sipAddr())
	if err != nil {
		t.Fatal(err)
	}
	lc := phone.sipConn.conn.(*looseConn)
	lc.mu.Lock()
	lc.node = to
	lc.mu.Unlock()
}

// prackVia has alice PRACK early, its answer ma's SDP, sent to node n:
// bob gets it with the anchor's SDP, not alice's own, on another port
// of the anchor than the 183's (toAnchorFromA). The PRACK bob got and
// where its SDP sends bob's media.
func prackVia(t *testing.T, n *sipNode, an *anchorProc, alice, bob *ua, early *sip.Response, ma *mediaSocket, toAnchorFromA netip.AddrPort) (*sip.Request, netip.AddrPort) {
	t.Helper()
	steer(t, alice, n)
	alice.send(prack(alice, 3, early, ma.sdp(1001)))
	pr := next(t, bob, sip.PRACK, "the PRACK")
	toAnchorFromB := mediaTarget(t, pr.Body())
	if !an.hasPort(toAnchorFromB) || toAnchorFromB == toAnchorFromA || int(toAnchorFromB.Port()) == ma.port() {
		t.Fatalf("bob's PRACK sends media to %s (alice's side %s, alice's own port %d):\n%s", toAnchorFromB, toAnchorFromA, ma.port(), pr.Body())
	}
	return pr, toAnchorFromB
}

// prackAnswered has bob answer the PRACK 200, which alice gets.
func prackAnswered(t *testing.T, alice, bob *ua, pr *sip.Request) {
	t.Helper()
	bob.respond(pr, 200, "OK")
	if res := alice.read(); res.StatusCode != 200 || res.CSeq().MethodName != sip.PRACK {
		t.Fatalf("alice got %d for %s, want 200 for the PRACK", res.StatusCode, res.CSeq().MethodName)
	}
}

// answeredVia has bob send answer, his 200 to the INVITE, and alice, her
// requests going to node n, get it with the 183's SDP and acknowledge
// it; the 200.
func answeredVia(t *testing.T, n *sipNode, alice, bob *ua, answer string, early *sip.Response) *sip.Response {
	t.Helper()
	steer(t, alice, n)
	bob.send(answer)
	res := alice.final()
	if res.StatusCode != 200 || string(res.Body()) != string(early.Body()) {
		t.Fatalf("INVITE: %d, SDP:\n%s\nwant the 183's:\n%s", res.StatusCode, res.Body(), early.Body())
	}
	sendACK(t, alice, bob, 2, res)
	return res
}

const service = "sip.sori.test"

// serviceNodes starts nodes a (127.0.0.3) and b (127.0.0.2) of one
// service on one Redis, sip.record_route its name, both anchoring on one
// sori-anchor, each writing its records in its own file.
func serviceNodes(t *testing.T) (a, b *sipNode, an *anchorProc) {
	t.Helper()
	return serviceNodesOn(t, redistest.Start(t))
}

// serviceNodesOn is serviceNodes on the Redis rs.
func serviceNodesOn(t *testing.T, rs *redistest.Server) (a, b *sipNode, an *anchorProc) {
	t.Helper()
	an = startAnchor(t)
	dir := t.TempDir()
	ips := []string{"127.0.0.3", "127.0.0.2"}
	ports := []int{freeSIPPort(t), freeSIPPort(t)}
	addrs := nodeAddrs("tcp", ips, ports)
	spec := func(i int, id string) nodeSpec {
		return nodeSpec{id: id, ip: ips[i], port: ports[i], nodes: addrs, store: rs.URL(),
			sip:      "  record_route: " + service + "\n  timer_j: 500ms\n  timer_c: 30s\n",
			sections: fmt.Sprintf("media:\n  anchors: [%q]\n", an.ng), cdr: filepath.Join(dir, "cdr-"+id+".jsonl")}
	}
	return spec(0, "a").start(t), spec(1, "b").start(t), an
}

// Two nodes of one service on one Redis, sip.record_route the service's
// name, on 127.0.0.3 (a) and 127.0.0.2 (b). Alice calls bob through a
// with no SDP; bob's reliable 183 brings the offer, which a anchors.
// Alice's PRACK with the answer reaches b (the service's name resolved to
// b): b does not hold the ringing call (it is not saved), so it sends the
// PRACK on to a, which the Record-Route names; a gives the answer to the
// anchor and bob gets the anchor's SDP, never alice's own. Early media
// flows both ways through the anchor; the call is answered, acknowledged
// and hung up through a, one record, the anchor empty, b never loading
// the call. A second call rings the same way, a is killed (SIGKILL) and
// its heartbeat expires: alice's PRACK reaching b is answered 481, not
// relayed with its SDP past the anchor.
func TestPrackOnAnotherNode(t *testing.T) {
	t.Parallel()
	a, b, an := serviceNodes(t)
	ips := []string{a.ip, b.ip}
	alice, bob := newLooseUA(t, a.sipAddr(), "alice"), newLooseUA(t, a.sipAddr(), "bob")
	if res := bob.registerAuth("bob", "bob-secret", "prack-nodes-reg@test", 1, "Contact: "+contactOf(bob)); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	ma, mb := newMediaSocket(t), newMediaSocket(t)

	// ring has alice call bob through a, bob send a reliable 183 offer
	// (To tag tag): the INVITE bob got, the 183 alice got.
	ring := func(tag string) (*sip.Request, *sip.Response) {
		t.Helper()
		steer(t, alice, a)
		alice.authenticated("INVITE", "sip:bob@sori.test", "Supported: 100rel")
		inv := next(t, bob, sip.INVITE, "the INVITE")
		bob.send(reliable183(inv, tag, contactOf(bob), "1", mb.sdp(2002)))
		early := provisional(t, alice, 183)
		if to := mediaTarget(t, early.Body()); !an.hasPort(to) {
			t.Fatalf("alice's 183 sends media to %s, not to the anchor", to)
		}
		rr := early.RecordRoute()
		if rr == nil || rr.Address.Host != service || !strings.HasSuffix(rr.Address.UriParams.GetOr("sn", ""), ".a") {
			t.Fatalf("the 183's Record-Route %v: want the service's name naming node a", rr)
		}
		return inv, early
	}

	inv, early := ring("bob-prack-1")
	toAnchorFromA := mediaTarget(t, early.Body())
	pr, toAnchorFromB := prackVia(t, b, an, alice, bob, early, ma, toAnchorFromA)
	if strings.Contains(string(pr.Body()), fmt.Sprintf(" %d ", ma.port())) {
		t.Fatalf("bob's PRACK carries alice's own SDP:\n%s", pr.Body())
	}
	// It went b, then a: a's Via on top, b's under it.
	vias := pr.GetHeaders("Via")
	if len(vias) != 3 || !strings.Contains(vias[0].Value(), ips[0]) || !strings.Contains(vias[1].Value(), ips[1]) {
		t.Fatalf("the PRACK's Vias %q: want a's, b's, alice's", vias)
	}
	prackAnswered(t, alice, bob, pr)
	streamBothWays(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce3, 0xb0b3, 20)

	res := answeredVia(t, a, alice, bob, answer200(inv, "bob-prack-1", contactOf(bob), mb.sdp(2002)), early)
	streamBothWays(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce4, 0xb0b4, 10)
	hangUp(t, alice, bob, 4, res)
	waitAnchorEmpty(t, an)
	checkCallRecord(t, callRecords(t, a.cdr, res.CallID().Value(), 1)[0], 200, calls.Answered, "caller")
	if v, _ := metricSample(t, b.node, "sori_calls_loaded_total"); v != 0 {
		t.Errorf("b loaded %v calls: it only relays the PRACK", v)
	}

	// The node holding the ringing call is gone.
	_, early = ring("bob-prack-2")
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
	waitNodeDown(t, b, "a", 10*time.Second)
	steer(t, alice, b)
	alice.send(prack(alice, 3, early, ma.sdp(1001)))
	if res := alice.read(); res.StatusCode != 481 || res.CSeq().MethodName != sip.PRACK {
		t.Fatalf("alice got %d %s for %s, want 481 for the PRACK", res.StatusCode, res.Reason, res.CSeq().MethodName)
	}
}

// The same two nodes; bob's phone is registered over TCP on node b
// (behind NAT: only its connection reaches it), alice's over UDP on a.
// Alice's INVITE without SDP goes in at a, which anchors the call and
// reaches bob through b; bob's reliable 183 offer comes back the same
// way. Alice's PRACK, sent to the service's name, reaches b, which holds
// bob's flow: its route names a as the call's holder, then b's flow, so
// b sends it on to a with both, a gives the answer to the anchor and
// sends it back to b, which sends it down bob's connection. Bob gets the
// anchor's SDP; RTP flows both ways; the call is answered, acknowledged
// and hung up, one record, on a.
func TestPrackOnTheCalleesNode(t *testing.T) {
	t.Parallel()
	a, b, an := serviceNodes(t)
	const mobileContact = "sip:bob@192.168.1.20:5060;transport=tcp"
	bob := &ua{sipConn: dialFrom(t, "tcp", "127.0.0.11", b.sipAddr()), user: "bob", password: "bob-secret"}
	if res := bob.registerAuth("bob", "bob-secret", "prack-callee-node-reg@test", 1, "Contact: <"+mobileContact+">", "Expires: 600"); res.StatusCode != 200 {
		t.Fatalf("bob's REGISTER on node b: %d", res.StatusCode)
	}
	alice := newLooseUA(t, a.sipAddr(), "alice")
	ma, mb := newMediaSocket(t), newMediaSocket(t)

	alice.authenticated("INVITE", "sip:bob@sori.test", "Supported: 100rel")
	inv := next(t, bob, sip.INVITE, "the INVITE")
	bob.send(reliable183(inv, "bob-prack-tcp", "<"+mobileContact+">", "1", mb.sdp(2002)))
	early := provisional(t, alice, 183)
	toAnchorFromA := mediaTarget(t, early.Body())
	if !an.hasPort(toAnchorFromA) {
		t.Fatalf("alice's 183 sends media to %s, not to the anchor", toAnchorFromA)
	}
	pr, toAnchorFromB := prackVia(t, b, an, alice, bob, early, ma, toAnchorFromA)
	// b, a, b again: b's Via on top, then a's, then b's first.
	if vias := pr.GetHeaders("Via"); len(vias) != 4 || !strings.Contains(vias[0].Value(), b.ip) || !strings.Contains(vias[1].Value(), a.ip) || !strings.Contains(vias[2].Value(), b.ip) {
		t.Fatalf("the PRACK's Vias %q: want b's, a's, b's, alice's", vias)
	}
	prackAnswered(t, alice, bob, pr)
	streamBothWays(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce5, 0xb0b5, 20)

	res := answeredVia(t, a, alice, bob, answer200(inv, "bob-prack-tcp", "<"+mobileContact+">", mb.sdp(2002)), early)
	hangUp(t, alice, bob, 4, res)
	waitAnchorEmpty(t, an)
	checkCallRecord(t, callRecords(t, a.cdr, res.CallID().Value(), 1)[0], 200, calls.Answered, "caller")
	if v, _ := metricSample(t, b.node, "sori_calls_loaded_total"); v != 0 {
		t.Errorf("b loaded %v calls: it only relays", v)
	}
}
