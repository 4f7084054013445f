package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/nodes"
)

// Two nodes on one Redis; node a (127.0.0.71) reaches it through a TCP
// proxy the test cuts: a partition of a alone, a still up. A call is
// answered through a, anchored on sori-anchor, its media silent. a steps
// back from it before b can adopt it: a re-INVITE to a then gets 503
// with Retry-After, the call untouched; alice's BYE goes on to bob (both
// phones hang up, whoever holds the call), its end kept until a reaches
// Redis again. b (127.0.0.72) adopts the call once a's heartbeat has
// been gone for GoneAfter. Then a reaches Redis again and leaves the end
// to b without a word; the anchor's media timeout goes to b, which sends
// its BYEs: the only record is b's.
func TestFenceCutOffNodeLetsGoOfAdoptedCalls(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	cut := redistest.NewCutter(t, rs.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	// The media timeout comes well after b adopted the call (about 18 s
	// after the cut) and a came back.
	an := startAnchor(t, "-media-timeout", "35s")
	dir := t.TempDir()
	ips, ports := []string{"127.0.0.71", "127.0.0.72"}, []int{freeSIPPort(t), freeSIPPort(t)}
	peers := nodeAddrs("tcp", ips, ports)
	spec := func(i int, store string) nodeSpec {
		id := []string{"a", "b"}[i]
		return nodeSpec{id: id, ip: ips[i], port: ports[i], nodes: peers, store: store,
			cdr: filepath.Join(dir, "cdr-"+id+".jsonl"), sections: fmt.Sprintf("media:\n  anchors: [%q]\n", an.ng)}
	}
	a := spec(0, cut.URL()).start(t)
	b := spec(1, rs.URL()).start(t)

	e := &restartedCalls{rdb: rdb, an: an, endingCall: &endingCall{n: a.node, cdr: a.cdr, ma: newMediaSocket(t), mb: newMediaSocket(t)}}
	e.alice, e.bob = newLooseUA(t, a.sipAddr(), "alice"), newLooseUA(t, a.sipAddr(), "bob")
	if res := e.bob.registerAuth("bob", "bob-secret", "fence-reg@test", 1, e.contact()); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	_, res := e.answer(t)
	callID := res.CallID().Value()
	ctx := context.Background()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// Saved (the index entry is written first, then the state): a cut
		// between the two leaves b nothing to adopt.
		if n, _ := rdb.ZCard(ctx, "sori:dlgs:{a}").Result(); n == 1 {
			if states, _ := dialogKeys(t, rdb); states == 1 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the call is not saved in a's index")
		}
	}

	cut.Cut()
	cutAt := time.Now()
	for ; !strings.Contains(a.log(), "this one stops acting on them"); time.Sleep(50 * time.Millisecond) {
		if time.Since(cutAt) > nodes.GoneAfter {
			t.Fatalf("a did not step back within GoneAfter (%v) of the cut", nodes.GoneAfter)
		}
	}
	stepped := time.Since(cutAt)
	if v, _ := metricSample(t, b.node, "sori_calls_adopted_total"); v != 0 {
		t.Fatalf("b adopted %v calls before a stepped back (%v after the cut)", v, stepped)
	}
	t.Logf("a stepped back %v after the cut", stepped.Round(100*time.Millisecond))

	// Fenced: a re-INVITE gets 503 and changes nothing; alice's BYE goes on.
	reinvite := e.alice.inDialog("INVITE", 3, res)
	e.alice.send(reinvite)
	if r := e.alice.final(); r.StatusCode != 503 || r.GetHeader("Retry-After") == nil {
		t.Fatalf("re-INVITE while a is cut off: %d %s (Retry-After %v), want 503 with Retry-After", r.StatusCode, r.Reason, r.GetHeader("Retry-After"))
	} else {
		e.alice.send(ackFor(reinvite, r))
	}
	e.alice.send(e.alice.inDialog("BYE", 4, res))
	if bye := e.bob.readRequest(); bye.Method != sip.BYE || bye.CallID().Value() != callID || !strings.HasPrefix(bye.Source(), ips[0]+":") {
		t.Fatalf("bob got %s for %s from %s, want alice's BYE through a", bye.Method, bye.CallID().Value(), bye.Source())
	} else {
		e.bob.respond(bye, 200, "OK")
	}
	if r := e.alice.final(); r.StatusCode != 200 || r.CSeq().MethodName != sip.BYE {
		t.Fatalf("alice's BYE while a is cut off: %d %s", r.StatusCode, r.CSeq().MethodName)
	}

	for within := nodes.GoneAfter + 3*nodes.BeatTTL; ; time.Sleep(50 * time.Millisecond) {
		if v, _ := metricSample(t, b.node, "sori_calls_adopted_total"); v == 1 {
			break
		} else if time.Since(cutAt) > within {
			t.Fatalf("b adopted %v calls within %v of the cut, want 1", v, within)
		}
	}
	cut.Mend()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if v, _ := metricSample(t, a.node, "sori_calls_dropped_total"); v == 1 {
			break // the kept end, left to b
		} else if time.Now().After(deadline) {
			t.Fatalf("a dropped %v calls within 10 s of reaching Redis again, want 1", v)
		}
	}
	if v, _ := metricSample(t, a.node, "sori_calls_held"); v != 0 {
		t.Fatalf("a holds %v calls after it came back, want 0", v)
	}

	// The anchor's media timeout goes to b, which sends its BYEs (the
	// phones, already hung up, would answer 481; these answer 200).
	for deadline := time.Now().Add(40 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if v, _ := metricSample(t, b.node, `sori_calls_active{state="answered"}`); v == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatal("b did not end the call on its media timeout")
		}
	}
	for _, phone := range []*ua{e.alice, e.bob} {
		bye := phone.readRequest()
		if bye.Method != sip.BYE || bye.CallID().Value() != callID {
			t.Fatalf("%s got %s for %s, want b's BYE", phone.user, bye.Method, bye.CallID().Value())
		}
		if !strings.HasPrefix(bye.Source(), ips[1]+":") {
			t.Fatalf("%s got a BYE from %s, want it from b (%s) only", phone.user, bye.Source(), ips[1])
		}
		phone.respond(bye, 200, "OK")
	}
	recs := waitRecords(t, b.cdr, 1, "b's record of the call", func(r calls.Record) bool { return r.CallID == callID })
	checkCallRecord(t, recs[0], 200, calls.MediaTimeout, "media-timeout")
	waitRecords(t, a.cdr, 0, "a's (the call ended on b)", func(calls.Record) bool { return true })
	if strings.Contains(a.log(), "call ended on another node") || strings.Contains(b.log(), "call ended on another node") {
		t.Errorf("the call was ended twice")
	}
}
