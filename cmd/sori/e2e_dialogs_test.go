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
			rs := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
			t.Cleanup(func() { _ = rdb.Close() })
			an := startAnchor(t, "-media-timeout", "0")
			cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
			e := &endingCall{cdr: cdr, ma: newMediaSocket(t), mb: newMediaSocket(t)}
			e.n = startNode(t, nodeConfig{store: rs.URL(), sip: "  timer_j: 500ms\n  timer_c: 30s\n",
				extra: fmt.Sprintf("media:\n  anchors: [%q]\ncdr:\n  file: %s\n", an.ng, cdr)})
			e.alice, e.bob = newUA(t, e.n, "udp", "alice"), newUA(t, e.n, "udp", "bob")
			if res := e.bob.registerAuth("bob", "bob-secret", "dialogs-reg@test", 1, e.contact()); res.StatusCode != 200 {
				t.Fatalf("REGISTER: %d", res.StatusCode)
			}

			type answered struct {
				inv *sip.Request  // the INVITE as bob got it
				res *sip.Response // the 200 as alice got it
			}
			var cs []answered
			for range n {
				inv, res := e.answer(t)
				cs = append(cs, answered{inv, res})
			}
			if got := an.metric(t, "sori_anchor_calls"); got != fmt.Sprint(n) {
				t.Fatalf("sori-anchor holds %s calls, want %d", got, n)
			}
			// Saved as they were answered (in the background: polled).
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if states, _ := dialogKeys(t, rdb); states == n {
					break
				} else if time.Now().After(deadline) {
					t.Fatalf("%d calls saved in Redis, want %d", states, n)
				}
			}

			old := e.n
			e.n = old.restart(t, tt.kill)
			if states, ends := dialogKeys(t, rdb); states != n || ends != 0 {
				t.Fatalf("after the restart Redis has %d saved calls and %d ended, want %d and 0", states, ends, n)
			}
			if got := an.metric(t, "sori_anchor_calls"); got != fmt.Sprint(n) {
				t.Fatalf("the restart ended calls: sori-anchor holds %s, want %d", got, n)
			}
			if strings.Contains(old.log(), "BYE") {
				t.Fatalf("the old node sent or logged a BYE:\n%s", old.log())
			}
			waitRecords(t, cdr, 0, "the calls before their BYE", func(calls.Record) bool { return true })
			baseline := quietGoroutines(t, e.n) // the new process holds no call yet

			// Every BYE now, the caller's and the callee's in turn.
			for i, c := range cs {
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

			for i, c := range cs {
				by := "caller"
				if i%2 == 1 {
					by = "callee"
				}
				checkCallRecord(t, callRecords(t, cdr, c.res.CallID().Value(), 1)[0], 200, calls.Answered, by)
			}
			waitReleased(t, e.n, baseline, 30*time.Second)
			if v, _ := metricSample(t, e.n, "sori_calls_loaded_total"); v != n {
				t.Errorf("sori_calls_loaded_total %v, want %d", v, n)
			}
			waitRecords(t, cdr, n, "all calls, still once each", func(calls.Record) bool { return true })
			if got := an.metric(t, "sori_anchor_calls"); got != "0" {
				t.Errorf("sori-anchor still holds %s calls", got)
			}
			if states, ends := dialogKeys(t, rdb); states != 0 || ends != n {
				t.Errorf("Redis has %d saved calls and %d ended at the end, want 0 and %d", states, ends, n)
			}
		})
	}
}
