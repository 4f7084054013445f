package call

import (
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
)

// Each side's requests are sent on with the CSeq the far end expects
// after the requests sori sent in the dialog as that side.
func TestCSeqOffsetRewriting(t *testing.T) {
	type op struct {
		inject bool   // sori sends a request as the side (else: the side sends n)
		n      uint32 // the side's own CSeq
		want   uint32 // the CSeq that goes on the wire
	}
	tests := []struct {
		name string
		seen uint32 // highest CSeq of the side before
		ops  []op
	}{
		{"no request of sori's: unchanged", 1, []op{{n: 2, want: 2}, {n: 3, want: 3}, {n: 3, want: 3}}},
		{"one re-INVITE: later requests one up", 2, []op{{inject: true, want: 3}, {n: 3, want: 4}, {n: 4, want: 5}}},
		{"glare retry: two injected", 5, []op{{inject: true, want: 6}, {inject: true, want: 7}, {n: 6, want: 8}}},
		{"a side that never sent a request", 0, []op{{inject: true, want: 1}, {n: 100, want: 101}, {n: 101, want: 102}}},
		{"injected between the side's requests", 1, []op{{n: 2, want: 2}, {inject: true, want: 3}, {n: 3, want: 4}, {inject: true, want: 5}, {n: 4, want: 6}}},
		{"a gap in the side's numbering", 10, []op{{inject: true, want: 11}, {n: 20, want: 21}, {inject: true, want: 22}, {n: 21, want: 23}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Side{CSeq: tt.seen}
			for i, o := range tt.ops {
				var got uint32
				if o.inject {
					got = s.inject()
				} else {
					got = s.forward(o.n)
				}
				if got != o.want {
					t.Fatalf("step %d (%+v): CSeq %d on the wire, want %d", i, o, got, o.want)
				}
			}
		})
	}
}

// Through a Call: the side is picked by From tag, and an ACK's CSeq (its
// INVITE's) is rewritten without being counted.
func TestCallRewritesEachDirectionOnItsOwn(t *testing.T) {
	tb, _, _ := newTable(t, time.Hour)
	c := tb.Begin(calls.Record{CallID: "cseq"}, "caller-tag")
	answer(c) // caller CSeq 1
	c.mu.Lock()
	if n := c.st.Caller.inject(); n != 2 {
		t.Fatalf("injected as the caller with %d, want 2", n)
	}
	c.mu.Unlock()
	for _, tt := range []struct {
		tag        string
		n, want    uint32
		ack, ackTo uint32
	}{
		{"caller-tag", 2, 3, 2, 3},
		{"callee-tag", 7, 7, 7, 7}, // nothing was sent as the callee
		{"caller-tag", 3, 4, 3, 4},
	} {
		if got := c.Seen(tt.tag, tt.n); got != tt.want {
			t.Fatalf("%s CSeq %d sent on as %d, want %d", tt.tag, tt.n, got, tt.want)
		}
		if got := c.CSeqFor(tt.tag, tt.ack); got != tt.ackTo {
			t.Fatalf("%s ACK %d sent on as %d, want %d", tt.tag, tt.ack, got, tt.ackTo)
		}
	}
	if st := c.State(); st.Caller.CSeq != 3 || st.Caller.CSeqOffset != 1 || st.Callee.CSeq != 7 || st.Callee.CSeqOffset != 0 {
		t.Fatalf("caller %+v\ncallee %+v", st.Caller, st.Callee)
	}
	c.Bye("caller-tag")
}

func TestNextVersion(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"v=0\r\no=- 1001 1 IN IP4 127.0.0.1\r\ns=-\r\n", "v=0\r\no=- 1001 2 IN IP4 127.0.0.1\r\ns=-\r\n"},
		{"v=0\no=alice 7 41 IN IP6 ::1\nc=IN IP6 ::1\n", "v=0\no=alice 7 42 IN IP6 ::1\nc=IN IP6 ::1\n"},
		{"o=- 1 9 IN IP4 10.0.0.1", "o=- 1 10 IN IP4 10.0.0.1"},
		{"v=0\r\ns=no origin\r\n", "v=0\r\ns=no origin\r\n"},
		{"v=0\r\no=- 1 x IN IP4 10.0.0.1\r\n", "v=0\r\no=- 1 x IN IP4 10.0.0.1\r\n"},           // not a number: left alone
		{"v=0\r\na=foo:o=- 1 1 IN IP4 1.2.3.4\r\n", "v=0\r\na=foo:o=- 1 1 IN IP4 1.2.3.4\r\n"}, // not a line of its own
	} {
		if got := string(nextVersion([]byte(tt.in))); got != tt.want {
			t.Errorf("nextVersion(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestGlareDelayIsRFC3261s(t *testing.T) {
	for _, tt := range []struct {
		owner  bool
		lo, hi time.Duration
		max    int // what intN is asked for: [0, max)
	}{
		{true, 2100 * time.Millisecond, 4 * time.Second, 191},
		{false, 0, 2 * time.Second, 201},
	} {
		var asked int
		first := glareDelay(tt.owner, func(n int) int { asked = n; return 0 })
		last := glareDelay(tt.owner, func(n int) int { return n - 1 })
		if asked != tt.max || first != tt.lo || last != tt.hi {
			t.Fatalf("owner=%v: asked intN(%d), delays %v..%v; want intN(%d), %v..%v", tt.owner, asked, first, last, tt.max, tt.lo, tt.hi)
		}
	}
}
