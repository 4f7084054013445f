package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/media/rtptest"
	"github.com/sori-voice/sori/sip/calls"
)

// rtpLeg is one phone's media in one call: it sends 50 packets/s to
// wherever the latest SDP it got says, and keeps what it receives.
type rtpLeg struct {
	*rtptest.Stream
	sdp string // its own SDP
}

func newRTPLeg(t *testing.T, ssrc uint32, session int) *rtpLeg {
	s := rtptest.New(t, ssrc)
	return &rtpLeg{Stream: s, sdp: phoneSDP(session, s.Port())}
}

// from counts the packets of SSRC ssrc that came from one of an's ports
// after since, and returns the first one's time.
func (l *rtpLeg) from(an *anchorProc, ssrc uint32, since time.Time) (int, time.Time) {
	n, first := 0, time.Time{}
	for _, a := range l.Arrivals() {
		if a.At.After(since) && a.SSRC == ssrc && an.hasPort(a.From) {
			if n == 0 {
				first = a.At
			}
			n++
		}
	}
	return n, first
}

// lastFrom is when the last packet from one of an's ports came before until.
func (l *rtpLeg) lastFrom(an *anchorProc, until time.Time) time.Time {
	var last time.Time
	for _, a := range l.Arrivals() {
		if a.At.Before(until) && an.hasPort(a.From) {
			last = a.At
		}
	}
	return last
}

// strangers lists the packets that came from neither anchor, or with
// another SSRC than want.
func (l *rtpLeg) strangers(want uint32, anchors ...*anchorProc) []rtptest.Arrival {
	var out []rtptest.Arrival
	for _, a := range l.Arrivals() {
		owned := false
		for _, an := range anchors {
			owned = owned || an.hasPort(a.From)
		}
		if !owned || a.SSRC != want {
			out = append(out, a)
		}
	}
	return out
}

// startFailoverNode starts two anchors and a node that moves calls off
// either within a second of its going silent, its call records in cdr.
func startFailoverNode(t *testing.T) (anA, anB *anchorProc, n *node, cdr string) {
	t.Helper()
	anA = startAnchor(t, "-media-timeout", "0")
	anB = startAnchor(t, "-media-timeout", "0")
	cdr = filepath.Join(t.TempDir(), "cdr.jsonl")
	cfg := anchoredConfig("  timeout: 300ms\n  failover_after: 1s\ncdr:\n  file: "+cdr+"\n", anA.ng, anB.ng)
	cfg.sip = "  timer_c: 30s\n"
	return anA, anB, startNode(t, cfg), cdr
}

// failCall is one call of the test: its dialog as each phone has it and
// each phone's media.
type failCall struct {
	id         string
	inv        *sip.Request  // the INVITE as bob got it
	res        *sip.Response // the 200 as alice got it
	ma, mb     *rtpLeg       // alice's media, bob's
	on         *anchorProc   // the anchor it was set up on
	mu         sync.Mutex    // what the phones got from sori, by phone:
	reinvites  map[string]*sip.Request
	acks       map[string]*sip.Request
	byes       map[string]*sip.Request
	reinviteAt map[string]time.Time
}

// phoneLoop answers what sori sends a phone once its calls are up: a
// re-INVITE gets 200 with the phone's SDP (its media then goes where the
// re-INVITE's SDP says), a BYE 200; ACKs are kept; responses go to res.
type phoneLoop struct {
	name  string
	u     *ua
	mu    sync.Mutex
	calls map[string]*failCall
	leg   func(c *failCall) *rtpLeg
	res   chan *sip.Response
	bad   []string // what it could not make sense of
}

func (p *phoneLoop) run() {
	buf := make([]byte, 65535)
	for {
		_ = p.u.conn.SetReadDeadline(time.Time{})
		k, err := p.u.conn.Read(buf)
		if err != nil {
			return // closed at the end of the test
		}
		if len(bytes.TrimSpace(buf[:k])) == 0 {
			continue
		}
		msg, err := sip.ParseMessage(append([]byte(nil), buf[:k]...))
		if err != nil {
			p.note("unparsable: %v", err)
			continue
		}
		switch m := msg.(type) {
		case *sip.Response:
			p.res <- m
		case *sip.Request:
			p.request(m)
		}
	}
}

func (p *phoneLoop) note(format string, args ...any) {
	p.mu.Lock()
	p.bad = append(p.bad, fmt.Sprintf(format, args...))
	p.mu.Unlock()
}

func (p *phoneLoop) request(req *sip.Request) {
	p.mu.Lock()
	c := p.calls[req.CallID().Value()]
	p.mu.Unlock()
	if c == nil {
		p.note("%s for an unknown call %s", req.Method, req.CallID().Value())
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch req.Method {
	case sip.INVITE:
		if _, again := c.reinvites[p.name]; again {
			p.note("a second re-INVITE in %s", c.id)
		}
		c.reinvites[p.name], c.reinviteAt[p.name] = req, time.Now()
		if s, err := sdpTarget(req.Body()); err == nil {
			p.leg(c).SetTarget(s)
		} else {
			p.note("re-INVITE SDP in %s: %v", c.id, err)
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<sip:%s@%s>", p.u.user, p.u.local)))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody([]byte(p.leg(c).sdp))
		_, _ = p.u.conn.Write([]byte(res.String()))
	case sip.ACK:
		c.acks[p.name] = req
	case sip.BYE:
		c.byes[p.name] = req
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.SetBody(nil)
		_, _ = p.u.conn.Write([]byte(res.String()))
	default:
		p.note("%s in %s", req.Method, c.id)
	}
}

// sdpTarget is where an SDP sends the media.
func sdpTarget(body []byte) (netip.AddrPort, error) {
	for _, l := range strings.Split(string(body), "\r\n") {
		if f := strings.Fields(strings.TrimPrefix(l, "m=audio ")); strings.HasPrefix(l, "m=audio ") && len(f) > 0 {
			port, err := strconv.Atoi(f[0])
			if err != nil {
				return netip.AddrPort{}, err
			}
			for _, c := range strings.Split(string(body), "\r\n") {
				if a, ok := strings.CutPrefix(c, "c=IN IP4 "); ok {
					ip, err := netip.ParseAddr(strings.TrimSpace(a))
					return netip.AddrPortFrom(ip, uint16(port)), err
				}
			}
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no media in %q", body)
}

// originVersion is the version in an SDP's o= line.
func originVersion(body []byte) string {
	for _, l := range strings.Split(string(body), "\r\n") {
		if f := strings.Fields(l); strings.HasPrefix(l, "o=") && len(f) == 6 {
			return f[2]
		}
	}
	return ""
}

// Two sori-anchors share 20 answered calls; one is killed for good
// (SIGKILL) in the middle of them. Every call on it is moved by sori:
// both phones get a re-INVITE in the dialog (CSeq above what they saw,
// the other side's Contact as they know it, the surviving anchor's SDP
// with a new o= version), and RTP flows again end to end, each phone's
// packets reaching the other from the surviving anchor's ports. The gap
// is measured per call and direction. The calls on the survivor are not
// touched. Then every call ends by BYE from one phone or the other: the
// BYE reaches the other phone with a CSeq above sori's re-INVITE, and its
// 200 comes back with the CSeq its sender used. Every record is written
// once, noting the move, and the survivor holds no call at the end.
func TestFailoverMovesCallsOffADeadAnchor(t *testing.T) {
	const n = 20
	anA, anB, node, cdr := startFailoverNode(t)
	alice, bob := newUA(t, node, "udp", "alice"), registeredBob(t, node, "failover-reg@test")
	bobContact := "Contact: " + contactOf(bob)

	// The calls, one after another, each with its own media.
	var cs []*failCall
	onA, onB := 0, 0
	for i := range n {
		c := &failCall{ma: newRTPLeg(t, uint32(0xa000+i), 1001), mb: newRTPLeg(t, uint32(0xb000+i), 2002),
			reinvites: map[string]*sip.Request{}, acks: map[string]*sip.Request{}, byes: map[string]*sip.Request{}, reinviteAt: map[string]time.Time{}}
		alice.sdp = c.ma.sdp
		alice.authenticated("INVITE", "sip:bob@sori.test")
		alice.sdp = ""
		c.inv = bob.readRequest()
		if c.inv.Method != sip.INVITE {
			t.Fatalf("bob got %s, want the INVITE", c.inv.Method)
		}
		bob.respondSDP(c.inv, 200, "OK", c.mb.sdp, bobContact)
		c.res = alice.final()
		if c.res.StatusCode != 200 {
			t.Fatalf("INVITE %d: %d %s", i, c.res.StatusCode, c.res.Reason)
		}
		alice.send(alice.inDialog("ACK", 2, c.res))
		if ack := bob.readRequest(); ack.Method != sip.ACK {
			t.Fatalf("bob got %s, want the ACK", ack.Method)
		}
		c.id = c.res.CallID().Value()
		toA, toB := mediaTarget(t, c.res.Body()), mediaTarget(t, c.inv.Body())
		c.ma.SetTarget(toA)
		c.mb.SetTarget(toB)
		switch {
		case anA.hasPort(toA) && anA.hasPort(toB):
			c.on = anA
			onA++
		case anB.hasPort(toA) && anB.hasPort(toB):
			c.on = anB
			onB++
		default:
			t.Fatalf("call %d: media to %s and %s, not both on one anchor", i, toA, toB)
		}
		cs = append(cs, c)
	}
	if onA == 0 || onB == 0 {
		t.Fatalf("calls on the anchors: %d and %d, want both used", onA, onB)
	}
	dead, survivor := anA, anB
	moved := onA
	t.Logf("%d calls on the anchor to be killed (%s), %d on the survivor (%s)", onA, dead.ng, onB, survivor.ng)

	// From now on the phones answer sori by themselves, and talk.
	loops := map[string]*phoneLoop{}
	for _, p := range []*phoneLoop{
		{name: "alice", u: alice, leg: func(c *failCall) *rtpLeg { return c.ma }},
		{name: "bob", u: bob, leg: func(c *failCall) *rtpLeg { return c.mb }},
	} {
		p.calls, p.res = map[string]*failCall{}, make(chan *sip.Response, 4*n)
		for _, c := range cs {
			p.calls[c.id] = c
		}
		loops[p.name] = p
		go p.run()
	}
	defer rtptest.Pace(func() {
		for _, c := range cs {
			_ = c.ma.Send()
			_ = c.mb.Send()
		}
	})()

	// Every call's media flows through its anchor, both ways.
	start := time.Now()
	waitFor(t, 15*time.Second, "RTP through each call's anchor", func() string {
		for i, c := range cs {
			if k, _ := c.mb.from(c.on, c.ma.SSRC, start); k < 10 {
				return fmt.Sprintf("call %d: bob got %d packets of alice's", i, k)
			}
			if k, _ := c.ma.from(c.on, c.mb.SSRC, start); k < 10 {
				return fmt.Sprintf("call %d: alice got %d packets of bob's", i, k)
			}
		}
		return ""
	})

	// The anchor dies for good.
	if err := dead.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-dead.exited
	killed := time.Now()

	// Each moved call: both phones re-INVITEd and ACKed, then 25 packets
	// (half a second) each way from the survivor.
	waitFor(t, 30*time.Second, "every call on the dead anchor moved, RTP flowing through the survivor", func() string {
		for i, c := range cs {
			if c.on != dead {
				continue
			}
			for _, p := range loops {
				c.mu.Lock()
				inv, ack := c.reinvites[p.name], c.acks[p.name]
				c.mu.Unlock()
				if inv == nil || ack == nil {
					return fmt.Sprintf("call %d: %s has re-INVITE %v, ACK %v", i, p.name, inv != nil, ack != nil)
				}
			}
			if k, _ := c.mb.from(survivor, c.ma.SSRC, killed); k < 25 {
				return fmt.Sprintf("call %d: bob got %d of alice's packets from the survivor", i, k)
			}
			if k, _ := c.ma.from(survivor, c.mb.SSRC, killed); k < 25 {
				return fmt.Sprintf("call %d: alice got %d of bob's packets from the survivor", i, k)
			}
		}
		return ""
	})

	var gaps []time.Duration
	for i, c := range cs {
		c.mu.Lock()
		aliceInv, bobInv := c.reinvites["alice"], c.reinvites["bob"]
		bobAck, aliceAck := c.acks["bob"], c.acks["alice"]
		bobAt, aliceAt := c.reinviteAt["bob"], c.reinviteAt["alice"]
		c.mu.Unlock()
		if c.on != dead {
			if aliceInv != nil || bobInv != nil {
				t.Errorf("call %d on the survivor was re-INVITEd", i)
			}
			continue
		}
		// To bob as alice: her dialog, above her CSeq 2, her Contact as bob
		// knows it, the survivor's SDP with the next version of her o=.
		if bobInv.From().Params.GetOr("tag", "") != c.res.From().Params.GetOr("tag", "") || bobInv.To().Params.GetOr("tag", "") != c.res.To().Params.GetOr("tag", "") ||
			bobInv.CSeq().SeqNo != 3 || bobInv.Contact() == nil || bobInv.Contact().Address.String() != c.inv.Contact().Address.String() ||
			bobInv.Recipient.String() != "sip:bob@"+bob.local || originVersion(bobInv.Body()) != "2" {
			t.Errorf("call %d: re-INVITE to bob:\n%s", i, bobInv)
		}
		if to := mediaTarget(t, bobInv.Body()); !survivor.hasPort(to) {
			t.Errorf("call %d: bob is sent to %s, not the survivor", i, to)
		}
		// To alice as bob: his first request in the dialog, his Contact as she knows it.
		if aliceInv.From().Params.GetOr("tag", "") != c.res.To().Params.GetOr("tag", "") || aliceInv.CSeq().SeqNo != 1 ||
			aliceInv.Contact() == nil || aliceInv.Contact().Address.String() != c.res.Contact().Address.String() || originVersion(aliceInv.Body()) != "2" {
			t.Errorf("call %d: re-INVITE to alice:\n%s", i, aliceInv)
		}
		if to := mediaTarget(t, aliceInv.Body()); !survivor.hasPort(to) {
			t.Errorf("call %d: alice is sent to %s, not the survivor", i, to)
		}
		if bobAck.CSeq().SeqNo != 3 || aliceAck.CSeq().SeqNo != 1 {
			t.Errorf("call %d: ACKs with CSeq %d and %d", i, bobAck.CSeq().SeqNo, aliceAck.CSeq().SeqNo)
		}
		_, toBob := c.mb.from(survivor, c.ma.SSRC, killed)
		_, toAlice := c.ma.from(survivor, c.mb.SSRC, killed)
		gapAB, gapBA := toBob.Sub(c.mb.lastFrom(dead, killed.Add(time.Second))), toAlice.Sub(c.ma.lastFrom(dead, killed.Add(time.Second)))
		t.Logf("call %2d: gap alice→bob %v, bob→alice %v (re-INVITEs %v and %v after the kill)", i, gapAB.Round(time.Millisecond), gapBA.Round(time.Millisecond),
			bobAt.Sub(killed).Round(time.Millisecond), aliceAt.Sub(killed).Round(time.Millisecond))
		gaps = append(gaps, gapAB, gapBA)
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	t.Logf("media gap over %d calls, both directions: min %v, median %v, max %v (media.ping_interval 1s, failover_after 1s, timeout 300ms)",
		moved, gaps[0].Round(time.Millisecond), gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond))
	// failover_after + a ping round + the ping's timeout + two re-INVITEs: about 2.5 s; generous for a loaded machine.
	if worst := gaps[len(gaps)-1]; worst > 10*time.Second {
		t.Errorf("largest gap %v, want under 10 s", worst)
	}
	for i, c := range cs {
		if s := c.ma.strangers(c.mb.SSRC, anA, anB); len(s) > 0 {
			t.Errorf("call %d: alice got %d packets not of bob's or not from an anchor (first %+v)", i, len(s), s[0])
		}
		if s := c.mb.strangers(c.ma.SSRC, anA, anB); len(s) > 0 {
			t.Errorf("call %d: bob got %d packets not of alice's or not from an anchor (first %+v)", i, len(s), s[0])
		}
		if c.on == survivor {
			// Untouched: it kept flowing through the kill.
			if k, _ := c.mb.from(survivor, c.ma.SSRC, killed); k < 25 {
				t.Errorf("call %d on the survivor: %d packets since the kill", i, k)
			}
		}
	}
	if v, _ := metricSample(t, node, "sori_calls_reanchored_total"); int(v) != moved {
		t.Errorf("sori_calls_reanchored_total %v, want %d", v, moved)
	}

	// Every BYE: alice's (her direction had sori's re-INVITE as her) and
	// bob's in turn.
	for i, c := range cs {
		wantUp := uint32(0) // what sori adds to the BYE's CSeq
		if c.on == dead {
			wantUp = 1
		}
		var sent uint32
		by, other := "alice", "bob"
		if i%2 == 0 {
			sent = 3
			alice.send(alice.inDialog("BYE", int(sent), c.res))
		} else {
			by, other = "bob", "alice"
			sent = 1
			bob.send(fmt.Sprintf("BYE %s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-fbye-%d;rport\nMax-Forwards: 70\n%sFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: %d BYE\nContent-Length: 0\n\n",
				c.inv.Contact().Address.String(), bob.local, i, routeSet(c.inv), c.res.To().Value(), c.res.From().Value(), c.id, sent))
		}
		var res *sip.Response
		select {
		case res = <-loops[by].res:
		case <-time.After(10 * time.Second):
			t.Fatalf("call %d: no answer to %s's BYE", i, by)
		}
		if res.StatusCode != 200 || res.CallID().Value() != c.id || res.CSeq().MethodName != sip.BYE || res.CSeq().SeqNo != sent {
			t.Fatalf("call %d: %s's BYE answered %d, CSeq %d %s (sent %d)", i, by, res.StatusCode, res.CSeq().SeqNo, res.CSeq().MethodName, sent)
		}
		var bye *sip.Request
		waitFor(t, 5*time.Second, "the BYE at "+other, func() string {
			c.mu.Lock()
			defer c.mu.Unlock()
			if bye = c.byes[other]; bye == nil {
				return "none yet"
			}
			return ""
		})
		if bye == nil || bye.CSeq().SeqNo != sent+wantUp {
			t.Fatalf("call %d: %s's BYE reached %s as %v, want CSeq %d", i, by, other, bye, sent+wantUp)
		}
	}

	for i, c := range cs {
		r := callRecords(t, cdr, c.id, 1)[0]
		by := "caller"
		if i%2 == 1 {
			by = "callee"
		}
		checkCallRecord(t, r, 200, calls.Answered, by)
		switch {
		case c.on == survivor && len(r.Reanchored) != 0:
			t.Errorf("call %d on the survivor: record says it moved %+v", i, r.Reanchored)
		case c.on == dead && (len(r.Reanchored) != 1 || r.Reanchored[0].From != dead.ng || r.Reanchored[0].To != survivor.ng ||
			!r.Reanchored[0].Answered || r.Reanchored[0].Error != "" || r.Reanchored[0].At.Before(killed)):
			t.Errorf("call %d: record's move %+v, want from %s to %s after %v", i, r.Reanchored, dead.ng, survivor.ng, killed)
		}
	}
	waitRecords(t, cdr, n, "all calls, once each", func(calls.Record) bool { return true })
	waitFor(t, 10*time.Second, "the survivor holding no call", func() string {
		if got := survivor.metric(t, "sori_anchor_calls"); got != "0" {
			return "sori_anchor_calls " + got
		}
		return ""
	})
	for _, p := range loops {
		p.mu.Lock()
		if len(p.bad) > 0 {
			t.Errorf("%s: %s", p.name, strings.Join(p.bad, "; "))
		}
		p.mu.Unlock()
	}
}

// waitFor polls cond until it returns "" (what is still missing otherwise).
func waitFor(t *testing.T, within time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		missing := cond()
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, within, missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A call rings on an anchor that is then killed: the callee's 200 finds
// the anchor gone, so sori offers the caller's SDP to the other anchor
// with that answer (the caller gets its SDP in the 200), and once the
// caller has ACKed, the callee gets a re-INVITE with the other anchor's
// SDP. Media then flows both ways through the survivor, and the BYE that
// ends the call reaches the callee above sori's re-INVITE's CSeq.
func TestFailoverReoffersARingingCall(t *testing.T) {
	anA, anB, node, cdr := startFailoverNode(t)
	alice, bob := newUA(t, node, "udp", "alice"), registeredBob(t, node, "ringing-reg@test")
	bobContact := "Contact: " + contactOf(bob)
	ma, mb := newMediaSocket(t), newMediaSocket(t)
	alice.sdp = ma.sdp(1001)
	alice.authenticated("INVITE", "sip:bob@sori.test")
	alice.sdp = ""
	inv := bob.readRequest()
	if inv.Method != sip.INVITE {
		t.Fatalf("bob got %s, want the INVITE", inv.Method)
	}
	bob.respond(inv, 180, "Ringing", bobContact)
	for res := alice.read(); res.StatusCode != 180; res = alice.read() {
		if res.StatusCode >= 200 {
			t.Fatalf("INVITE: %d while bob rings", res.StatusCode)
		}
	}
	dead, survivor := anA, anB
	if to := mediaTarget(t, inv.Body()); anB.hasPort(to) {
		dead, survivor = anB, anA
	}
	if err := dead.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-dead.exited

	bob.respondSDP(inv, 200, "OK", mb.sdp(2002), bobContact)
	res := alice.final()
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d %s", res.StatusCode, res.Reason)
	}
	toAnchorA := mediaTarget(t, res.Body())
	if !survivor.hasPort(toAnchorA) {
		t.Fatalf("alice is sent to %s, not the surviving anchor", toAnchorA)
	}
	if ack := sendACK(t, alice, bob, 2, res); ack.CSeq().SeqNo != 2 {
		t.Fatalf("bob got an ACK of CSeq %d, want alice's, 2", ack.CSeq().SeqNo)
	}
	reinv := bob.readRequest()
	if reinv.Method != sip.INVITE || reinv.CSeq().SeqNo != 3 || reinv.From().Params.GetOr("tag", "") != res.From().Params.GetOr("tag", "") ||
		reinv.Contact() == nil || reinv.Contact().Address.String() != inv.Contact().Address.String() || originVersion(reinv.Body()) != "2" {
		t.Fatalf("bob got, want sori's re-INVITE as alice:\n%s", reinv)
	}
	toAnchorB := mediaTarget(t, reinv.Body())
	if !survivor.hasPort(toAnchorB) {
		t.Fatalf("bob is sent to %s, not the surviving anchor", toAnchorB)
	}
	bob.respondSDP(reinv, 200, "OK", mb.sdp(2002), bobContact)
	if ack := bob.readRequest(); ack.Method != sip.ACK || ack.CSeq().SeqNo != 3 {
		t.Fatalf("bob got %s %d, want sori's ACK", ack.Method, ack.CSeq().SeqNo)
	}
	// Each phone's packets reach the other from the survivor's port for it.
	streamBothWays(t, ma, toAnchorA, mb, toAnchorB, 0xa1, 0xb1, 20)

	alice.send(alice.inDialog("BYE", 3, res))
	bye := bob.readRequest()
	if bye.Method != sip.BYE || bye.CSeq().SeqNo != 4 {
		t.Fatalf("bob got %s with CSeq %d, want alice's BYE as 4 (above sori's 3)", bye.Method, bye.CSeq().SeqNo)
	}
	bob.respond(bye, 200, "OK")
	if r := alice.final(); r.StatusCode != 200 || r.CSeq().SeqNo != 3 || r.CSeq().MethodName != sip.BYE {
		t.Fatalf("BYE answered %d with CSeq %d %s, want 200 and her own 3", r.StatusCode, r.CSeq().SeqNo, r.CSeq().MethodName)
	}
	r := callRecords(t, cdr, res.CallID().Value(), 1)[0]
	checkCallRecord(t, r, 200, calls.Answered, "caller")
	if len(r.Reanchored) != 1 || r.Reanchored[0].From != dead.ng || r.Reanchored[0].To != survivor.ng || r.Reanchored[0].Answered || r.Reanchored[0].Error != "" {
		t.Fatalf("record's move %+v, want one from %s to %s while ringing", r.Reanchored, dead.ng, survivor.ng)
	}
	waitFor(t, 10*time.Second, "the survivor holding no call", func() string {
		if got := survivor.metric(t, "sori_anchor_calls"); got != "0" {
			return "sori_anchor_calls " + got
		}
		return ""
	})
}
