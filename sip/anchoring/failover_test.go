package anchoring

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/calls"
)

// deaths collects what a pool reports dead (and its media timeouts, none here).
type deaths struct {
	mu   sync.Mutex
	dead map[netip.AddrPort]int
	c    chan netip.AddrPort
}

func newDeaths() *deaths {
	return &deaths{dead: map[netip.AddrPort]int{}, c: make(chan netip.AddrPort, 100)}
}

func (d *deaths) MediaTimeout(netip.AddrPort, string, map[string]calls.MediaQuality) {}
func (d *deaths) AnchorDead(a netip.AddrPort) {
	d.mu.Lock()
	d.dead[a]++
	d.mu.Unlock()
	d.c <- a
}

func (d *deaths) count(a netip.AddrPort) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dead[a]
}

func (f *fakeAnchor) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func failoverPool(t *testing.T, after time.Duration, anchors ...*fakeAnchor) *Pool {
	t.Helper()
	var addrs []netip.AddrPort
	for _, a := range anchors {
		addrs = append(addrs, a.srv.Addr())
	}
	p, err := New(Config{Anchors: addrs, Timeout: 100 * time.Millisecond, PingInterval: 50 * time.Millisecond, FailoverAfter: after,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// An anchor that stops answering pings is down at once (no new calls)
// and dead after FailoverAfter: reported after every ping round from
// then on, never before; the live one never is. Once it answers again it
// is neither.
func TestAnAnchorFailingItsPingsForFailoverAfterIsDead(t *testing.T) {
	a, b := startFake(t), startFake(t)
	const after = 400 * time.Millisecond
	p := failoverPool(t, after, a, b)
	d := newDeaths()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx, d)

	a.setDown(true)
	stopped := time.Now()
	var first time.Time
	select {
	case got := <-d.c:
		first = time.Now()
		if got != a.srv.Addr() {
			t.Fatalf("%s reported dead, want %s", got, a.srv.Addr())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the silent anchor was never reported dead")
	}
	// A ping sent just before it went silent, answered after, may start
	// the failure a moment before stopped.
	if el := first.Sub(stopped); el < after-20*time.Millisecond {
		t.Fatalf("reported dead %v after it stopped answering, before failover_after %v", el, after)
	}
	if p.anchors[0].isUp() || !p.anchors[1].isUp() {
		t.Fatal("the dead anchor is up, or the live one down")
	}
	for i := 0; i < 6; i++ {
		if c := p.candidates("x" + strconv.Itoa(i)); len(c) != 1 || c[0].addr != b.srv.Addr() {
			t.Fatalf("new calls may go to %v", c)
		}
	}
	// Told again each round while it stays dead (calls answered there since move too).
	select {
	case <-d.c:
	case <-time.After(2 * time.Second):
		t.Fatal("the dead anchor was reported once only")
	}
	if got := p.Dead(); len(got) != 1 || got[0] != a.srv.Addr() {
		t.Fatalf("Dead() = %v", got)
	}

	a.setDown(false)
	for deadline := time.Now().Add(5 * time.Second); len(p.Dead()) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the anchor answers again but is still dead")
		}
	}
	if !p.anchors[0].isUp() {
		t.Fatal("back, but not up")
	}
	if d.count(b.srv.Addr()) != 0 {
		t.Fatal("the live anchor was reported dead")
	}
}

// A failure shorter than FailoverAfter is no death; 0 is never.
func TestAShortFailureOrNoFailoverIsNoDeath(t *testing.T) {
	for _, tt := range []struct {
		name  string
		after time.Duration
		down  time.Duration
	}{{"shorter than failover_after", 2 * time.Second, 150 * time.Millisecond}, {"failover off", 0, 600 * time.Millisecond}} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := startFake(t), startFake(t)
			p := failoverPool(t, tt.after, a, b)
			d := newDeaths()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go p.Run(ctx, d)
			a.setDown(true)
			for deadline := time.Now().Add(5 * time.Second); p.anchors[0].isUp(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the silent anchor was never marked down")
				}
			}
			time.Sleep(tt.down) // the failure lasts this long (the test's subject, not a synchronisation)
			a.setDown(false)
			for deadline := time.Now().Add(5 * time.Second); !p.anchors[0].isUp(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the anchor answers again but is still down")
				}
			}
			if n := d.count(a.srv.Addr()); n != 0 || len(p.Dead()) != 0 {
				t.Fatalf("reported dead %d times", n)
			}
		})
	}
}

// A call's own command that times out counts as a failure too: with no
// ping answered either, the anchor is dead after FailoverAfter, counted
// from that command; an answer to it then fails at once with ErrDead. A
// ping that answers in between wipes the failure out.
func TestACallsCommandTimingOutStartsTheFailure(t *testing.T) {
	a := startFake(t)
	const after = 300 * time.Millisecond
	p := failoverPool(t, after, a) // not Run: no pings
	a.setDown(true)
	sent := time.Now()
	req := invite(t, "cmd-timeout", offerSDP, "application/sdp")
	if _, _, err := p.Offer(context.Background(), req, a.srv.Addr(), ""); !Gone(err) {
		t.Fatalf("offer to a silent anchor: %v", err)
	}
	if len(p.Dead()) != 0 {
		t.Fatal("dead on its first failure")
	}
	time.Sleep(after - time.Since(sent)) // until failover_after has passed since the command
	p.pingAll(context.Background())
	if got := p.Dead(); len(got) != 1 || p.anchors[0].isUp() {
		t.Fatalf("failing since the command %v ago, not dead (dead %v)", time.Since(sent), got)
	}
	start := time.Now()
	err := p.Answer(context.Background(), a.srv.Addr(), req, responseWithSDP(t, "cmd-timeout"), "")
	if !errors.Is(err, ErrDead) || !Gone(err) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("answer on a dead anchor: %v after %v", err, time.Since(start))
	}
}

// Reoffer sends the side's SDP as a new offer, with both tags, to a live
// anchor other than the dead one, and Reanswer the other side's answer to
// that anchor: each returns the anchor's SDP.
func TestReofferGoesToALiveAnchorOtherThanTheDeadOne(t *testing.T) {
	dead, live := startFake(t), startFake(t)
	p := failoverPool(t, time.Second, dead, live)
	ctx := context.Background()
	for i := 0; i < 6; i++ { // whichever anchor the Call-ID hashes to
		id := "moved-" + strconv.Itoa(i)
		on, sdp, err := p.Reoffer(ctx, id, "caller-tag", "callee-tag", []byte(offerSDP), netip.MustParseAddr("198.51.100.7"), SRTP, dead.srv.Addr())
		if err != nil || on != live.srv.Addr() || !strings.Contains(string(sdp), "203.0.113.5") {
			t.Fatalf("%s: on %s, %v\n%s", id, on, err, sdp)
		}
		back, err := p.Reanswer(ctx, on, id, "caller-tag", "callee-tag", []byte(offerSDP), netip.MustParseAddr("203.0.113.9"))
		if err != nil || !strings.Contains(string(back), "203.0.113.5") {
			t.Fatalf("%s: reanswer %v\n%s", id, err, back)
		}
	}
	if n := len(dead.commands()); n != 0 {
		t.Fatalf("the dead anchor got %d commands", n)
	}
	live.mu.Lock()
	offer, answer := live.cmds[0], live.cmds[1]
	live.mu.Unlock()
	if offer.Str("command") != "offer" || offer.Str("from-tag") != "caller-tag" || offer.Str("to-tag") != "callee-tag" ||
		offer.Str("call-id") != "moved-0" || offer.Str("transport-protocol") != "RTP/SAVP" || offer.List("received-from")[1] != "198.51.100.7" ||
		!offer.Has("replace", "origin") {
		t.Fatalf("offer %v", offer)
	}
	if answer.Str("command") != "answer" || answer.Str("from-tag") != "caller-tag" || answer.Str("to-tag") != "callee-tag" ||
		answer.List("received-from")[1] != "203.0.113.9" {
		t.Fatalf("answer %v", answer)
	}
	// With only the dead one left, there is nowhere to go.
	p.setUp(p.anchors[1], false)
	if _, _, err := p.Reoffer(ctx, "nowhere", "a", "b", []byte(offerSDP), netip.Addr{}, "", dead.srv.Addr()); !errors.Is(err, ErrNoAnchor) {
		t.Fatalf("reoffer with no live anchor: %v", err)
	}
}

func responseWithSDP(t *testing.T, callID string) *sip.Response {
	t.Helper()
	res := sip.NewResponseFromRequest(invite(t, callID, "", ""), 200, "OK", nil)
	res.To().Params.Add("tag", "tb")
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res.SetBody([]byte(offerSDP))
	return res
}

func TestAnAnsweredPingClearsACommandsFailure(t *testing.T) {
	a := startFake(t)
	const after = 200 * time.Millisecond
	p := failoverPool(t, after, a)
	a.setDown(true)
	if _, _, err := p.Offer(context.Background(), invite(t, "cleared", offerSDP, "application/sdp"), a.srv.Addr(), ""); !Gone(err) {
		t.Fatalf("offer to a silent anchor: %v", err)
	}
	a.setDown(false)
	p.pingAll(context.Background()) // it answers: the failure is over
	time.Sleep(after)               // longer than failover_after since the command
	a.setDown(true)
	p.pingAll(context.Background()) // a new failure, just begun
	if len(p.Dead()) != 0 {
		t.Fatal("dead on a failure counted from before an answered ping")
	}
}
