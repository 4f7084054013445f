package main

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// Offer/answer in reliable provisional responses (RFC 3262 100rel, RFC
// 6337 §3.1.1): alice's INVITE has no SDP, bob's reliable 183 brings the
// offer, alice's PRACK the answer; bob's 200 repeats the offer and the
// ACK has no SDP. Every port is the harness's own (freeSIPPort,
// startAnchor's free range, ephemeral media sockets), on 127.0.0.1.

// reliable183 is bob's reliable 183 with an SDP body to req, as raw
// text: sent again byte for byte, it is a retransmission.
func reliable183(req *sip.Request, tag, contact, rseq, body string) string {
	res := sip.NewResponseFromRequest(req, 183, "Session Progress", nil)
	res.To().Params.Add("tag", tag)
	res.AppendHeader(sip.NewHeader("Contact", contact))
	res.AppendHeader(sip.NewHeader("Require", "100rel"))
	res.AppendHeader(sip.NewHeader("RSeq", rseq))
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res.SetBody([]byte(body))
	return res.String()
}

// provisional reads u's responses until one with code, failing on a
// final one.
func provisional(t *testing.T, u *ua, code int) *sip.Response {
	t.Helper()
	for {
		res := u.read()
		if res.StatusCode == code {
			return res
		}
		if res.StatusCode >= 200 {
			t.Fatalf("%s got %d %s, want %d", u.user, res.StatusCode, res.Reason, code)
		}
	}
}

// prack is the caller's PRACK (CSeq cseq) of the reliable 18x res, with
// the SDP answer sdp ("": none).
func prack(caller *ua, cseq int, res *sip.Response, sdp string) string {
	raw := caller.inDialog("PRACK", cseq, res)
	rack := "RAck: " + res.GetHeader("RSeq").Value() + " " + strconv.Itoa(int(res.CSeq().SeqNo)) + " INVITE\n"
	raw = strings.Replace(raw, "Content-Length: 0\n", rack+"Content-Length: 0\n", 1)
	if sdp == "" {
		return raw
	}
	return withSDP(raw, sdp)
}

// A delayed offer in a reliable 183 is anchored: alice gets the anchor's
// SDP in the 183 (the same again for its retransmission, one ng offer),
// bob the anchor's in the PRACK; early media flows both ways through the
// anchor; the 200 repeating the offer gets the 183's anchor SDP, the ACK
// without SDP keeps the call, and BYE empties the anchor.
func TestReliableOfferAnchored(t *testing.T) {
	reliableOfferAnchored(t, startAnchor(t), waitAnchorEmpty)
}

// The same with rtpengine as the anchor (no metrics: its ng list says
// when it is empty).
func TestRtpengineReliableOffer(t *testing.T) {
	reliableOfferAnchored(t, startRtpengine(t), func(t *testing.T, an *anchorProc) { waitNgCalls(t, an, 0) })
}

func reliableOfferAnchored(t *testing.T, an *anchorProc, waitEmpty func(*testing.T, *anchorProc)) {
	t.Helper()
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	n := startNode(t, anchoredConfig("cdr:\n  file: "+cdr+"\n", an.ng))
	ma, mb := newMediaSocket(t), newMediaSocket(t)
	alice, bob := newUA(t, n, "udp", "alice"), registeredBob(t, n, "prack-reg@test")
	alice.authenticated("INVITE", "sip:bob@sori.test", "Supported: 100rel")
	inv := bob.readRequest()
	if len(inv.Body()) != 0 {
		t.Fatalf("the INVITE without SDP reached bob with a body:\n%s", inv.Body())
	}
	sent := reliable183(inv, "bob-prack", contactOf(bob), "1", mb.sdp(2002))
	bob.send(sent)
	early := provisional(t, alice, 183)
	toAnchorFromA := mediaTarget(t, early.Body())
	if !an.hasPort(toAnchorFromA) || int(toAnchorFromA.Port()) == mb.port() {
		t.Fatalf("alice's 183 sends media to %s, not to the anchor", toAnchorFromA)
	}
	if !strings.Contains(early.String(), "RSeq: 1") || !strings.Contains(early.String(), "100rel") {
		t.Fatalf("the 183 lost its reliability:\n%s", early)
	}
	// No PRACK yet: bob's 183 again is a retransmission.
	bob.send(sent)
	if again := provisional(t, alice, 183); string(again.Body()) != string(early.Body()) {
		t.Fatalf("the retransmitted 183 got another SDP:\n%s\nfirst:\n%s", again.Body(), early.Body())
	}

	alice.send(prack(alice, 3, early, ma.sdp(1001)))
	pr := next(t, bob, sip.PRACK, "the PRACK")
	toAnchorFromB := mediaTarget(t, pr.Body())
	if !an.hasPort(toAnchorFromB) || toAnchorFromB == toAnchorFromA || int(toAnchorFromB.Port()) == ma.port() {
		t.Fatalf("bob's PRACK sends media to %s (alice's side: %s)", toAnchorFromB, toAnchorFromA)
	}
	bob.respond(pr, 200, "OK")
	if res := alice.read(); res.StatusCode != 200 || res.CSeq().MethodName != sip.PRACK {
		t.Fatalf("alice got %d for %s, want 200 for the PRACK", res.StatusCode, res.CSeq().MethodName)
	}
	// Early media, both ways through the anchor.
	streamBothWays(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce, 0xb0b, 50)

	// Bob's 200 repeats his offer (RFC 6337): alice gets the same SDP.
	bob.send(answer200(inv, "bob-prack", contactOf(bob), mb.sdp(2002)))
	res := alice.final()
	if res.StatusCode != 200 || string(res.Body()) != string(early.Body()) {
		t.Fatalf("INVITE: %d, SDP:\n%s\nwant the 183's:\n%s", res.StatusCode, res.Body(), early.Body())
	}
	if ack := sendACK(t, alice, bob, 2, res); len(ack.Body()) != 0 {
		t.Fatalf("bob got the ACK with body %q", ack.Body())
	}
	streamBothWays(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce2, 0xb0b2, 10)

	callID := res.CallID().Value()
	q := ngQuery(t, an, callID)
	if a, b := legPackets(t, q, res.From().Params.GetOr("tag", "")), legPackets(t, q, "bob-prack"); a < 60 || b < 60 {
		t.Fatalf("anchor legs: alice's received %d packets, bob's %d; want 60 each", a, b)
	}

	hangUp(t, alice, bob, 4, res)
	waitEmpty(t, an)
	if r := records(t, cdr, "bob", 1)[0]; r.Disposition != "answered" || r.HangupBy != "caller" || r.Code != 200 {
		t.Fatalf("call record %+v", r)
	}
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	for _, want := range []string{`sori_media_commands_total{command="offer",outcome="ok"} 1`,
		`sori_media_commands_total{command="answer",outcome="ok"} 1`, `sori_media_commands_total{command="delete",outcome="ok"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("sori metrics lack %s", want)
		}
	}
}

// Alice cancels after bob's reliable 183 offer was anchored: the call's
// media goes from the anchor with the call.
func TestReliableOfferCancelled(t *testing.T) {
	an := startAnchor(t)
	n := startNode(t, anchoredConfig("", an.ng))
	alice, bob := newUA(t, n, "udp", "alice"), registeredBob(t, n, "prack-cancel-reg@test")
	invite := alice.call("sip:bob@sori.test")
	inv := bob.readRequest()
	bob.send(reliable183(inv, "bob-prack", contactOf(bob), "1", newMediaSocket(t).sdp(2002)))
	if early := provisional(t, alice, 183); !an.hasPort(mediaTarget(t, early.Body())) {
		t.Fatalf("alice's 183 sends media to %s, not to the anchor", mediaTarget(t, early.Body()))
	}
	if got := an.metric(t, "sori_anchor_calls"); got != "1" {
		t.Fatalf("anchor holds %q calls after the 183", got)
	}
	alice.send(cancelOf(invite))
	bob.respond(next(t, bob, sip.CANCEL, "the CANCEL"), 200, "OK")
	bob.respond(inv, 487, "Request Terminated")
	var final *sip.Response
	for final == nil {
		if res := alice.read(); res.StatusCode >= 200 && res.CSeq().MethodName == sip.INVITE {
			final = res
		}
	}
	if final.StatusCode != 487 {
		t.Fatalf("alice got %d, want 487", final.StatusCode)
	}
	alice.send(ackFor(invite, final))
	waitAnchorEmpty(t, an)
}

// An early offer (alice's INVITE has SDP) answered in bob's reliable
// 183: the answer is anchored as any 18x's, the PRACK without SDP goes on
// as it is, and early media flows both ways through the anchor.
func TestReliableAnswerToAnEarlyOffer(t *testing.T) {
	an := startAnchor(t)
	n := startNode(t, anchoredConfig("", an.ng))
	ma, mb := newMediaSocket(t), newMediaSocket(t)
	alice, bob := newUA(t, n, "udp", "alice"), registeredBob(t, n, "prack-early-reg@test")
	alice.sdp = ma.sdp(1001)
	alice.authenticated("INVITE", "sip:bob@sori.test", "Supported: 100rel")
	alice.sdp = ""
	inv := bob.readRequest()
	toAnchorFromB := mediaTarget(t, inv.Body())
	if !an.hasPort(toAnchorFromB) {
		t.Fatalf("bob's INVITE sends media to %s, not to the anchor", toAnchorFromB)
	}
	bob.send(reliable183(inv, "bob-early", contactOf(bob), "1", mb.sdp(2002)))
	early := provisional(t, alice, 183)
	toAnchorFromA := mediaTarget(t, early.Body())
	if !an.hasPort(toAnchorFromA) || toAnchorFromA == toAnchorFromB {
		t.Fatalf("alice's 183 sends media to %s (bob's side: %s)", toAnchorFromA, toAnchorFromB)
	}
	alice.send(prack(alice, 3, early, ""))
	pr := next(t, bob, sip.PRACK, "the PRACK")
	if len(pr.Body()) != 0 {
		t.Fatalf("bob's PRACK has a body: %q", pr.Body())
	}
	bob.respond(pr, 200, "OK")
	if res := alice.read(); res.StatusCode != 200 || res.CSeq().MethodName != sip.PRACK {
		t.Fatalf("alice got %d for %s, want 200 for the PRACK", res.StatusCode, res.CSeq().MethodName)
	}
	streamBothWays(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce, 0xb0b, 20)

	bob.send(answer200(inv, "bob-early", contactOf(bob), mb.sdp(2002)))
	res := alice.final()
	if res.StatusCode != 200 || mediaTarget(t, res.Body()) != toAnchorFromA {
		t.Fatalf("INVITE: %d, media to %s (the 183's: %s)", res.StatusCode, mediaTarget(t, res.Body()), toAnchorFromA)
	}
	sendACK(t, alice, bob, 2, res)
	hangUp(t, alice, bob, 4, res)
	waitAnchorEmpty(t, an)
}

// Bob's first phone sends a reliable 183 offer, which alice answers in
// her PRACK; his second phone answers with a 200 offer. That 200 makes
// the call: its offer takes alice's leg on the anchor over (a second ng
// offer), her ACK answers it, the first phone is cancelled, and media
// flows between alice and the second phone through the anchor.
func TestReliableOfferForkAnsweredElsewhere(t *testing.T) {
	an := startAnchor(t)
	n := startNode(t, anchoredConfig("", an.ng))
	alice, bob1, bob2 := newUA(t, n, "udp", "alice"), registeredBob(t, n, "prack-else-0@test"), registeredBob(t, n, "prack-else-1@test")
	ma, mb1, mb2 := newMediaSocket(t), newMediaSocket(t), newMediaSocket(t)
	alice.authenticated("INVITE", "sip:bob@sori.test", "Supported: 100rel")
	inv1, inv2 := bob1.readRequest(), bob2.readRequest()
	bob1.send(reliable183(inv1, "bob-1", contactOf(bob1), "1", mb1.sdp(2001)))
	early := provisional(t, alice, 183)
	alice.send(prack(alice, 3, early, ma.sdp(1001)))
	bob1.respond(next(t, bob1, sip.PRACK, "the PRACK"), 200, "OK")
	if res := alice.read(); res.StatusCode != 200 || res.CSeq().MethodName != sip.PRACK {
		t.Fatalf("alice got %d for %s, want 200 for the PRACK", res.StatusCode, res.CSeq().MethodName)
	}

	bob2.send(answer200(inv2, "bob-2", contactOf(bob2), mb2.sdp(2002)))
	res := alice.final()
	if res.StatusCode != 200 || res.To().Params.GetOr("tag", "") != "bob-2" {
		t.Fatalf("INVITE: %d from %s", res.StatusCode, res.To().Value())
	}
	toAnchorFromA := mediaTarget(t, res.Body())
	if !an.hasPort(toAnchorFromA) {
		t.Fatalf("alice's 200 sends media to %s, not to the anchor", toAnchorFromA)
	}
	bob1.respond(next(t, bob1, sip.CANCEL, "sori's CANCEL"), 200, "OK")
	bob1.respond(inv1, 487, "Request Terminated")
	ack := ackWithAnswer(t, alice, bob2, 2, res, ma.sdp(1001))
	toAnchorFromB := mediaTarget(t, ack.Body())
	if !an.hasPort(toAnchorFromB) || toAnchorFromB == toAnchorFromA {
		t.Fatalf("bob-2's ACK sends media to %s (alice's side: %s)", toAnchorFromB, toAnchorFromA)
	}
	streamBothWays(t, ma, toAnchorFromA, mb2, toAnchorFromB, 0xa11ce, 0xb0b, 20)
	hangUp(t, alice, bob2, 4, res)
	waitAnchorEmpty(t, an)
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	if want := `sori_media_commands_total{command="offer",outcome="ok"} 2`; !strings.Contains(metrics, want) {
		t.Errorf("sori metrics lack %s", want)
	}
}

// A PRACK whose answer the anchor refuses (it is no SDP) is refused with
// 488: bob never gets alice's raw answer. Alice then cancels, and the
// anchor lets the call go.
func TestReliableOfferPrackRefused(t *testing.T) {
	an := startAnchor(t)
	n := startNode(t, anchoredConfig("", an.ng))
	alice, bob := newUA(t, n, "udp", "alice"), registeredBob(t, n, "prack-refused-reg@test")
	invite := alice.call("sip:bob@sori.test")
	inv := bob.readRequest()
	bob.send(reliable183(inv, "bob-prack", contactOf(bob), "1", newMediaSocket(t).sdp(2002)))
	early := provisional(t, alice, 183)
	alice.send(prack(alice, 3, early, "v=0\r\nthis is no session description\r\n"))
	if res := alice.read(); res.StatusCode != 488 || res.CSeq().MethodName != sip.PRACK {
		t.Fatalf("alice got %d for %s, want 488 for the PRACK", res.StatusCode, res.CSeq().MethodName)
	}
	alice.send(cancelOf(invite))
	if req := bob.readRequest(); req.Method != sip.CANCEL {
		t.Fatalf("bob got %s, want the CANCEL (the refused PRACK must not reach him)", req.Method)
	} else {
		bob.respond(req, 200, "OK")
	}
	bob.respond(inv, 487, "Request Terminated")
	for {
		if res := alice.read(); res.StatusCode >= 200 && res.CSeq().MethodName == sip.INVITE {
			alice.send(ackFor(invite, res))
			break
		}
	}
	waitAnchorEmpty(t, an)
}
