package call

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/sori-voice/sori/sip/calls"
)

// What the Call keeps of an offer in a reliable 18x, step by step: the
// 18x again, another fork's 18x or 2xx, the 2xx that repeats the offer or
// has none, the PRACK that answers, and the ACK that then has nothing to
// answer.
func TestReliableOfferSteps(t *testing.T) {
	errNoAnchor := errors.New("no anchor")
	type step struct {
		kind string // "18x", "2xx" (offers from tag), "2xx-nosdp", "failed" (from tag), "prack" (to tag), "ack", "lost"
		tag  string // the offerer (18x, 2xx), or the PRACK's To tag
		fail bool   // the anchor command fails

		wantCalls   int    // anchor commands made so far
		wantSDP     string // what the caller (18x, 2xx) or the offerer (PRACK, ACK) gets
		wantErr     error
		wantPending bool   // prack, ack: the answer goes to the anchor
		wantLost    string // lost (the 2xx of tag went up): the callees whose early dialogs lost
	}
	const caller, a, b = "caller-tag", "callee-a", "callee-b"
	const cseq = 2
	tests := []struct {
		name  string
		steps []step
	}{
		{"18x offer, its retransmission, PRACK answer, 2xx with the same offer, ACK without SDP", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "prack", tag: a, wantCalls: 2, wantSDP: "sdp-2", wantPending: true},
			{kind: "prack", tag: a, wantCalls: 2},
			{kind: "2xx", tag: a, wantCalls: 2, wantSDP: "sdp-1"},
			{kind: "ack", wantCalls: 2},
		}},
		{"a 2xx without SDP confirms the 18x's offer: another fork's 2xx is ended", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "prack", tag: a, wantCalls: 2, wantSDP: "sdp-2", wantPending: true},
			{kind: "2xx-nosdp", tag: a, wantCalls: 2},
			{kind: "2xx", tag: b, wantCalls: 2, wantErr: ErrOtherFork},
			{kind: "2xx-nosdp", tag: b, wantCalls: 2, wantErr: ErrOtherFork},
			{kind: "ack", wantCalls: 2},
		}},
		{"another fork's reliable 18x offer gets an early dialog of its own; its 2xx makes it the call's", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "18x", tag: b, wantCalls: 2, wantSDP: "sdp-2"},
			{kind: "18x", tag: b, wantCalls: 2, wantSDP: "sdp-2"},
			{kind: "18x", tag: a, wantCalls: 2, wantSDP: "sdp-1"},
			{kind: "prack", tag: b, wantCalls: 3, wantSDP: "sdp-3", wantPending: true},
			{kind: "prack", tag: b, wantCalls: 3},
			{kind: "prack", tag: a, wantCalls: 4, wantSDP: "sdp-4", wantPending: true},
			{kind: "2xx-nosdp", tag: b, wantCalls: 4},
			{kind: "2xx", tag: a, wantCalls: 4, wantErr: ErrOtherFork},
			{kind: "ack", wantCalls: 4},
			{kind: "lost", tag: b, wantCalls: 4, wantLost: a},
			{kind: "lost", tag: b, wantCalls: 4},
		}},
		{"the first early dialog wins; its 2xx repeats the offer", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "18x", tag: b, wantCalls: 2, wantSDP: "sdp-2"},
			{kind: "prack", tag: a, wantCalls: 3, wantSDP: "sdp-3", wantPending: true},
			{kind: "2xx", tag: a, wantCalls: 3, wantSDP: "sdp-1"},
			{kind: "2xx", tag: b, wantCalls: 3, wantErr: ErrOtherFork},
			{kind: "prack", tag: b, wantCalls: 4, wantSDP: "sdp-4", wantPending: true},
			{kind: "lost", tag: a, wantCalls: 4, wantLost: b},
		}},
		{"a 2xx offer of a third callee takes over: both early dialogs lost", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "18x", tag: b, wantCalls: 2, wantSDP: "sdp-2"},
			{kind: "2xx", tag: "callee-c", wantCalls: 3, wantSDP: "sdp-3"},
			{kind: "ack", wantCalls: 4, wantSDP: "sdp-4", wantPending: true},
			{kind: "lost", tag: "callee-c", wantCalls: 4, wantLost: a + "," + b},
		}},
		{"another fork's 2xx offer takes over an early offer; its ACK answers", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "prack", tag: a, wantCalls: 2, wantSDP: "sdp-2", wantPending: true},
			{kind: "2xx", tag: b, wantCalls: 3, wantSDP: "sdp-3"},
			{kind: "2xx", tag: a, wantCalls: 3, wantErr: ErrOtherFork},
			{kind: "ack", wantCalls: 4, wantSDP: "sdp-4", wantPending: true},
		}},
		{"a 2xx offer first: a reliable 18x of another fork after it is not taken", []step{
			{kind: "2xx", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "18x", tag: b, wantCalls: 1, wantErr: ErrOtherFork},
			{kind: "prack", tag: a, wantCalls: 1},
			{kind: "ack", wantCalls: 2, wantSDP: "sdp-2", wantPending: true},
		}},
		{"the early offer's callee fails: another fork's 18x offer is taken", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "failed", tag: a, wantCalls: 1},
			{kind: "18x", tag: b, wantCalls: 2, wantSDP: "sdp-2"},
			{kind: "prack", tag: a, wantCalls: 2},
			{kind: "prack", tag: b, wantCalls: 3, wantSDP: "sdp-3", wantPending: true},
			{kind: "lost", tag: b, wantCalls: 3, wantLost: a},
		}},
		{"a failed callee's early dialog is not the one that takes the call's place", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "18x", tag: b, wantCalls: 2, wantSDP: "sdp-2"},
			{kind: "failed", tag: b, wantCalls: 2},
			{kind: "prack", tag: b, wantCalls: 2},
			{kind: "failed", tag: a, wantCalls: 2},
			{kind: "18x", tag: "callee-c", wantCalls: 3, wantSDP: "sdp-3"},
			{kind: "prack", tag: "callee-c", wantCalls: 4, wantSDP: "sdp-4", wantPending: true},
			{kind: "lost", tag: "callee-c", wantCalls: 4, wantLost: a + "," + b},
		}},
		{"the first early dialog's callee fails: the other's becomes the call's", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "failed", tag: b, wantCalls: 1},
			{kind: "18x", tag: b, wantCalls: 2, wantSDP: "sdp-2"},
			{kind: "failed", tag: a, wantCalls: 2},
			{kind: "18x", tag: b, wantCalls: 2, wantSDP: "sdp-2"},
			{kind: "prack", tag: a, wantCalls: 2},
			{kind: "prack", tag: b, wantCalls: 3, wantSDP: "sdp-3", wantPending: true},
			{kind: "2xx-nosdp", tag: b, wantCalls: 3},
			{kind: "ack", wantCalls: 3},
		}},
		{"a failure after the 2xx confirmed the offer changes nothing", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "2xx-nosdp", tag: a, wantCalls: 1},
			{kind: "failed", tag: a, wantCalls: 1},
			{kind: "2xx", tag: b, wantCalls: 1, wantErr: ErrOtherFork},
		}},
		{"a PRACK without the answer: the ACK answers", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "2xx", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "ack", wantCalls: 2, wantSDP: "sdp-2", wantPending: true},
		}},
		{"the PRACK's answer fails: it is tried again with the next PRACK", []step{
			{kind: "18x", tag: a, wantCalls: 1, wantSDP: "sdp-1"},
			{kind: "prack", tag: a, fail: true, wantCalls: 2, wantErr: errNoAnchor, wantPending: true},
			{kind: "prack", tag: a, wantCalls: 3, wantSDP: "sdp-3", wantPending: true},
			{kind: "ack", wantCalls: 3},
		}},
		{"no anchor took the 18x's offer: the 2xx gets the same error, nothing answers", []step{
			{kind: "18x", tag: a, fail: true, wantCalls: 1, wantErr: errNoAnchor},
			{kind: "18x", tag: a, wantCalls: 1, wantErr: errNoAnchor},
			{kind: "prack", tag: a, wantCalls: 1},
			{kind: "2xx", tag: a, wantCalls: 1, wantErr: errNoAnchor},
			{kind: "ack", wantCalls: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, _, _ := newTable(t, 0)
			c := tb.Begin(calls.Record{CallID: "reliable"}, caller)
			defer c.Failed(487, "Request Terminated", false, 2)
			n := 0
			do := func(fail bool) ([]byte, error) {
				n++
				if fail {
					return nil, errNoAnchor
				}
				return []byte(fmt.Sprintf("sdp-%d", n)), nil
			}
			offer := func(fail bool) func() (netip.AddrPort, []byte, error) {
				return func() (netip.AddrPort, []byte, error) {
					sdp, err := do(fail)
					if err != nil {
						return netip.AddrPort{}, nil, err
					}
					return anchorAddr, sdp, nil
				}
			}
			for i, s := range tt.steps {
				var sdp []byte
				var err error
				pending := false
				switch s.kind {
				case "18x":
					sdp, err = c.OfferIn18x(s.tag, caller, cseq, false, offer(s.fail))
				case "2xx":
					sdp, err = c.OfferIn2xx(s.tag, caller, cseq, false, offer(s.fail))
				case "2xx-nosdp":
					err = c.Confirm2xx(s.tag, caller, cseq)
				case "failed":
					c.EarlyFailed(s.tag, caller, cseq)
				case "prack":
					_, _, pending = c.PrackPending(caller, s.tag, cseq)
					if pending {
						sdp, _, err = c.AnswerInPrackTo(caller, s.tag, cseq, func() ([]byte, error) { return do(s.fail) })
					}
				case "lost":
					if got := strings.Join(c.LostEarly(s.tag, caller, cseq), ","); got != s.wantLost {
						t.Fatalf("step %d: lost early dialogs %q, want %q", i, got, s.wantLost)
					}
				case "ack":
					_, _, pending = c.LateAck(caller, cseq)
					var acked bool
					sdp, acked, err = c.AnswerInAck(caller, cseq, func() ([]byte, error) { return do(s.fail) })
					if acked != pending {
						t.Fatalf("step %d: AnswerInAck says %v, LateAck %v", i, acked, pending)
					}
				}
				if n != s.wantCalls || string(sdp) != s.wantSDP || !errors.Is(err, s.wantErr) || pending != s.wantPending {
					t.Fatalf("step %d (%s %s): %d anchor commands, SDP %q, error %v, pending %v; want %d, %q, %v, %v",
						i, s.kind, s.tag, n, sdp, err, pending, s.wantCalls, s.wantSDP, s.wantErr, s.wantPending)
				}
			}
			if on, ok := c.Anchor(); tt.steps[0].fail == (ok && on == anchorAddr) {
				t.Fatalf("call's anchor %v %v after the steps", on, ok)
			}
		})
	}
}

// An early offer answered by its PRACK is saved so: the node that takes
// the ACK (after a restart, or another) does not wait for an answer in it.
func TestReliableOfferSaved(t *testing.T) {
	const caller, callee = "caller-tag", "callee-tag"
	s := newMemStore()
	a, _ := nodeAs(t, s, "node-a")
	c := a.Begin(calls.Record{CallID: "reliable"}, caller)
	if _, err := c.OfferIn18x(callee, caller, 1, false, func() (netip.AddrPort, []byte, error) {
		return anchorAddr, []byte("offer-for-caller"), nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.AnswerInPrack(caller, 1, func() ([]byte, error) { return []byte("answer-for-callee"), nil }); err != nil {
		t.Fatal(err)
	}
	answer(c)
	wait(t, a)
	want := LateOffer{Tag: callee, Sender: caller, CSeq: 1, Anchor: anchorAddr.String(), SDP: "offer-for-caller",
		Acked: true, Ack: "answer-for-callee", Reliable: true, Prack: true}
	saved, ok := s.state("reliable")
	if !ok || saved.Late == nil || *saved.Late != want {
		t.Fatalf("saved early offer %+v (%v), want %+v", saved.Late, ok, want)
	}
	b, _ := nodeAs(t, s, "node-b")
	cb := b.Lookup(context.Background(), "reliable")
	if _, _, pending := cb.LateAck(caller, 1); pending {
		t.Fatal("the ACK on node-b waits for an answer its PRACK gave")
	}
}
