package main

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/calls"
)

// Two nodes of one service on Redis, both with sip.record_route set to
// the service's name. Two calls are answered through node b, each
// anchored, then b is killed (SIGKILL) and stays down. The phones' route
// sets name the service, not b, so their BYEs go wherever the name
// resolves: here straight to node a, as a phone's DNS (SRV) failover
// would send them. a takes the route as its own, loads each call from
// Redis, and relays the caller's BYE of one and the callee's BYE of the
// other to the other phone; both are answered 200, each call has one
// record, written by a, and the anchor holds no call.
func TestServiceNameInRecordRouteOutlivesTheNode(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	a, b, an := serviceNodesOn(t, rs)

	e := &restartedCalls{rdb: rdb, an: an, endingCall: &endingCall{n: b.node, cdr: a.cdr, ma: newMediaSocket(t), mb: newMediaSocket(t)}}
	e.alice, e.bob = newLooseUA(t, b.sipAddr(), "alice"), newLooseUA(t, b.sipAddr(), "bob")
	if res := e.bob.registerAuth("bob", "bob-secret", "service-rr-reg@test", 1, e.contact()); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	for range 2 {
		inv, res := e.answer(t)
		e.cs = append(e.cs, answeredCall{inv, res})
	}
	for _, rr := range append(e.cs[0].res.GetHeaders("Record-Route"), e.cs[0].inv.GetHeaders("Record-Route")...) {
		if u := rr.(*sip.RecordRouteHeader).Address; u.Host != service || u.Port != 0 {
			t.Fatalf("Record-Route %s: want the service's name %s, with no port (SRV)", rr.Value(), service)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if states, _ := dialogKeys(t, rdb); states == len(e.cs) {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("%d calls saved in Redis, want %d", states, len(e.cs))
		}
	}

	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.exited
	// From now on the phones' requests reach a (their DNS moved on).
	toA, err := net.ResolveUDPAddr("udp", a.sipAddr())
	if err != nil {
		t.Fatal(err)
	}
	for _, phone := range []*ua{e.alice, e.bob} {
		lc := phone.sipConn.conn.(*looseConn)
		lc.mu.Lock()
		lc.node, lc.from = toA, nil
		lc.mu.Unlock()
	}

	// The caller hangs up the first call.
	c := e.cs[0]
	callID := c.res.CallID().Value()
	e.alice.send(e.alice.inDialog("BYE", 3, c.res))
	bye := e.bob.readRequest()
	if bye.Method != sip.BYE || bye.CallID().Value() != callID {
		t.Fatalf("bob got %s of %s, want alice's BYE", bye.Method, bye.CallID().Value())
	}
	e.bob.respond(bye, 200, "OK")
	if r := e.alice.final(); r.StatusCode != 200 || r.CSeq().MethodName != sip.BYE || r.CallID().Value() != callID {
		t.Fatalf("alice's BYE: %d %s", r.StatusCode, r.CSeq().MethodName)
	}
	// The callee hangs up the second.
	c = e.cs[1]
	callID = c.res.CallID().Value()
	e.bob.send(fmt.Sprintf("BYE %s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-svc-bye-%s;rport\nMax-Forwards: 70\n%sFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: 1 BYE\nContent-Length: 0\n\n",
		c.inv.Contact().Address.String(), e.bob.local, callID, routeSet(c.inv), c.res.To().Value(), c.res.From().Value(), callID))
	hungUp(t, e.alice, callID)
	if r := e.bob.final(); r.StatusCode != 200 || r.CSeq().MethodName != sip.BYE || r.CallID().Value() != callID {
		t.Fatalf("bob's BYE: %d %s", r.StatusCode, r.CSeq().MethodName)
	}

	for i, c := range e.cs {
		checkCallRecord(t, callRecords(t, a.cdr, c.res.CallID().Value(), 1)[0], 200, calls.Answered, []string{"caller", "callee"}[i])
	}
	if v, _ := metricSample(t, a.node, "sori_calls_loaded_total"); v != float64(len(e.cs)) {
		t.Errorf("a loaded %v calls, want %d", v, len(e.cs))
	}
	for deadline := time.Now().Add(10 * time.Second); an.metric(t, "sori_anchor_calls") != "0"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sori-anchor still holds %s calls", an.metric(t, "sori_anchor_calls"))
		}
	}
	if states, ends := dialogKeys(t, rdb); states != 0 || ends != len(e.cs) {
		t.Errorf("Redis has %d saved calls and %d ended, want 0 and %d", states, ends, len(e.cs))
	}
	if strings.Contains(a.log(), "panic") {
		t.Errorf("a panicked:\n%s", tail(a.log(), 4000))
	}
}
