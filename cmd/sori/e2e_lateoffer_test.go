package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/media/ng"
)

// Delayed offer (RFC 3261 §13.2.1): alice's INVITE has no SDP, bob's 200
// brings the offer and alice's ACK the answer. Every port here is the
// harness's own (freeSIPPort, startAnchor's free range, ephemeral media
// sockets), all on 127.0.0.1.

// answer200 is bob's 200 with an SDP body to req, as raw text: sent
// again byte for byte, it is a retransmission.
func answer200(req *sip.Request, tag, contact, body string) string {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.To().Params.Add("tag", tag)
	res.AppendHeader(sip.NewHeader("Contact", contact))
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res.SetBody([]byte(body))
	return res.String()
}

// lateCall has alice call bob with an INVITE without SDP; bob answers
// with mb's offer, and alice must get want. It returns bob's 200 as he
// sent it and alice's final response.
func lateCall(t *testing.T, n *node, mb *mediaSocket, want int) (alice, bob *ua, sent string, res *sip.Response) {
	t.Helper()
	alice, bob = newUA(t, n, "udp", "alice"), registeredBob(t, n, "late-reg@test")
	alice.authenticated("INVITE", "sip:bob@sori.test")
	inv := bob.readRequest()
	if len(inv.Body()) != 0 {
		t.Fatalf("the INVITE without SDP reached bob with a body:\n%s", inv.Body())
	}
	sent = answer200(inv, "bob-late", contactOf(bob), mb.sdp(2002))
	bob.send(sent)
	if res = alice.final(); res.StatusCode != want {
		t.Fatalf("INVITE: %d %s, want %d", res.StatusCode, res.Reason, want)
	}
	return alice, bob, sent, res
}

// legPackets is how many RTP packets the anchor received on tag's leg.
func legPackets(t *testing.T, q ng.Dict, tag string) int64 {
	t.Helper()
	medias, _ := q.Dict("tags").Dict(tag)["medias"].([]any)
	if len(medias) == 0 {
		t.Fatalf("query has no leg for tag %q: %v", tag, q)
	}
	streams, _ := ng.Dict(medias[0].(map[string]any))["streams"].([]any)
	n, _ := ng.Dict(streams[0].(map[string]any)).Dict("stats").Int("packets")
	return n
}

// A delayed-offer call is anchored: alice gets the anchor's SDP in the
// 200 (the same again for a retransmitted 200, one ng offer), bob the
// anchor's in the ACK, RTP flows both ways through the anchor, a
// re-INVITE without SDP keeps the ports, and BYE deletes the call.
func TestDelayedOfferAnchored(t *testing.T) {
	an := startAnchor(t)
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	n := startNode(t, anchoredConfig("cdr:\n  file: "+cdr+"\n", an.ng))
	ma, mb := newMediaSocket(t), newMediaSocket(t)
	alice, bob, sent, res := lateCall(t, n, mb, 200)
	toAnchorFromA := mediaTarget(t, res.Body())
	if !an.hasPort(toAnchorFromA) {
		t.Fatalf("alice's 200 sends media to %s, not to the anchor", toAnchorFromA)
	}
	// Bob did not see the ACK yet: his 200 again is a retransmission.
	bob.send(sent)
	again := alice.final()
	if string(again.Body()) != string(res.Body()) {
		t.Fatalf("the retransmitted 200 got another SDP:\n%s\nfirst:\n%s", again.Body(), res.Body())
	}

	toAnchorFromB := mediaTarget(t, ackWithAnswer(t, alice, bob, 2, res, ma.sdp(1001)).Body())
	if !an.hasPort(toAnchorFromB) || toAnchorFromB == toAnchorFromA {
		t.Fatalf("bob's ACK sends media to %s (alice's side: %s)", toAnchorFromB, toAnchorFromA)
	}
	streamBothWays(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce, 0xb0b, 50)

	callID := res.CallID().Value()
	aliceTag, bobTag := res.From().Params.GetOr("tag", ""), res.To().Params.GetOr("tag", "")
	q := ngQuery(t, an, callID)
	if a, b := legPackets(t, q, aliceTag), legPackets(t, q, bobTag); a < 50 || b < 50 {
		t.Fatalf("anchor legs: alice's received %d packets, bob's %d; want 50 each", a, b)
	}

	// A re-INVITE without SDP: the offer in bob's 200, the answer in the ACK.
	alice.send(strings.Replace(alice.inDialog("INVITE", 3, res), "CSeq: 3 INVITE\n",
		"CSeq: 3 INVITE\nContact: <sip:alice@"+alice.local+";transport=udp>\n", 1))
	reinv := bob.readRequest()
	if reinv.Method != sip.INVITE || len(reinv.Body()) != 0 {
		t.Fatalf("bob got %s with body %q", reinv.Method, reinv.Body())
	}
	bob.send(answer200(reinv, "bob-late", contactOf(bob), mb.sdp(2002)))
	reres := alice.final()
	if reres.StatusCode != 200 || mediaTarget(t, reres.Body()) != toAnchorFromA {
		t.Fatalf("re-INVITE: %d, media to %s (was %s)", reres.StatusCode, mediaTarget(t, reres.Body()), toAnchorFromA)
	}
	if to := mediaTarget(t, ackWithAnswer(t, alice, bob, 3, res, ma.sdp(1001)).Body()); to != toAnchorFromB {
		t.Fatalf("bob's ACK sends media to %s (was %s)", to, toAnchorFromB)
	}
	streamBothWays(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce2, 0xb0b2, 10)

	hangUp(t, alice, bob, 4, res)
	waitAnchorEmpty(t, an)
	if r := records(t, cdr, "bob", 1)[0]; r.Disposition != "answered" || r.HangupBy != "caller" || r.Code != 200 {
		t.Fatalf("call record %+v", r)
	}
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	for _, want := range []string{`sori_media_commands_total{command="offer",outcome="ok"} 2`, // the 200 and the re-INVITE's 200
		`sori_media_commands_total{command="answer",outcome="ok"} 2`, `sori_media_commands_total{command="delete",outcome="ok"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("sori metrics lack %s", want)
		}
	}
}

// An ACK without the answer to the 200's offer: the ACK goes on, sori
// sends BYE to both phones and deletes the media.
func TestDelayedOfferAckWithoutSDP(t *testing.T) {
	an := startAnchor(t)
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	n := startNode(t, anchoredConfig("cdr:\n  file: "+cdr+"\n", an.ng))
	alice, bob, _, res := lateCall(t, n, newMediaSocket(t), 200)
	if got := an.metric(t, "sori_anchor_calls"); got != "1" {
		t.Fatalf("anchor holds %q calls after the 200", got)
	}
	alice.send(alice.inDialog("ACK", 2, res))
	if ack := next(t, bob, sip.ACK, "the ACK"); len(ack.Body()) != 0 {
		t.Fatalf("bob got the ACK with body %q, want it as alice sent it", ack.Body())
	}
	for _, u := range []*ua{bob, alice} {
		bye := next(t, u, sip.BYE, "sori's BYE")
		if bye.CallID().Value() != res.CallID().Value() {
			t.Fatalf("%s got a BYE for %s, want sori's for %s", u.user, bye.CallID().Value(), res.CallID().Value())
		}
		u.respond(bye, 200, "OK")
	}
	waitAnchorEmpty(t, an)
	if r := records(t, cdr, "bob", 1)[0]; r.Disposition != "no-sdp-answer" || r.HangupBy != "no-sdp-answer" {
		t.Fatalf("call record %+v", r)
	}
}

// An ACK whose answer the anchor refuses (it is no SDP): bob cannot get
// an answer from the anchor, so the call ends as one without an answer.
func TestDelayedOfferAckAnswerRefused(t *testing.T) {
	an := startAnchor(t)
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	n := startNode(t, anchoredConfig("cdr:\n  file: "+cdr+"\n", an.ng))
	alice, bob, _, res := lateCall(t, n, newMediaSocket(t), 200)
	alice.send(withSDP(alice.inDialog("ACK", 2, res), "v=0\r\nthis is no session description\r\n"))
	next(t, bob, sip.ACK, "the ACK")
	for _, u := range []*ua{bob, alice} {
		bye := next(t, u, sip.BYE, "sori's BYE")
		if bye.CallID().Value() != res.CallID().Value() {
			t.Fatalf("%s got a BYE for %s, want sori's for %s", u.user, bye.CallID().Value(), res.CallID().Value())
		}
		u.respond(bye, 200, "OK")
	}
	waitAnchorEmpty(t, an)
	if r := records(t, cdr, "bob", 1)[0]; r.Disposition != "no-sdp-answer" {
		t.Fatalf("call record %+v", r)
	}
}

// No anchor takes the 200's offer: bob gets ACK and BYE, alice 503.
func TestDelayedOfferNoAnchor(t *testing.T) {
	dead := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
	n := startNode(t, anchoredConfig("  timeout: 300ms\n", dead))
	_, bob, _, res := lateCall(t, n, newMediaSocket(t), 503)
	if res.GetHeader("Retry-After") == nil {
		t.Fatalf("alice got %d %s without Retry-After", res.StatusCode, res.Reason)
	}
	endedBySori(t, bob)
}

// A delayed-offer call is moved off a dead anchor as any other: sori
// offers the survivor alice's SDP (her answer in the ACK) and re-INVITEs
// bob, then alice, and RTP flows again both ways through the survivor.
func TestDelayedOfferFailover(t *testing.T) {
	anA := startAnchor(t, "-media-timeout", "0")
	anB := startAnchor(t, "-media-timeout", "0")
	n := startNode(t, anchoredConfig("  timeout: 300ms\n  failover_after: 1s\n", anA.ng, anB.ng))
	ma, mb := newMediaSocket(t), newMediaSocket(t)
	alice, bob, _, res := lateCall(t, n, mb, 200)
	ackWithAnswer(t, alice, bob, 2, res, ma.sdp(1001))
	dead, survivor := anA, anB
	if to := mediaTarget(t, res.Body()); anB.hasPort(to) {
		dead, survivor = anB, anA
	}
	if err := dead.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-dead.exited

	toAnchorB := reinvitedTo(t, bob, res.From().Params.GetOr("tag", ""), survivor, mb.sdp(2002))
	toAnchorA := reinvitedTo(t, alice, res.To().Params.GetOr("tag", ""), survivor, ma.sdp(1001))
	streamBothWays(t, ma, toAnchorA, mb, toAnchorB, 0xa1, 0xb1, 20)

	hangUp(t, alice, bob, 3, res)
	waitAnchorEmpty(t, survivor)
}

// Bob's two phones ring in parallel and both answer with an offer: alice
// gets the first 200 (one ng offer); the second phone's 200 is ended by
// sori (ACK and BYE) and never reaches her, since the anchor holds one
// offerer for her leg.
func TestDelayedOfferForks(t *testing.T) {
	an := startAnchor(t)
	n := startNode(t, anchoredConfig("", an.ng))
	alice, bob1, bob2 := newUA(t, n, "udp", "alice"), registeredBob(t, n, "fork-reg-0@test"), registeredBob(t, n, "fork-reg-1@test")
	ma, mb1, mb2 := newMediaSocket(t), newMediaSocket(t), newMediaSocket(t)
	alice.authenticated("INVITE", "sip:bob@sori.test")
	inv1, inv2 := bob1.readRequest(), bob2.readRequest()
	bob1.send(answer200(inv1, "bob-1", contactOf(bob1), mb1.sdp(2001)))
	res := alice.final()
	if res.StatusCode != 200 || res.To().Params.GetOr("tag", "") != "bob-1" {
		t.Fatalf("INVITE: %d from %s", res.StatusCode, res.To().Value())
	}
	bob2.send(answer200(inv2, "bob-2", contactOf(bob2), mb2.sdp(2002)))
	endedBySori(t, bob2)

	ack := ackWithAnswer(t, alice, bob1, 2, res, ma.sdp(1001))
	toA, toB := mediaTarget(t, res.Body()), mediaTarget(t, ack.Body())
	streamBothWays(t, ma, toA, mb1, toB, 0xa11ce, 0xb0b, 20)

	// Had the second 200 reached alice, it would come before the BYE's.
	hangUp(t, alice, bob1, 3, res)
	waitAnchorEmpty(t, an)
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	if want := `sori_media_commands_total{command="offer",outcome="ok"} 1`; !strings.Contains(metrics, want) {
		t.Errorf("sori metrics lack %s", want)
	}
}

// Alice cancels while bob rings; bob's 200 with its offer crosses the
// CANCEL. Nothing reaches the anchor (no ng offer at all): sori ends
// bob's 200 with ACK and BYE, and alice gets 487.
func TestDelayedOfferCancelled(t *testing.T) {
	an := startAnchor(t)
	n := startNode(t, anchoredConfig("", an.ng))
	alice, bob := newUA(t, n, "udp", "alice"), registeredBob(t, n, "cancel-reg@test")
	invite := alice.call("sip:bob@sori.test")
	inv := bob.readRequest()
	bob.respond(inv, 180, "Ringing", "Contact: "+contactOf(bob))
	for res := alice.read(); res.StatusCode != 180; res = alice.read() {
		if res.StatusCode >= 200 {
			t.Fatalf("INVITE: %d while bob rings", res.StatusCode)
		}
	}
	alice.send(cancelOf(invite))
	bob.respond(next(t, bob, sip.CANCEL, "the CANCEL"), 200, "OK")
	bob.send(answer200(inv, "bob-late", contactOf(bob), newMediaSocket(t).sdp(2002)))
	endedBySori(t, bob)
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
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	if strings.Contains(metrics, `sori_media_commands_total{command="offer"`) {
		t.Errorf("sori sent an ng offer for a cancelled call")
	}
	if got := an.metric(t, "sori_anchor_calls"); got != "0" {
		t.Errorf("anchor holds %q calls", got)
	}
}
