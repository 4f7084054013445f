package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/call/redisdialogs"
	"github.com/sori-voice/sori/sip/calls"
)

// savedLate waits until the call's state in Redis holds the delayed
// offer of its sender's INVITE cseq, acked or not yet (saved in the
// background: polled), and returns it.
func savedLate(t *testing.T, rdb *redis.Client, callID string, cseq uint32, acked bool) call.LateOffer {
	t.Helper()
	key := redisdialogs.New(rdb, "", "").StateKey(callID)
	var st call.State
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		blob, err := rdb.Get(context.Background(), key).Bytes()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		if err == nil {
			st = call.State{}
			if err := json.Unmarshal(blob, &st); err != nil {
				t.Fatal(err)
			}
			if st.Late != nil && st.Late.CSeq == cseq && st.Late.Acked == acked {
				return *st.Late
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("call %s saved with the delayed offer %+v, want CSeq %d's, acked %v", callID, st.Late, cseq, acked)
		}
	}
}

// A delayed-offer call across two crashes of its node (SIGKILL), each
// between a 200 carrying the offer and the ACK carrying the answer: alice
// calls bob with an INVITE without SDP, bob's 200 brings his offer (the
// anchor's SDP reaches alice), and the node is killed before alice's ACK.
// The new process adopts the call with its pending offer: the ACK's
// answer goes to the anchor (bob's ACK sends his media to it) and RTP
// flows both ways, bob's first (the anchor learnt alice's address from
// the answer, not from her packets). Then a re-INVITE without SDP from
// alice, answered with an offer by bob, and another crash before its ACK:
// the process after it gives the ACK's answer to the anchor (bob's ACK
// has the anchor's SDP) and RTP flows both ways again. BYE ends the
// call: one record, nothing left saved.
func TestDelayedOfferSurvivesARestart(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	an := startAnchor(t, "-media-timeout", "0")
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	n := startNode(t, nodeConfig{store: rs.URL(), sip: "  timer_c: 30s\n",
		extra: fmt.Sprintf("media:\n  anchors: [%q]\ncdr:\n  file: %s\n", an.ng, cdr)})

	ma, mb := newMediaSocket(t), newMediaSocket(t)
	alice, bob, _, res := lateCall(t, n, mb, 200)
	callID := res.CallID().Value()
	aliceTag, bobTag := res.From().Params.GetOr("tag", ""), res.To().Params.GetOr("tag", "")
	toAnchorFromA := mediaTarget(t, res.Body())
	if !an.hasPort(toAnchorFromA) {
		t.Fatalf("alice's 200 sends media to %s, not to the anchor", toAnchorFromA)
	}
	inviteCSeq := res.CSeq().SeqNo
	late := savedLate(t, rdb, callID, inviteCSeq, false)
	if late.Tag != bobTag || late.Sender != aliceTag || late.Anchor != an.ng || late.WebRTC {
		t.Fatalf("saved delayed offer %+v: want bob's (%s) to alice (%s) on %s", late, bobTag, aliceTag, an.ng)
	}
	if mediaTarget(t, []byte(late.SDP)) != toAnchorFromA {
		t.Fatalf("the saved offer is not the one alice got:\n%s", late.SDP)
	}

	n = n.restart(t, true)
	if v, _ := metricSample(t, n, "sori_calls_adopted_total"); v != 1 {
		t.Fatalf("sori_calls_adopted_total %v after the restart, want 1", v)
	}
	alice.send(withSDP(alice.inDialog("ACK", int(inviteCSeq), res), ma.sdp(1001)))
	ack := bob.readRequest()
	if ack.Method != sip.ACK || ack.CallID().Value() != callID {
		t.Fatalf("bob got %s of %s, want alice's ACK", ack.Method, ack.CallID().Value())
	}
	toAnchorFromB := mediaTarget(t, ack.Body())
	if !an.hasPort(toAnchorFromB) || toAnchorFromB == toAnchorFromA {
		t.Fatalf("bob's ACK after the restart sends media to %s (alice's side: %s), not to the anchor", toAnchorFromB, toAnchorFromA)
	}
	stream(t, mb, toAnchorFromB, ma, toAnchorFromA, 0xb0b, 50)
	stream(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce, 50)
	if late := savedLate(t, rdb, callID, inviteCSeq, true); mediaTarget(t, []byte(late.Ack)) != toAnchorFromB {
		t.Fatalf("the saved answer is not the one bob got:\n%s", late.Ack)
	}

	// A re-INVITE without SDP: bob's 200 brings the offer, and the node
	// is killed before the ACK.
	reCSeq := inviteCSeq + 1
	alice.send(strings.Replace(alice.inDialog("INVITE", int(reCSeq), res), fmt.Sprintf("CSeq: %d INVITE\n", reCSeq),
		fmt.Sprintf("CSeq: %d INVITE\nContact: <sip:alice@%s;transport=udp>\n", reCSeq, alice.local), 1))
	reinv := bob.readRequest()
	if reinv.Method != sip.INVITE || len(reinv.Body()) != 0 {
		t.Fatalf("bob got %s with body %q, want the re-INVITE without SDP", reinv.Method, reinv.Body())
	}
	bob.send(answer200(reinv, bobTag, "<sip:bob@"+bob.local+">", mb.sdp(2002)))
	reres := alice.final()
	if reres.StatusCode != 200 || reres.CSeq().SeqNo != reCSeq || mediaTarget(t, reres.Body()) != toAnchorFromA {
		t.Fatalf("re-INVITE: %d for CSeq %d, media to %s (was %s)", reres.StatusCode, reres.CSeq().SeqNo, mediaTarget(t, reres.Body()), toAnchorFromA)
	}
	savedLate(t, rdb, callID, reCSeq, false)

	n = n.restart(t, true)
	alice.send(withSDP(alice.inDialog("ACK", int(reCSeq), res), ma.sdp(1001)))
	reack := bob.readRequest()
	if reack.Method != sip.ACK || reack.CSeq().SeqNo != reCSeq || mediaTarget(t, reack.Body()) != toAnchorFromB {
		t.Fatalf("bob got %s (CSeq %d) sending media to %s, want the ACK to the anchor's %s", reack.Method, reack.CSeq().SeqNo, mediaTarget(t, reack.Body()), toAnchorFromB)
	}
	stream(t, mb, toAnchorFromB, ma, toAnchorFromA, 0xb0b2, 20)
	stream(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce2, 20)
	savedLate(t, rdb, callID, reCSeq, true)

	alice.send(alice.inDialog("BYE", int(reCSeq)+1, res))
	if bye := bob.readRequest(); bye.Method != sip.BYE {
		t.Fatalf("bob got %s, want the BYE", bye.Method)
	} else {
		bob.respond(bye, 200, "OK")
	}
	if r := alice.final(); r.StatusCode != 200 || r.CSeq().MethodName != sip.BYE {
		t.Fatalf("BYE: %d %s", r.StatusCode, r.CSeq().MethodName)
	}
	waitAnchorEmpty(t, an)
	checkCallRecord(t, callRecords(t, cdr, callID, 1)[0], 200, calls.Answered, "caller")
	if states, ends := dialogKeys(t, rdb); states != 0 || ends != 1 {
		t.Errorf("Redis has %d saved calls and %d ended at the end, want 0 and 1", states, ends)
	}
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	// The last process: the re-INVITE's answer, and the delete.
	for _, want := range []string{`sori_media_commands_total{command="answer",outcome="ok"} 1`, `sori_media_commands_total{command="delete",outcome="ok"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("sori metrics lack %s", want)
		}
	}
}
