package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/calls"
)

// restart stops n (SIGTERM, or SIGKILL when kill) and starts sori again
// on the same configuration file and ports.
func (n *node) restart(t *testing.T, kill bool) *node {
	t.Helper()
	if kill {
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.exited
	} else {
		n.stop()
	}
	cfg, err := os.ReadFile(n.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return runNode(t, string(cfg), n.port, n.http)
}

// dialogKeys counts the saved calls (sori:dlg:{CALLID}) and the claimed
// ends (sori:dlg:{CALLID}:end) in Redis.
func dialogKeys(t *testing.T, rdb *redis.Client) (states, ends int) {
	t.Helper()
	keys, err := rdb.Keys(context.Background(), "sori:dlg:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.HasSuffix(k, ":end") {
			ends++
		} else {
			states++
		}
	}
	return states, ends
}

// dialogIndexes counts the entries of the nodes' indexes of their saved
// calls (sori:dlgs:{NODE}) in Redis.
func dialogIndexes(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "sori:dlgs:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range keys {
		if strings.HasSuffix(k, ":taker") {
			continue // the lease of taking a node's calls, not an index
		}
		c, err := rdb.ZCard(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		n += int(c)
	}
	return n
}

// answeredCall is one call of restartedCalls.
type answeredCall struct {
	inv *sip.Request  // the INVITE as bob got it
	res *sip.Response // the 200 as alice got it
}

// restartedCalls is a sori node on Redis restarted in the middle of
// answered calls, each anchored on sori-anchor.
type restartedCalls struct {
	*endingCall
	an  *anchorProc
	rdb *redis.Client
	cs  []answeredCall
	old *node // the node before the restart
}

// restartMidCalls has alice place n calls to bob through a node on Redis
// (sip holds more keys under sip:), each answered and anchored on a
// sori-anchor whose media never times out, waits until all are saved,
// and restarts the node (SIGTERM, or SIGKILL when kill). It checks that
// the restart ended none: each still saved, held by the anchor, no BYE
// sent, no record written; and that the new process adopted every one.
func restartMidCalls(t *testing.T, n int, kill bool, sipKeys string) *restartedCalls {
	t.Helper()
	return restartMidAnchoredCalls(t, n, kill, sipKeys, "0")
}

// restartMidAnchoredCalls is restartMidCalls with the anchor's
// -media-timeout.
func restartMidAnchoredCalls(t *testing.T, n int, kill bool, sipKeys, mediaTimeout string) *restartedCalls {
	t.Helper()
	rs := redistest.Start(t)
	rc := &restartedCalls{rdb: redis.NewClient(&redis.Options{Addr: rs.Addr}), an: startAnchor(t, "-media-timeout", mediaTimeout)}
	t.Cleanup(func() { _ = rc.rdb.Close() })
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	rc.endingCall = &endingCall{cdr: cdr, ma: newMediaSocket(t), mb: newMediaSocket(t)}
	rc.n = startNode(t, nodeConfig{store: rs.URL(), sip: "  timer_j: 500ms\n  timer_c: 30s\n" + sipKeys,
		extra: fmt.Sprintf("media:\n  anchors: [%q]\ncdr:\n  file: %s\n", rc.an.ng, cdr)})
	rc.alice, rc.bob = newUA(t, rc.n, "udp", "alice"), newUA(t, rc.n, "udp", "bob")
	if res := rc.bob.registerAuth("bob", "bob-secret", "dialogs-reg@test", 1, rc.contact()); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	for range n {
		inv, res := rc.answer(t)
		rc.cs = append(rc.cs, answeredCall{inv, res})
	}
	if got := rc.an.metric(t, "sori_anchor_calls"); got != fmt.Sprint(n) {
		t.Fatalf("sori-anchor holds %s calls, want %d", got, n)
	}
	// Saved as they were answered (in the background: polled).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if states, _ := dialogKeys(t, rc.rdb); states == n && dialogIndexes(t, rc.rdb) == n {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("%d calls saved in Redis (%d indexed), want %d", states, dialogIndexes(t, rc.rdb), n)
		}
	}

	rc.old = rc.n
	rc.n = rc.old.restart(t, kill)
	if states, ends := dialogKeys(t, rc.rdb); states != n || ends != 0 {
		t.Fatalf("after the restart Redis has %d saved calls and %d ended, want %d and 0", states, ends, n)
	}
	if got := rc.an.metric(t, "sori_anchor_calls"); got != fmt.Sprint(n) {
		t.Fatalf("the restart ended calls: sori-anchor holds %s, want %d", got, n)
	}
	if strings.Contains(rc.old.log(), "BYE") {
		t.Fatalf("the old node sent or logged a BYE:\n%s", rc.old.log())
	}
	waitRecords(t, cdr, 0, "the calls before their end", func(calls.Record) bool { return true })
	// Adopted as it started: before it answered /healthz.
	if v, _ := metricSample(t, rc.n, "sori_calls_adopted_total"); v != float64(n) {
		t.Fatalf("sori_calls_adopted_total %v after the restart, want %d", v, n)
	}
	return rc
}

// A sori node on Redis restarts in the middle of 20 answered calls, each
// anchored on sori-anchor: the calls stay up (a restart ends none), and
// afterwards every BYE, from either side, reaches the other phone and is
// answered 200, every call's record is written once, by the new process,
// and the anchor holds no call at the end. Once with SIGTERM (sori drains
// and exits), once with SIGKILL (a crash).
func TestDialogsSurviveARestart(t *testing.T) {
	for _, tt := range []struct {
		name string
		kill bool
	}{{"SIGTERM", false}, {"SIGKILL", true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const n = 20
			e := restartMidCalls(t, n, tt.kill, "")

			// Every BYE now, the caller's and the callee's in turn.
			for i, c := range e.cs {
				callID := c.res.CallID().Value()
				if i%2 == 0 {
					e.alice.send(e.alice.inDialog("BYE", 3, c.res))
					bye := e.bob.readRequest()
					if bye.Method != sip.BYE || bye.CallID().Value() != callID {
						t.Fatalf("call %d: bob got %s of %s, want alice's BYE", i, bye.Method, bye.CallID().Value())
					}
					e.bob.respond(bye, 200, "OK")
					if r := e.alice.final(); r.StatusCode != 200 || r.CSeq().MethodName != sip.BYE || r.CallID().Value() != callID {
						t.Fatalf("call %d: BYE: %d %s", i, r.StatusCode, r.CSeq().MethodName)
					}
					continue
				}
				e.bob.send(fmt.Sprintf("BYE %s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-bye-%s;rport\nMax-Forwards: 70\n%sFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: 1 BYE\nContent-Length: 0\n\n",
					c.inv.Contact().Address.String(), e.bob.local, callID, routeSet(c.inv), c.res.To().Value(), c.res.From().Value(), callID))
				hungUp(t, e.alice, callID)
				if r := e.bob.final(); r.StatusCode != 200 || r.CSeq().MethodName != sip.BYE || r.CallID().Value() != callID {
					t.Fatalf("call %d: bob's BYE: %d %s", i, r.StatusCode, r.CSeq().MethodName)
				}
			}

			for i, c := range e.cs {
				by := "caller"
				if i%2 == 1 {
					by = "callee"
				}
				checkCallRecord(t, callRecords(t, e.cdr, c.res.CallID().Value(), 1)[0], 200, calls.Answered, by)
			}
			e.released(t, n)
			// The calls were held already (adopted): no request had to load one.
			if v, _ := metricSample(t, e.n, "sori_calls_loaded_total"); v != 0 {
				t.Errorf("sori_calls_loaded_total %v, want 0", v)
			}
		})
	}
}

// released checks that once every call has ended the node holds nothing
// for them, each of the n calls has one record, the anchor holds no call,
// and Redis no saved call (an end claimed for each, no index entry).
func (e *restartedCalls) released(t *testing.T, n int) {
	t.Helper()
	// The new process held calls (adopted) from its start: its goroutine
	// baseline is taken once they are gone.
	waitReleased(t, e.n, quietGoroutines(t, e.n), 30*time.Second)
	waitRecords(t, e.cdr, n, "all calls, still once each", func(calls.Record) bool { return true })
	if got := e.an.metric(t, "sori_anchor_calls"); got != "0" {
		t.Errorf("sori-anchor still holds %s calls", got)
	}
	if states, ends := dialogKeys(t, e.rdb); states != 0 || ends != n {
		t.Errorf("Redis has %d saved calls and %d ended at the end, want 0 and %d", states, ends, n)
	}
	if idx := dialogIndexes(t, e.rdb); idx != 0 {
		t.Errorf("Redis indexes %d saved calls at the end, want 0", idx)
	}
}

// A sori node on Redis is killed in the middle of 20 answered calls, and
// nobody sends anything for them afterwards: no BYE, no re-INVITE, no
// media. The new process adopts them at start, and each ends on its own
// at its dialog timeout, as it would have on the node that answered it:
// sori hangs up both phones, deletes the media (the anchor ends at 0
// calls), writes one record per call (expired, by timeout), and leaves no
// call saved in Redis.
func TestDialogsEndAfterARestartWithNobodyThere(t *testing.T) {
	t.Parallel()
	const n = 20
	// Long enough for 20 calls and a restart, short enough for a test.
	e := restartMidCalls(t, n, true, "  dialog_timeout: 6s\n")

	e.endOnTheirOwn(t, n, 30*time.Second, calls.Expired, "timeout")
	if strings.Contains(e.n.log(), "call ended on another node") {
		t.Errorf("an adopted call was ended twice:\n%s", e.n.log())
	}
}

// endOnTheirOwn waits (within) for the first of the n adopted calls to
// end with nobody sending anything, answers sori's BYEs to both phones,
// and requires one record each, with disposition and hangupBy, and
// everything released.
func (e *restartedCalls) endOnTheirOwn(t *testing.T, n int, within time.Duration, disposition, hangupBy string) {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(50 * time.Millisecond) {
		if v, _ := metricSample(t, e.n, `sori_calls_active{state="answered"}`); v < float64(n) {
			break // the first ends are due: their BYEs are on the way
		} else if time.Now().After(deadline) {
			t.Fatalf("no adopted call ended within %v of the restart (%v answered)", within, v)
		}
	}
	e.byesAnswered(t, n)
	for _, c := range e.cs {
		checkCallRecord(t, callRecords(t, e.cdr, c.res.CallID().Value(), 1)[0], 200, disposition, hangupBy)
	}
	e.released(t, n)
}

// byesAnswered reads sori's BYEs, to both phones of each of the n calls,
// and answers each 200 (a retransmission again). Bob's wait in his
// socket while alice's are read; sori retransmits them meanwhile.
func (e *restartedCalls) byesAnswered(t *testing.T, n int) {
	t.Helper()
	for _, phone := range []*ua{e.alice, e.bob} {
		seen := map[string]bool{}
		for len(seen) < n {
			bye := phone.readRequest()
			if bye.Method != sip.BYE {
				t.Fatalf("%s got %s, want sori's BYE", phone.user, bye.Method)
			}
			phone.respond(bye, 200, "OK")
			seen[bye.CallID().Value()] = true
		}
	}
}

// A node crashes (SIGKILL) in the middle of 20 answered calls whose media
// never flows, on an anchor that ends silent calls after 10 s. Whether a
// call's media timeout comes after the new process adopted it (it queried
// the call, so the anchor reports to its new control port) or came while
// no process held it (the report lost; the query finds the call gone),
// every call ends as a media timeout long before its dialog timeout: one
// record each, BYE to both phones, Redis and the anchor empty.
func TestDialogsMediaTimeoutAfterARestart(t *testing.T) {
	t.Parallel()
	const n = 20
	e := restartMidAnchoredCalls(t, n, true, "", "10s")
	e.endOnTheirOwn(t, n, 40*time.Second, calls.MediaTimeout, "media-timeout")
}
