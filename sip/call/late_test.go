package call

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"

	"github.com/sori-voice/sori/sip/calls"
)

// What the Call keeps of a delayed offer, step by step: the 2xx offers
// (retransmissions, forks, the anchor failing) and the ACKs that answer.
func TestDelayedOfferSteps(t *testing.T) {
	errNoAnchor := errors.New("no anchor")
	type step struct {
		kind   string // "2xx" (offer from tag to sender's cseq) or "ack" (from sender, cseq)
		tag    string // the 2xx's offerer
		sender string
		cseq   uint32
		fail   bool // the anchor command fails

		wantCalls   int    // anchor commands made so far
		wantSDP     string // what the INVITE's sender (2xx) or the offerer (ACK) gets
		wantErr     error
		wantPending bool // ack: a delayed offer waits for it
	}
	const caller, callee = "caller-tag", "callee-tag"
	tests := []struct {
		name  string
		steps []step
	}{
		{"one offer, its retransmission, one answer, the ACK again", []step{
			{kind: "2xx", tag: callee, sender: caller, cseq: 2, wantCalls: 1, wantSDP: "offer-1"},
			{kind: "2xx", tag: callee, sender: caller, cseq: 2, wantCalls: 1, wantSDP: "offer-1"},
			{kind: "ack", sender: caller, cseq: 2, wantCalls: 2, wantSDP: "answer-2", wantPending: true},
			{kind: "ack", sender: caller, cseq: 2, wantCalls: 2, wantSDP: "answer-2", wantPending: true},
		}},
		{"another fork's 2xx", []step{
			{kind: "2xx", tag: callee, sender: caller, cseq: 2, wantCalls: 1, wantSDP: "offer-1"},
			{kind: "2xx", tag: "fork-2", sender: caller, cseq: 2, wantCalls: 1, wantErr: ErrOtherFork},
			{kind: "ack", sender: caller, cseq: 2, wantCalls: 2, wantSDP: "answer-2", wantPending: true},
		}},
		{"the anchor fails: the retransmission gets the same error, the ACK is not answered", []step{
			{kind: "2xx", tag: callee, sender: caller, cseq: 2, fail: true, wantCalls: 1, wantErr: errNoAnchor},
			{kind: "2xx", tag: callee, sender: caller, cseq: 2, wantCalls: 1, wantErr: errNoAnchor},
			{kind: "ack", sender: caller, cseq: 2, wantCalls: 1},
		}},
		{"an ACK of another INVITE, or from the other side with the same CSeq, is not the answer", []step{
			{kind: "2xx", tag: callee, sender: caller, cseq: 2, wantCalls: 1, wantSDP: "offer-1"},
			{kind: "ack", sender: caller, cseq: 1, wantCalls: 1},
			{kind: "ack", sender: callee, cseq: 2, wantCalls: 1},
		}},
		{"a failed answer is tried again with the retransmitted ACK", []step{
			{kind: "2xx", tag: callee, sender: caller, cseq: 2, wantCalls: 1, wantSDP: "offer-1"},
			{kind: "ack", sender: caller, cseq: 2, fail: true, wantCalls: 2, wantErr: errNoAnchor, wantPending: true},
			{kind: "ack", sender: caller, cseq: 2, wantCalls: 3, wantSDP: "answer-3", wantPending: true},
		}},
		{"a re-INVITE without SDP from the callee, after the call's", []step{
			{kind: "2xx", tag: callee, sender: caller, cseq: 2, wantCalls: 1, wantSDP: "offer-1"},
			{kind: "ack", sender: caller, cseq: 2, wantCalls: 2, wantSDP: "answer-2", wantPending: true},
			{kind: "2xx", tag: caller, sender: callee, cseq: 7, wantCalls: 3, wantSDP: "offer-3"},
			{kind: "ack", sender: caller, cseq: 2, wantCalls: 3},
			{kind: "ack", sender: callee, cseq: 7, wantCalls: 4, wantSDP: "answer-4", wantPending: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, _, _ := newTable(t, 0)
			c := tb.Begin(calls.Record{CallID: "late"}, caller)
			defer c.Failed(487, "Request Terminated", false, 1)
			n := 0
			for i, s := range tt.steps {
				var sdp []byte
				var err error
				pending := false
				switch s.kind {
				case "2xx":
					sdp, err = c.OfferIn2xx(s.tag, s.sender, s.cseq, false, func() (netip.AddrPort, []byte, error) {
						n++
						if s.fail {
							return netip.AddrPort{}, nil, errNoAnchor
						}
						return anchorAddr, []byte("offer-" + string(rune('0'+n))), nil
					})
				case "ack":
					_, _, pending = c.LateAck(s.sender, s.cseq)
					var acked bool
					sdp, acked, err = c.AnswerInAck(s.sender, s.cseq, func() ([]byte, error) {
						n++
						if s.fail {
							return nil, errNoAnchor
						}
						return []byte("answer-" + string(rune('0'+n))), nil
					})
					if acked != pending {
						t.Fatalf("step %d: AnswerInAck says %v, LateAck %v", i, acked, pending)
					}
				}
				if n != s.wantCalls || string(sdp) != s.wantSDP || !errors.Is(err, s.wantErr) || pending != s.wantPending {
					t.Fatalf("step %d (%s): %d anchor commands, SDP %q, error %v, pending %v; want %d, %q, %v, %v",
						i, s.kind, n, sdp, err, pending, s.wantCalls, s.wantSDP, s.wantErr, s.wantPending)
				}
			}
			if on, ok := c.Anchor(); tt.steps[0].fail == (ok && on == anchorAddr) {
				t.Fatalf("call's anchor %v %v after the steps", on, ok)
			}
		})
	}
}

func TestLastSDPBySide(t *testing.T) {
	tb, _, _ := newTable(t, 0)
	c := tb.Begin(calls.Record{CallID: "sdp"}, "caller-tag")
	defer c.Failed(487, "", false, 1)
	if c.LastSDP("caller-tag") != nil {
		t.Fatal("an SDP before any was noted")
	}
	c.SDP("callee-tag", []byte("callee"))
	c.SDP("caller-tag", []byte("caller"))
	if string(c.LastSDP("caller-tag")) != "caller" || string(c.LastSDP("callee-tag")) != "callee" {
		t.Fatalf("caller %q, callee %q", c.LastSDP("caller-tag"), c.LastSDP("callee-tag"))
	}
}

// A delayed offer waiting for its ACK is saved with the call: after a
// restart (Adopt) or on another node (Lookup), the ACK's answer goes to
// the anchor that took the offer, once; its rewrite is saved too, so a
// retransmitted ACK on yet another node gets the same without asking the
// anchor again. A re-INVITE's delayed offer is saved as it is made; one
// the anchor did not take is not (its ACK goes on as it is).
func TestDelayedOfferSurvivesARestart(t *testing.T) {
	const caller, callee = "caller-tag", "callee-tag"
	s := newMemStore()
	a, _ := nodeAs(t, s, "node-a")
	c := a.Begin(calls.Record{CallID: "late"}, caller)
	if _, err := c.OfferIn2xx(callee, caller, 1, true, func() (netip.AddrPort, []byte, error) {
		return anchorAddr, []byte("offer-for-caller"), nil
	}); err != nil {
		t.Fatal(err)
	}
	answer(c)
	wait(t, a)
	want := LateOffer{Tag: callee, Sender: caller, CSeq: 1, Anchor: anchorAddr.String(), SDP: "offer-for-caller", WebRTC: true}
	saved, ok := s.state("late")
	if !ok || saved.Late == nil || *saved.Late != want {
		t.Fatalf("saved delayed offer %+v (%v), want %+v", saved.Late, ok, want)
	}
	blob, err := json.Marshal(saved)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(blob, &back); err != nil {
		t.Fatal(err)
	}
	if back.Late == nil || *back.Late != want {
		t.Fatalf("delayed offer through JSON %+v, want %+v", back.Late, want)
	}

	// node-a restarts before the ACK: it adopts the call, offer and all.
	a2, _ := nodeAs(t, s, "node-a")
	if n, err := a2.Adopt(context.Background(), "node-a"); n != 1 || err != nil {
		t.Fatalf("adopted %d (%v)", n, err)
	}
	c2 := a2.Find("late")
	if on, webrtc, pending := c2.LateAck(caller, 1); on != anchorAddr || !webrtc || !pending {
		t.Fatalf("the ACK after the restart: anchor %v, webrtc %v, pending %v", on, webrtc, pending)
	}
	if _, _, pending := c2.LateAck(callee, 1); pending {
		t.Fatal("an ACK from the offerer is taken for the answer")
	}
	answers := 0
	ack := func() ([]byte, error) { answers++; return []byte("answer-for-callee"), nil }
	if sdp, acked, err := c2.AnswerInAck(caller, 1, ack); string(sdp) != "answer-for-callee" || !acked || err != nil || answers != 1 {
		t.Fatalf("the ACK's answer: %q %v %v, %d ng answers", sdp, acked, err, answers)
	}
	wait(t, a2)
	saved, _ = s.state("late")
	want.Acked, want.Ack = true, "answer-for-callee"
	if saved.Late == nil || *saved.Late != want {
		t.Fatalf("saved after the ACK %+v, want %+v", saved.Late, want)
	}

	// The ACK again, on another node: the same answer, no ng answer.
	b, _ := nodeAs(t, s, "node-b")
	cb := b.Lookup(context.Background(), "late")
	if sdp, acked, err := cb.AnswerInAck(caller, 1, ack); string(sdp) != "answer-for-callee" || !acked || err != nil || answers != 1 {
		t.Fatalf("the retransmitted ACK on node-b: %q %v %v, %d ng answers", sdp, acked, err, answers)
	}

	// The callee's re-INVITE without SDP, answered on node-b; its ACK
	// comes to node-c.
	if _, err := cb.OfferIn2xx(caller, callee, 7, false, func() (netip.AddrPort, []byte, error) {
		return anchorAddr, []byte("reoffer-for-callee"), nil
	}); err != nil {
		t.Fatal(err)
	}
	wait(t, b)
	tc, _ := nodeAs(t, s, "node-c")
	cc := tc.Lookup(context.Background(), "late")
	if _, _, pending := cc.LateAck(caller, 1); pending {
		t.Fatal("the call's first ACK is still pending after the re-INVITE's offer")
	}
	if on, webrtc, pending := cc.LateAck(callee, 7); on != anchorAddr || webrtc || !pending {
		t.Fatalf("the re-INVITE's ACK on node-c: anchor %v, webrtc %v, pending %v", on, webrtc, pending)
	}
	if sdp, acked, err := cc.AnswerInAck(callee, 7, ack); string(sdp) != "answer-for-callee" || !acked || err != nil || answers != 2 {
		t.Fatalf("the re-INVITE's ACK: %q %v %v, %d ng answers", sdp, acked, err, answers)
	}

	// A re-INVITE's offer the anchor refused: nothing pending is saved.
	if _, err := cc.OfferIn2xx(callee, caller, 2, false, func() (netip.AddrPort, []byte, error) {
		return netip.AddrPort{}, nil, errors.New("no anchor")
	}); err == nil {
		t.Fatal("the refused offer has no error")
	}
	wait(t, tc)
	if st, ok := s.state("late"); !ok || st.Late != nil {
		t.Fatalf("saved after a refused offer: %+v (%v)", st.Late, ok)
	}
	cc.Bye(caller)
	for _, tb := range []*Table{a2, b} {
		if f := tb.Find("late"); f != nil {
			f.Bye(caller)
		}
	}
	wait(t, tc, a2, b)
}
