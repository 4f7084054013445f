package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/anchoring"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/chain"
)

func TestReliableProvisional(t *testing.T) {
	tests := []struct {
		name    string
		headers []string // name: value
		want    bool
	}{
		{"Require 100rel and RSeq", []string{"Require: 100rel", "RSeq: 1"}, true},
		{"100rel among others, any case", []string{"Require: timer, 100REL", "RSeq: 7"}, true},
		{"100rel in a second Require", []string{"Require: timer", "Require: 100rel", "RSeq: 7"}, true},
		{"no RSeq", []string{"Require: 100rel"}, false},
		{"RSeq without Require", []string{"RSeq: 1"}, false},
		{"100rel only supported", []string{"Supported: 100rel", "RSeq: 1"}, false},
		{"another option", []string{"Require: precondition", "RSeq: 1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := sip.NewResponse(183, "Session Progress")
			for _, h := range tt.headers {
				name, value := splitHeader(h)
				res.AppendHeader(sip.NewHeader(name, value))
			}
			if got := reliable(res); got != tt.want {
				t.Fatalf("reliable %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRAckCSeq(t *testing.T) {
	tests := []struct {
		rack string // "": none
		want uint32
		ok   bool
	}{
		{"1 314159 INVITE", 314159, true},
		{"  2   7   invite ", 7, true},
		{"", 0, false},
		{"1 314159", 0, false},
		{"1 x INVITE", 0, false},
		{"1 2 UPDATE", 0, false},
		{"1 4294967296 INVITE", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.rack, func(t *testing.T) {
			req := sip.NewRequest(sip.PRACK, sip.Uri{Scheme: "sip", Host: "192.0.2.2"})
			if tt.rack != "" {
				req.AppendHeader(sip.NewHeader("RAck", tt.rack))
			}
			if got, ok := rackCSeq(req); got != tt.want || ok != tt.ok {
				t.Fatalf("rackCSeq %d %v, want %d %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func splitHeader(h string) (string, string) {
	for i := range h {
		if h[i] == ':' {
			return h[:i], h[i+2:]
		}
	}
	return h, ""
}

// lateMedia is a Media for an INVITE without SDP: it counts the ng
// offers of replies and the answers, and rewrites their SDP.
type lateMedia struct {
	offers, answers int
	answerErr       error
	deleted         chan string // call-id, from-tag and via-branch of each branch delete
}

var lateAnchor = netip.MustParseAddrPort("127.0.0.1:22222")

func (m *lateMedia) Offer(_ context.Context, req *sip.Request, on netip.AddrPort, _ string) (netip.AddrPort, bool, error) {
	return on, false, nil // the INVITE has no SDP
}
func (m *lateMedia) Answer(context.Context, netip.AddrPort, *sip.Request, *sip.Response, string) error {
	return nil
}
func (m *lateMedia) DeleteBranch(_ context.Context, _ netip.AddrPort, callID, fromTag, branch string) error {
	if m.deleted != nil {
		m.deleted <- strings.TrimSpace(callID + " " + fromTag + " " + branch)
	}
	return nil
}
func (m *lateMedia) OfferInReply(_ context.Context, _ netip.AddrPort, _ *sip.Request, res *sip.Response, _ string) (netip.AddrPort, bool, error) {
	m.offers++
	res.SetBody(fmt.Appendf(nil, "anchor-offer-%d", m.offers))
	return lateAnchor, true, nil
}
func (m *lateMedia) AnswerInAck(_ context.Context, on netip.AddrPort, ack *sip.Request, _ bool) (bool, error) {
	m.answers++
	if on != lateAnchor {
		return false, fmt.Errorf("answer on %v", on)
	}
	if m.answerErr != nil {
		return false, m.answerErr
	}
	ack.SetBody(fmt.Appendf(nil, "anchor-answer-%d", m.answers))
	return true, nil
}

// An INVITE without SDP whose callee offers in a reliable 18x, through
// the fork and the PRACK's forwarding: what the caller gets in each 18x
// and 2xx, what the callee gets in the PRACK, and the ng commands made.
func TestReliableOfferThroughTheProxy(t *testing.T) {
	const calleeSDP = "v=0\r\nc=IN IP4 192.0.2.2\r\nm=audio 2000 RTP/AVP 0\r\n"
	const callerSDP = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 1000 RTP/AVP 0\r\n"
	type step struct {
		kind string // "183", "183-unreliable", "200", "200-nosdp", "486" (from tag), "prack" (to tag), "prack-nosdp", "ack", "won" (tag's 2xx goes up)
		tag  string

		wantBody    string // the 18x or 2xx as the caller gets it, the PRACK as the callee gets it
		wantErr     error  // lateOffer's
		wantCode    int    // the PRACK's refusal; 0: it goes on
		wantOffers  int
		wantAnswers int
		wantDeleted string // won: the early dialog's delete (call-id and from-tag)
	}
	tests := []struct {
		name      string
		answerErr error
		steps     []step
	}{
		{"offer in a reliable 183, answer in the PRACK, the 200 repeats the offer", nil, []step{
			{kind: "183", tag: "bob", wantBody: "anchor-offer-1", wantOffers: 1},
			{kind: "183", tag: "bob", wantBody: "anchor-offer-1", wantOffers: 1}, // its retransmission
			{kind: "prack", tag: "bob", wantBody: "anchor-answer-1", wantOffers: 1, wantAnswers: 1},
			{kind: "200", tag: "bob", wantBody: "anchor-offer-1", wantOffers: 1, wantAnswers: 1},
			{kind: "ack", wantOffers: 1, wantAnswers: 1},
		}},
		{"a PRACK without SDP and a 200 without SDP go on as they are", nil, []step{
			{kind: "183", tag: "bob", wantBody: "anchor-offer-1", wantOffers: 1},
			{kind: "prack-nosdp", tag: "bob", wantOffers: 1},
			{kind: "prack", tag: "bob", wantBody: "anchor-answer-1", wantOffers: 1, wantAnswers: 1},
			{kind: "200-nosdp", tag: "bob", wantOffers: 1, wantAnswers: 1},
		}},
		{"an unreliable 183's SDP goes up as it is; the 200's offer is anchored", nil, []step{
			{kind: "183-unreliable", tag: "bob", wantBody: calleeSDP},
			{kind: "prack", tag: "bob", wantBody: callerSDP},
			{kind: "200", tag: "bob", wantBody: "anchor-offer-1", wantOffers: 1},
		}},
		{"another fork's reliable 183 offer goes up with its own anchor SDP; each PRACK answers its own", nil, []step{
			{kind: "183", tag: "bob-1", wantBody: "anchor-offer-1", wantOffers: 1},
			{kind: "183", tag: "bob-2", wantBody: "anchor-offer-2", wantOffers: 2},
			{kind: "183", tag: "bob-2", wantBody: "anchor-offer-2", wantOffers: 2}, // its retransmission
			{kind: "prack", tag: "bob-2", wantBody: "anchor-answer-1", wantOffers: 2, wantAnswers: 1},
			{kind: "prack", tag: "bob-1", wantBody: "anchor-answer-2", wantOffers: 2, wantAnswers: 2},
			{kind: "200-nosdp", tag: "bob-2", wantOffers: 2, wantAnswers: 2},
			{kind: "won", tag: "bob-2", wantDeleted: "prack-1 bob-1", wantOffers: 2, wantAnswers: 2},
			{kind: "200", tag: "bob-1", wantBody: calleeSDP, wantErr: call.ErrOtherFork, wantOffers: 2, wantAnswers: 2},
		}},
		{"the 183's callee fails: another fork's reliable 183 offer is taken", nil, []step{
			{kind: "183", tag: "bob-1", wantBody: "anchor-offer-1", wantOffers: 1},
			{kind: "486", tag: "bob-1", wantOffers: 1},
			{kind: "183", tag: "bob-2", wantBody: "anchor-offer-2", wantOffers: 2},
			{kind: "prack", tag: "bob-2", wantBody: "anchor-answer-1", wantOffers: 2, wantAnswers: 1},
		}},
		{"the anchor refuses the PRACK's answer: 488", errors.New("ng: error"), []step{
			{kind: "183", tag: "bob", wantBody: "anchor-offer-1", wantOffers: 1},
			{kind: "prack", tag: "bob", wantCode: 488, wantOffers: 1, wantAnswers: 1},
		}},
		{"the anchor is dead: 503", anchoring.ErrDead, []step{
			{kind: "183", tag: "bob", wantBody: "anchor-offer-1", wantOffers: 1},
			{kind: "prack", tag: "bob", wantCode: 503, wantOffers: 1, wantAnswers: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			media := &lateMedia{answerErr: tt.answerErr, deleted: make(chan string, 4)}
			p := newTestProxy(t, "")
			p.cfg.Media = media
			tb := call.New(call.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			in := aliceInvite("prack-1", 3, "")
			c := tb.Begin(calls.Record{CallID: "prack-1"}, "alice-tag")
			f := newFork(p, in, nil, c, chain.Caller{User: "alice"}, [][]target{{{}}}, true)
			if r := p.offer(context.Background(), in, f, netip.AddrPort{}, ""); r.Code != 0 || !f.late {
				t.Fatalf("offer: %v, late %v", r, f.late)
			}
			for i, s := range tt.steps {
				var body string
				var err error
				code := 0
				switch s.kind {
				case "183", "183-unreliable", "200", "200-nosdp", "486":
					res := lateReply(in, s.kind, s.tag, calleeSDP)
					err = f.lateOffer(&branch{}, res)
					if s.kind != "486" {
						body = string(res.Body())
					}
				case "prack", "prack-nosdp":
					sdp := callerSDP
					if s.kind == "prack-nosdp" {
						sdp = ""
					}
					req := prackOf(in, s.tag, sdp)
					code = p.prackAnswer(c, req).Code
					if code == 0 {
						body = string(req.Body())
					}
				case "won":
					f.mu.Lock()
					f.dropLostEarly(lateReply(in, "200-nosdp", s.tag, ""))
					f.mu.Unlock()
					select {
					case got := <-media.deleted:
						if got != s.wantDeleted {
							t.Fatalf("step %d: delete %q, want %q", i, got, s.wantDeleted)
						}
					case <-time.After(5 * time.Second):
						t.Fatalf("step %d: no delete of the lost early dialog", i)
					}
				case "ack":
					ack := prackOf(in, "bob", "")
					ack.Method = sip.ACK
					if !p.lateAck(c, ack, in.CSeq().SeqNo) {
						t.Fatalf("step %d: the ACK without SDP ends the call", i)
					}
				}
				if body != s.wantBody || !errors.Is(err, s.wantErr) || code != s.wantCode || media.offers != s.wantOffers || media.answers != s.wantAnswers {
					t.Fatalf("step %d (%s %s): body %q, error %v, code %d, %d offers, %d answers; want %q, %v, %d, %d, %d",
						i, s.kind, s.tag, body, err, code, media.offers, media.answers, s.wantBody, s.wantErr, s.wantCode, s.wantOffers, s.wantAnswers)
				}
			}
		})
	}
}

// lateReply is the callee tag's response of kind to in, with sdp unless
// kind says none.
func lateReply(in *sip.Request, kind, tag, sdp string) *sip.Response {
	code, reason := 183, "Session Progress"
	switch kind {
	case "200", "200-nosdp":
		code, reason = 200, "OK"
	case "486":
		code, reason = 486, "Busy Here"
	}
	res := sip.NewResponseFromRequest(in, code, reason, nil)
	res.To().Params.Add("tag", tag)
	if kind == "183" {
		res.AppendHeader(sip.NewHeader("Require", "100rel"))
		res.AppendHeader(sip.NewHeader("RSeq", "1"))
	}
	if kind != "200-nosdp" && kind != "486" {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody([]byte(sdp))
	}
	res.SetSource("192.0.2.2:5060")
	return res
}

// prackOf is alice's PRACK of the callee tag's reliable 18x to in, with
// sdp ("": none).
func prackOf(in *sip.Request, tag, sdp string) *sip.Request {
	req := sip.NewRequest(sip.PRACK, sip.Uri{Scheme: "sip", User: "bob", Host: "192.0.2.2"})
	req.AppendHeader(sip.HeaderClone(in.From()))
	to := sip.HeaderClone(in.To()).(*sip.ToHeader)
	to.Params.Add("tag", tag)
	req.AppendHeader(to)
	req.AppendHeader(sip.NewHeader("Call-ID", in.CallID().Value()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: in.CSeq().SeqNo + 1, MethodName: sip.PRACK})
	req.AppendHeader(sip.NewHeader("RAck", fmt.Sprintf("1 %d INVITE", in.CSeq().SeqNo)))
	if sdp != "" {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody([]byte(sdp))
	}
	req.SetSource("192.0.2.1:5060")
	return req
}
