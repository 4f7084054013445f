package proxy

import (
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/chain/chaintest"
)

// dialogRequest is a request inside the dialog cseq-1 from the side fromTag.
func dialogRequest(t *testing.T, method, fromTag string, cseq uint32) *sip.Request {
	t.Helper()
	return chaintest.Request(t, method+" sip:peer@10.0.0.9:5062 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-cseq;rport\n"+
		"Max-Forwards: 70\nFrom: <sip:x@sori.test>;tag="+fromTag+"\nTo: <sip:y@sori.test>;tag=other\nCall-ID: cseq-1\n"+
		"CSeq: "+strconv.FormatUint(uint64(cseq), 10)+" "+method+"\nContent-Length: 0\n\n")
}

// After sori sent re-INVITEs in a dialog as a side (CSeqOffset), that
// side's requests go on with their CSeq moved up, and their responses come
// back with the CSeq the side used; the other side's and an ACK's follow
// their own offset. The copy that came in is never written to.
func TestInDialogCSeqIsRewrittenBothWays(t *testing.T) {
	p := newTestProxy(t, "")
	tb := call.New(call.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c := tb.Load(t.Context(), call.State{Record: calls.Record{CallID: "cseq-1"}, Phase: call.Answered, Dialog: true, Expiry: time.Now().Add(time.Hour),
		Caller: call.Side{Target: "sip:alice@192.168.1.20:5060", Tag: "a-tag", CSeq: 2, CSeqOffset: 1},
		Callee: call.Side{Target: "sip:bob@10.0.0.9:5062", Tag: "b-tag", CSeq: 0, CSeqOffset: 2}})
	for _, tc := range []struct {
		name     string
		method   string
		fromTag  string
		cseq     uint32
		wantWire uint32
	}{
		{"caller's BYE after one re-INVITE as it", "BYE", "a-tag", 3, 4},
		{"caller's re-INVITE", "INVITE", "a-tag", 4, 5},
		{"callee's first request after two as it", "INFO", "b-tag", 7, 9},
		{"a tag of neither side: the callee's offset", "INFO", "x-tag", 1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := dialogRequest(t, tc.method, tc.fromTag, tc.cseq)
			rec := &chaintest.Recorder{}
			f := newFork(p, in, rec, nil, chain.Caller{}, [][]target{{{uri: in.Recipient}}}, false)
			f.dialog, f.cseq = c, c.Seen(tc.fromTag, tc.cseq)
			out, err := p.prepare(in, target{uri: in.Recipient}, false, "")
			if err != nil {
				t.Fatal(err)
			}
			f.sending(out)
			if out.CSeq().SeqNo != tc.wantWire || out.CSeq().MethodName != sip.RequestMethod(tc.method) || in.CSeq().SeqNo != tc.cseq {
				t.Fatalf("sent on with CSeq %d %s (in: %d), want %d", out.CSeq().SeqNo, out.CSeq().MethodName, in.CSeq().SeqNo, tc.wantWire)
			}
			res := sip.NewResponseFromRequest(out, 200, "OK", nil)
			f.relay(res)
			if len(rec.Responses) != 1 || rec.Responses[0].CSeq().SeqNo != tc.cseq || res.CSeq().SeqNo != tc.wantWire {
				t.Fatalf("response back with CSeq %d, want %d", rec.Responses[0].CSeq().SeqNo, tc.cseq)
			}
			if got := c.CSeqFor(tc.fromTag, tc.cseq); got != tc.wantWire {
				t.Fatalf("its ACK would go on with CSeq %d, want %d", got, tc.wantWire)
			}
		})
	}
}

// A dialog with no request of sori's in it is forwarded as it is.
func TestNoOffsetLeavesCSeqAlone(t *testing.T) {
	p := newTestProxy(t, "")
	in := dialogRequest(t, "BYE", "a-tag", 5)
	f := newFork(p, in, &chaintest.Recorder{}, nil, chain.Caller{}, nil, false)
	out, err := p.prepare(in, target{uri: in.Recipient}, false, "")
	if err != nil {
		t.Fatal(err)
	}
	before := out.CSeq()
	f.sending(out)
	if out.CSeq() != before || out.CSeq().SeqNo != 5 {
		t.Fatalf("CSeq %v", out.CSeq())
	}
}
