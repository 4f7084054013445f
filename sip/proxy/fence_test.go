package proxy

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/chain/chaintest"
	"github.com/sori-voice/sori/sip/local"
)

// fencedCalls is the call table of a node cut off from the dialog store
// (fenced) or not, counting the lookups the proxy makes.
type fencedCalls struct {
	fenced, held bool // held: the call is one this node holds
	lookups      atomic.Int64
}

func (f *fencedCalls) Begin(calls.Record, string) *call.Call { panic("no new call here") }
func (f *fencedCalls) Lookup(context.Context, string) *call.Call {
	f.lookups.Add(1)
	return nil
}
func (f *fencedCalls) Fenced(_ string, hangup bool) bool { return f.fenced && !(hangup && f.held) }

// ackWrites counts the requests the proxy sends statelessly (ACKs).
type ackWrites struct {
	sender
	n atomic.Int64
}

func (w *ackWrites) Write(*sip.Request) error { w.n.Add(1); return nil }

// While this node is cut off from the dialog store (sip/call fence.go),
// an in-dialog request is answered 503 (with Retry-After, chain.Answer)
// without looking the call up or acting on it, and a 2xx's ACK is not
// relayed; otherwise both go on as before.
func TestFencedInDialog(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fenced     bool
		method     string
		wantCode   int
		wantWrites int64
		wantLookup int64
	}{
		{"BYE while fenced, a call not held: 503, the call untouched", true, "BYE", 503, 0, 0},
		{"re-INVITE while fenced: 503", true, "INVITE", 503, 0, 0},
		{"ACK while fenced: not relayed", true, "ACK", 0, 0, 0},
		{"ACK otherwise: relayed", false, "ACK", 0, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := &fencedCalls{fenced: tc.fenced}
			w := &ackWrites{}
			p := New(Config{Self: local.New("sori.test", "127.0.0.1:5060", "127.0.0.1:5061"), Sender: w, Calls: cs,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			req := chaintest.Request(t, chaintest.Raw(tc.method, "sip:bob@10.0.0.9:5062", "Route: <sip:edge.example;lr>"))
			code := 0
			if tc.method == "ACK" {
				p.forwardAck(t.Context(), req, true)
			} else {
				code = p.inDialog(t.Context(), nil, &chain.Request{Request: req}, true, nil).Code
			}
			if code != tc.wantCode || w.n.Load() != tc.wantWrites || cs.lookups.Load() != tc.wantLookup {
				t.Fatalf("code %d, %d sent, %d lookups; want %d, %d, %d", code, w.n.Load(), cs.lookups.Load(), tc.wantCode, tc.wantWrites, tc.wantLookup)
			}
		})
	}
}
