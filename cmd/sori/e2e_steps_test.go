package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/media/ng"
)

// The steps of a call that the e2e tests take again and again, each
// failing the test when sori or a phone does not do its part: phones
// registering, acknowledging, hanging up, answering sori's re-INVITEs;
// and the anchor's side (its configuration, ng queries, its emptying).

// withSDP is a request built by ua (Content-Length: 0, no body) with body
// as its SDP.
func withSDP(raw, body string) string {
	head, _, _ := strings.Cut(raw, "Content-Length: 0\n\n")
	return head + fmt.Sprintf("Content-Type: application/sdp\nContent-Length: %d\n\n", len(body)) + body
}

// anchoredConfig is a node's configuration with its media through the
// anchors at ngs, pinged every second; more is YAML after the media
// section's first lines: more of it, indented, or sections of their own.
func anchoredConfig(more string, ngs ...string) nodeConfig {
	quoted := make([]string, len(ngs))
	for i, a := range ngs {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	return nodeConfig{extra: fmt.Sprintf("media:\n  anchors: [%s]\n  ping_interval: 1s\n%s", strings.Join(quoted, ", "), more)}
}

// contactOf is a phone's Contact: its user at its own address.
func contactOf(u *ua) string { return "<sip:" + u.user + "@" + u.local + ">" }

// registeredBob is a phone of bob's on n, registered with callID.
func registeredBob(t *testing.T, n *node, callID string) *ua {
	t.Helper()
	bob := newUA(t, n, "udp", "bob")
	if r := bob.registerAuth("bob", "bob-secret", callID, 1, "Contact: "+contactOf(bob)); r.StatusCode != 200 {
		t.Fatalf("bob's REGISTER from %s: %d", bob.local, r.StatusCode)
	}
	return bob
}

// next is the next request u gets, which must be a want (what, as the
// failure says it).
func next(t *testing.T, u *ua, want sip.RequestMethod, what string) *sip.Request {
	t.Helper()
	req := u.readRequest()
	if req.Method != want {
		t.Fatalf("%s at %s got %s, want %s", u.user, u.local, req.Method, what)
	}
	return req
}

// endedBySori has u's answer ended by sori: u gets its ACK, then its
// BYE, and answers that.
func endedBySori(t *testing.T, u *ua) {
	t.Helper()
	next(t, u, sip.ACK, "sori's ACK")
	u.respond(next(t, u, sip.BYE, "sori's BYE"), 200, "OK")
}

// sendACK has the caller acknowledge the callee's 2xx res with CSeq
// cseq; it returns the ACK as the callee got it.
func sendACK(t *testing.T, caller, callee *ua, cseq int, res *sip.Response) *sip.Request {
	t.Helper()
	caller.send(caller.inDialog("ACK", cseq, res))
	return next(t, callee, sip.ACK, "the ACK")
}

// ackWithAnswer has the caller acknowledge the callee's 200 res (its
// offer) with CSeq cseq and the answer sdp; it returns the ACK as the
// callee got it.
func ackWithAnswer(t *testing.T, caller, callee *ua, cseq int, res *sip.Response, sdp string) *sip.Request {
	t.Helper()
	caller.send(withSDP(caller.inDialog("ACK", cseq, res), sdp))
	return next(t, callee, sip.ACK, "the ACK")
}

// hangUp has the caller end the call of res with a BYE of CSeq cseq, which
// the callee answers.
func hangUp(t *testing.T, caller, callee *ua, cseq int, res *sip.Response) {
	t.Helper()
	caller.send(caller.inDialog("BYE", cseq, res))
	callee.respond(next(t, callee, sip.BYE, "the BYE"), 200, "OK")
	if r := caller.final(); r.StatusCode != 200 || r.CSeq().MethodName != sip.BYE {
		t.Fatalf("%s got %d for %s, want 200 for the BYE", caller.user, r.StatusCode, r.CSeq().MethodName)
	}
}

// reinvitedTo has u take sori's re-INVITE as its peer (From's tag
// fromTag), which sends its media to survivor, answer it with sdp and get
// sori's ACK; it returns where the re-INVITE sends u's media.
func reinvitedTo(t *testing.T, u *ua, fromTag string, survivor *anchorProc, sdp string) netip.AddrPort {
	t.Helper()
	reinv := u.readRequest()
	if reinv.Method != sip.INVITE || reinv.From().Params.GetOr("tag", "") != fromTag {
		t.Fatalf("%s got, want sori's re-INVITE as its peer:\n%s", u.user, reinv)
	}
	to := mediaTarget(t, reinv.Body())
	if !survivor.hasPort(to) {
		t.Fatalf("%s is sent to %s, not the surviving anchor", u.user, to)
	}
	u.respondSDP(reinv, 200, "OK", sdp, "Contact: "+contactOf(u))
	next(t, u, sip.ACK, "sori's ACK")
	return to
}

// hasPort tells whether ap is one of the anchor's media ports.
func (a *anchorProc) hasPort(ap netip.AddrPort) bool {
	return a.owns(ap.Addr().String(), strconv.Itoa(int(ap.Port())))
}

// anchorDo sends the anchor one ng command and returns its reply.
func anchorDo(t *testing.T, an *anchorProc, req ng.Dict) ng.Dict {
	t.Helper()
	res, err := ngDo(an, req)
	if err != nil {
		t.Fatalf("ng %s: %v", req.Str("command"), err)
	}
	return res
}

// ngQuery is the anchor's ng query of a call it holds.
func ngQuery(t *testing.T, an *anchorProc, callID string) ng.Dict {
	t.Helper()
	q := anchorDo(t, an, ng.Dict{"command": "query", "call-id": callID})
	if q.Str("result") != "ok" {
		t.Fatalf("ng query %s: %v", callID, q)
	}
	return q
}

// waitAnchorEmpty waits for the anchor to hold no call and no port.
func waitAnchorEmpty(t *testing.T, an *anchorProc) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); an.metric(t, "sori_anchor_calls") != "0" || an.metric(t, "sori_anchor_ports_in_use") != "0"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the anchor holds %s calls and %s port pairs", an.metric(t, "sori_anchor_calls"), an.metric(t, "sori_anchor_ports_in_use"))
		}
	}
}
