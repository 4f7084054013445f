package call

import (
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
