package call

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/timers"
)

var liveAnchor = netip.MustParseAddrPort("127.0.0.1:22223")

const (
	callerSDP = "v=0\r\no=- 1001 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 111\r\n"
	calleeSDP = "v=0\r\no=- 2002 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 111\r\n"
)

// mover plays the live anchor and the phones: what it was asked, in order.
type mover struct {
	mu       sync.Mutex
	log      []string
	reinvite []reinviteSent
	answers  map[string][]int // by the To side's tag: the codes it answers, in turn (none left: 200)
	noAnchor bool
	during   func() // called at each re-INVITE (unlocked)
}

type reinviteSent struct {
	to, from Side
	cseq     uint32
	sdp      string
}

func (m *mover) Reoffer(_ context.Context, callID, fromTag, toTag string, sdp []byte, from netip.Addr, encryption string, avoid netip.AddrPort) (netip.AddrPort, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, "offer "+callID+" "+fromTag+">"+toTag+" enc="+encryption+" avoid="+avoid.String()+" from="+from.String()+" "+origin(sdp))
	if m.noAnchor {
		return netip.AddrPort{}, nil, errors.New("no anchor")
	}
	return liveAnchor, []byte(strings.Replace(string(sdp), "m=audio 4000", "m=audio 30000", 1)), nil
}

func (m *mover) Reanswer(_ context.Context, on netip.AddrPort, callID, fromTag, toTag string, sdp []byte, from netip.Addr) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, "answer "+on.String()+" "+callID+" "+fromTag+"<"+toTag+" from="+from.String()+" "+origin(sdp))
	return []byte(strings.Replace(string(sdp), "m=audio 6000", "m=audio 30002", 1)), nil
}

func (m *mover) Reinvite(_ context.Context, callID string, to, from Side, cseq uint32, sdp []byte) (int, []byte, error) {
	if m.during != nil {
		m.during()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reinvite = append(m.reinvite, reinviteSent{to, from, cseq, string(sdp)})
	m.log = append(m.log, "re-INVITE "+callID+" to "+to.Tag+" "+origin(sdp))
	code := 200
	if q := m.answers[to.Tag]; len(q) > 0 {
		code, m.answers[to.Tag] = q[0], q[1:]
	}
	if code != 200 {
		return code, nil, nil
	}
	// Each phone answers with its own SDP, a new version.
	if to.Tag == "callee-tag" {
		return 200, nextVersion([]byte(calleeSDP)), nil
	}
	return 200, nextVersion([]byte(callerSDP)), nil
}

func (m *mover) steps() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.log...)
}

// origin is an SDP's o= line.
func origin(sdp []byte) string {
	for _, l := range strings.Split(string(sdp), "\r\n") {
		if strings.HasPrefix(l, "o=") {
			return l
		}
	}
	return "no o="
}

func moveTable(t *testing.T) (*Table, *fakes, *mover, *[]bool) {
	t.Helper()
	f := &fakes{slots: map[string]int{}, tolls: map[string]bool{}, quality: map[string]calls.MediaQuality{}}
	m := &mover{answers: map[string][]int{}}
	tb := New(Config{Records: f, Media: f, Slots: f, Tolls: f, Hangup: f, Reanchor: m, Reinvite: m, DialogTimeout: time.Hour,
		Timers: &timers.Set{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var owners []bool
	tb.glare = func(owner bool) time.Duration { owners = append(owners, owner); return time.Millisecond }
	return tb, f, m, &owners
}

// answeredOn is a call answered on the anchor at, with both SDPs noted
// as the proxy notes them (the caller's CSeq 2: its INVITE after a 407).
func answeredOn(tb *Table, id string, at netip.AddrPort) *Call {
	c := tb.Begin(calls.Record{CallID: id, Caller: "alice"}, "caller-tag")
	c.Offered("srtp")
	c.SDP("caller-tag", []byte(callerSDP))
	c.Anchored(at)
	c.SDP("callee-tag", []byte(calleeSDP))
	c.Answered(Answer{Code: 200, Reason: "OK", Contact: "sip:bob@127.0.0.1:5062",
		Caller: Side{Target: "sip:alice@127.0.0.1:5061", Dest: "127.0.0.1:5061", Shown: "sip:alice@127.0.0.1:5061;alias=x", Tag: "caller-tag", ID: "sip:alice@sori.test", CSeq: 2},
		Callee: Side{Target: "sip:bob@127.0.0.1:5062", Dest: "127.0.0.1:5062", Shown: "sip:bob@127.0.0.1:5062;alias=y", Tag: "callee-tag", ID: "sip:bob@sori.test"}, Dialog: true})
	return c
}

func waitMoves(t *testing.T, tb *Table) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tb.Wait(ctx); err != nil {
		t.Fatal("moves did not finish")
	}
}

// The whole move of an answered call: the caller's SDP offered to the
// live anchor with both tags, the callee re-INVITEd as the caller with the
// anchor's SDP (a new o= version, CSeq above the caller's), its answer to
// the anchor, the caller re-INVITEd as the callee; then the call is on
// the new anchor, its later requests carry the offsets, its record says
// it moved, and its end deletes the media there.
func TestAnAnsweredCallMovesByReinviteToBothPhones(t *testing.T) {
	tb, f, m, _ := moveTable(t)
	c := answeredOn(tb, "move", anchorAddr)
	other := answeredOn(tb, "stays", liveAnchor)
	var movingSeen []bool // the phones' own re-INVITEs get 491 meanwhile (sip/proxy)
	m.during = func() { movingSeen = append(movingSeen, c.Moving()) }
	tb.AnchorDead(anchorAddr)
	waitMoves(t, tb)

	want := []string{
		"offer move caller-tag>callee-tag enc=srtp avoid=127.0.0.1:22222 from=127.0.0.1 o=- 1001 1 IN IP4 127.0.0.1",
		"re-INVITE move to callee-tag o=- 1001 2 IN IP4 127.0.0.1",
		"answer 127.0.0.1:22223 move caller-tag<callee-tag from=127.0.0.1 o=- 2002 2 IN IP4 127.0.0.1",
		"re-INVITE move to caller-tag o=- 2002 3 IN IP4 127.0.0.1",
	}
	if got := m.steps(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(movingSeen) != 2 || !movingSeen[0] || !movingSeen[1] {
		t.Fatalf("Moving() during the re-INVITEs: %v", movingSeen)
	}
	toCallee, toCaller := m.reinvite[0], m.reinvite[1]
	if toCallee.cseq != 3 || toCallee.from.Tag != "caller-tag" || toCallee.from.Shown != "sip:alice@127.0.0.1:5061;alias=x" || !strings.Contains(toCallee.sdp, "m=audio 30000") {
		t.Fatalf("re-INVITE to the callee %+v", toCallee)
	}
	if toCaller.cseq != 1 || toCaller.from.Tag != "callee-tag" || toCaller.to.Tag != "caller-tag" || !strings.Contains(toCaller.sdp, "m=audio 30002") {
		t.Fatalf("re-INVITE to the caller %+v", toCaller)
	}
	if a, _ := c.Anchor(); a != liveAnchor || c.Moving() {
		t.Fatalf("on %s, moving %v", a, c.Moving())
	}
	if got := c.Seen("caller-tag", 3); got != 4 {
		t.Fatalf("the caller's next request goes on with CSeq %d, want 4", got)
	}
	if got := c.Seen("callee-tag", 1); got != 2 {
		t.Fatalf("the callee's first request goes on with CSeq %d, want 2", got)
	}
	st := c.State()
	if st.Callee.SDP != string(nextVersion([]byte(calleeSDP))) || st.Caller.SDP != string(nextVersion([]byte(callerSDP))) {
		t.Fatalf("the phones' new SDPs not kept:\n%s\n%s", st.Caller.SDP, st.Callee.SDP)
	}
	// Told again (the anchor is still dead): nothing moves twice.
	tb.AnchorDead(anchorAddr)
	waitMoves(t, tb)
	if n := len(m.steps()); n != 4 {
		t.Fatalf("%d steps after a second report", n)
	}
	c.Bye("callee-tag")
	other.Bye("caller-tag")
	waitMoves(t, tb)
	f.mu.Lock()
	defer f.mu.Unlock()
	var moved calls.Record
	for _, r := range f.records {
		if r.CallID == "move" {
			moved = r
		} else if len(r.Reanchored) != 0 {
			t.Fatalf("a call on the live anchor moved: %+v", r.Reanchored)
		}
	}
	if len(moved.Reanchored) != 1 || moved.Disposition != calls.Answered {
		t.Fatalf("record %+v", moved)
	}
	if r := moved.Reanchored[0]; r.From != anchorAddr.String() || r.To != liveAnchor.String() || !r.Answered || r.Error != "" || r.At.IsZero() {
		t.Fatalf("reanchor %+v", r)
	}
}

// A 491 (the phone's own re-INVITE crossed sori's) is sent again after
// §14.1's delay, with a new CSeq: to the callee as the Call-ID's owner (the
// caller), to the caller as not its owner.
func TestGlareIsRetried(t *testing.T) {
	tb, _, m, owners := moveTable(t)
	m.answers["callee-tag"] = []int{491, 491}
	m.answers["caller-tag"] = []int{491}
	c := answeredOn(tb, "glare", anchorAddr)
	tb.AnchorDead(anchorAddr)
	waitMoves(t, tb)
	var cseqs []uint32
	for _, r := range m.reinvite {
		cseqs = append(cseqs, r.cseq)
	}
	if len(cseqs) != 5 || cseqs[0] != 3 || cseqs[1] != 4 || cseqs[2] != 5 || cseqs[3] != 1 || cseqs[4] != 2 {
		t.Fatalf("re-INVITE CSeqs %v, want [3 4 5 1 2]", cseqs)
	}
	if len(*owners) != 3 || !(*owners)[0] || !(*owners)[1] || (*owners)[2] {
		t.Fatalf("glare waits as owner %v, want [true true false]", *owners)
	}
	if a, _ := c.Anchor(); a != liveAnchor {
		t.Fatalf("on %s", a)
	}
	if got := c.Seen("caller-tag", 3); got != 6 {
		t.Fatalf("the caller's next CSeq goes on as %d, want 6 (three re-INVITEs as it)", got)
	}
	c.Bye("caller-tag")
}

// A phone that refuses the re-INVITE: the call ends with BYE to both
// sides, its media deleted on the new anchor, its record saying why.
func TestAPhoneRefusingTheReinviteEndsTheCall(t *testing.T) {
	for _, tt := range []struct {
		refuses string
		invites int
	}{{"callee-tag", 1}, {"caller-tag", 2}} {
		t.Run(tt.refuses, func(t *testing.T) {
			tb, f, m, _ := moveTable(t)
			m.answers[tt.refuses] = []int{488}
			answeredOn(tb, "refused", anchorAddr)
			tb.AnchorDead(anchorAddr)
			waitMoves(t, tb)
			if len(m.reinvite) != tt.invites {
				t.Fatalf("%d re-INVITEs, want %d", len(m.reinvite), tt.invites)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.records) != 1 || len(f.byes) != 2 || len(f.deletes) != 1 || tb.Len() != 0 {
				t.Fatalf("%d records, BYEs %v, deletes %v, %d held", len(f.records), f.byes, f.deletes, tb.Len())
			}
			r := f.records[0]
			if r.Disposition != calls.ReanchorFailed || r.HangupBy != "reanchor" || len(r.Reanchored) != 1 ||
				!strings.Contains(r.Reanchored[0].Error, "488") || r.Reanchored[0].To != liveAnchor.String() {
				t.Fatalf("record %+v %+v", r, r.Reanchored)
			}
		})
	}
}

// With no live anchor to take it, the call stays as it is, and moves when
// the dead anchor is reported again and one takes it.
func TestNoLiveAnchorLeavesTheCallForTheNextReport(t *testing.T) {
	tb, f, m, _ := moveTable(t)
	m.noAnchor = true
	c := answeredOn(tb, "wait", anchorAddr)
	tb.AnchorDead(anchorAddr)
	waitMoves(t, tb)
	if a, _ := c.Anchor(); a != anchorAddr || c.Moving() || len(m.reinvite) != 0 || tb.Len() != 1 {
		t.Fatalf("on %s, moving %v, %d re-INVITEs", a, c.Moving(), len(m.reinvite))
	}
	m.mu.Lock()
	m.noAnchor = false
	m.mu.Unlock()
	tb.AnchorDead(anchorAddr)
	waitMoves(t, tb)
	if a, _ := c.Anchor(); a != liveAnchor || len(m.reinvite) != 2 {
		t.Fatalf("on %s after the second report, %d re-INVITEs", a, len(m.reinvite))
	}
	c.Bye("caller-tag")
	waitMoves(t, tb)
	if len(f.records) != 1 {
		t.Fatalf("%d records", len(f.records))
	}
}

// A call still ringing whose SDP answer finds its anchor dead: the
// caller's offer goes to a live anchor with that answer (the caller gets
// the new anchor's SDP at once), and once the caller has ACKed the 2xx the
// callee gets a re-INVITE with the new anchor's SDP for it.
func TestARingingCallIsReofferedOnItsAnswer(t *testing.T) {
	tb, f, m, _ := moveTable(t)
	c := tb.Begin(calls.Record{CallID: "ringing"}, "caller-tag")
	c.SDP("caller-tag", []byte(callerSDP))
	c.Anchored(anchorAddr)
	forCaller, err := c.Reoffer(context.Background(), anchorAddr, "callee-tag", []byte(calleeSDP), netip.MustParseAddr("127.0.0.1"))
	if err != nil || !strings.Contains(string(forCaller), "m=audio 30002") {
		t.Fatalf("reoffer: %v\n%s", err, forCaller)
	}
	if a, _ := c.Anchor(); a != liveAnchor {
		t.Fatalf("on %s", a)
	}
	// Another branch's answer afterwards goes to the new anchor, no new offer.
	if _, err := c.Reoffer(context.Background(), anchorAddr, "other-branch", []byte(calleeSDP), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if got := m.steps(); len(got) != 3 || !strings.HasPrefix(got[0], "offer ringing caller-tag>callee-tag") || !strings.HasPrefix(got[2], "answer 127.0.0.1:22223 ringing caller-tag<other-branch") {
		t.Fatalf("steps %q", got)
	}
	c.Acked() // before the answer: nothing
	answer(c)
	if len(m.reinvite) != 0 {
		t.Fatal("re-INVITE before the ACK")
	}
	c.Acked()
	waitMoves(t, tb)
	if len(m.reinvite) != 1 || m.reinvite[0].to.Tag != "callee-tag" || !strings.Contains(m.reinvite[0].sdp, "m=audio 30000") || m.reinvite[0].cseq != 2 {
		t.Fatalf("re-INVITEs %+v", m.reinvite)
	}
	c.Acked() // a retransmitted ACK: no second re-INVITE
	waitMoves(t, tb)
	c.Bye("caller-tag")
	waitMoves(t, tb)
	if len(m.reinvite) != 1 || len(f.records) != 1 || len(f.records[0].Reanchored) != 1 || f.records[0].Reanchored[0].Answered {
		t.Fatalf("%d re-INVITEs, records %+v", len(m.reinvite), f.records)
	}
}
