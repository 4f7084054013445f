package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/media/ng"
)

// Delayed offer (RFC 3261 §13.2.1): alice's INVITE has no SDP, bob's 200
// brings the offer and alice's ACK the answer. Every port here is the
// harness's own (freeSIPPort, startAnchor's free range, ephemeral media
// sockets), all on 127.0.0.1.

// withSDP is a request built by ua (Content-Length: 0, no body) with body
// as its SDP.
func withSDP(raw, body string) string {
	head, _, _ := strings.Cut(raw, "Content-Length: 0\n\n")
	return head + fmt.Sprintf("Content-Type: application/sdp\nContent-Length: %d\n\n", len(body)) + body
}

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
// with mb's offer. It returns the INVITE as bob got it, bob's 200 as he
// sent it and the 200 as alice got it.
func lateCall(t *testing.T, n *node, mb *mediaSocket) (alice, bob *ua, inv *sip.Request, sent string, res *sip.Response) {
	t.Helper()
	alice, bob = newUA(t, n, "udp", "alice"), newUA(t, n, "udp", "bob")
	if r := bob.registerAuth("bob", "bob-secret", "late-reg-"+bob.local+"@test", 1, "Contact: <sip:bob@"+bob.local+">"); r.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", r.StatusCode)
	}
	alice.authenticated("INVITE", "sip:bob@sori.test")
	inv = bob.readRequest()
	if len(inv.Body()) != 0 {
		t.Fatalf("the INVITE without SDP reached bob with a body:\n%s", inv.Body())
	}
	sent = answer200(inv, "bob-late", "<sip:bob@"+bob.local+">", mb.sdp(2002))
	bob.send(sent)
	res = alice.final()
	return alice, bob, inv, sent, res
}

func ngQuery(t *testing.T, an *anchorProc, callID string) ng.Dict {
	t.Helper()
	client, err := ng.NewClient("127.0.0.1:0", 200*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	q, err := client.Do(ctx, netip.MustParseAddrPort(an.ng), ng.Dict{"command": "query", "call-id": callID})
	if err != nil || q.Str("result") != "ok" {
		t.Fatalf("query: %v %v", q, err)
	}
	return q
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

func waitAnchorEmpty(t *testing.T, an *anchorProc) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); an.metric(t, "sori_anchor_calls") != "0" || an.metric(t, "sori_anchor_ports_in_use") != "0"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the anchor holds %s calls and %s port pairs", an.metric(t, "sori_anchor_calls"), an.metric(t, "sori_anchor_ports_in_use"))
		}
	}
}

// A delayed-offer call is anchored: alice gets the anchor's SDP in the
// 200 (the same again for a retransmitted 200, one ng offer), bob the
// anchor's in the ACK, RTP flows both ways through the anchor, a
// re-INVITE without SDP keeps the ports, and BYE deletes the call.
func TestDelayedOfferAnchored(t *testing.T) {
	an := startAnchor(t)
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	n := startNode(t, nodeConfig{extra: fmt.Sprintf("media:\n  anchors: [%q]\n  ping_interval: 1s\ncdr:\n  file: %s\n", an.ng, cdr)})
	inAnchorRange := func(ap netip.AddrPort) bool {
		return ap.Addr() == netip.MustParseAddr("127.0.0.1") && int(ap.Port()) >= an.minPort && int(ap.Port()) <= an.maxPort
	}
	ma, mb := newMediaSocket(t), newMediaSocket(t)
	alice, bob, _, sent, res := lateCall(t, n, mb)
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", res.StatusCode)
	}
	toAnchorFromA := mediaTarget(t, res.Body())
	if !inAnchorRange(toAnchorFromA) {
		t.Fatalf("alice's 200 sends media to %s, not to the anchor", toAnchorFromA)
	}
	// Bob did not see the ACK yet: his 200 again is a retransmission.
	bob.send(sent)
	again := alice.final()
	if string(again.Body()) != string(res.Body()) {
		t.Fatalf("the retransmitted 200 got another SDP:\n%s\nfirst:\n%s", again.Body(), res.Body())
	}

	alice.send(withSDP(alice.inDialog("ACK", 2, res), ma.sdp(1001)))
	ack := bob.readRequest()
	if ack.Method != sip.ACK {
		t.Fatalf("bob got %s, want the ACK", ack.Method)
	}
	toAnchorFromB := mediaTarget(t, ack.Body())
	if !inAnchorRange(toAnchorFromB) || toAnchorFromB == toAnchorFromA {
		t.Fatalf("bob's ACK sends media to %s (alice's side: %s)", toAnchorFromB, toAnchorFromA)
	}
	stream(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce, 50)
	stream(t, mb, toAnchorFromB, ma, toAnchorFromA, 0xb0b, 50)

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
	bob.send(answer200(reinv, "bob-late", "<sip:bob@"+bob.local+">", mb.sdp(2002)))
	reres := alice.final()
	if reres.StatusCode != 200 || mediaTarget(t, reres.Body()) != toAnchorFromA {
		t.Fatalf("re-INVITE: %d, media to %s (was %s)", reres.StatusCode, mediaTarget(t, reres.Body()), toAnchorFromA)
	}
	alice.send(withSDP(alice.inDialog("ACK", 3, res), ma.sdp(1001)))
	reack := bob.readRequest()
	if reack.Method != sip.ACK || mediaTarget(t, reack.Body()) != toAnchorFromB {
		t.Fatalf("bob got %s sending media to %s (was %s)", reack.Method, mediaTarget(t, reack.Body()), toAnchorFromB)
	}
	stream(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce2, 10)
	stream(t, mb, toAnchorFromB, ma, toAnchorFromA, 0xb0b2, 10)

	alice.send(alice.inDialog("BYE", 4, res))
	bob.respond(bob.readRequest(), 200, "OK")
	if r := alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
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
	n := startNode(t, nodeConfig{extra: fmt.Sprintf("media:\n  anchors: [%q]\n  ping_interval: 1s\ncdr:\n  file: %s\n", an.ng, cdr)})
	mb := newMediaSocket(t)
	alice, bob, _, _, res := lateCall(t, n, mb)
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", res.StatusCode)
	}
	if got := an.metric(t, "sori_anchor_calls"); got != "1" {
		t.Fatalf("anchor holds %q calls after the 200", got)
	}
	alice.send(alice.inDialog("ACK", 2, res))
	if ack := bob.readRequest(); ack.Method != sip.ACK || len(ack.Body()) != 0 {
		t.Fatalf("bob got %s with body %q, want the ACK as alice sent it", ack.Method, ack.Body())
	}
	for _, u := range []*ua{bob, alice} {
		bye := u.readRequest()
		if bye.Method != sip.BYE || bye.CallID().Value() != res.CallID().Value() {
			t.Fatalf("%s got %s, want sori's BYE", u.user, bye.Method)
		}
		u.respond(bye, 200, "OK")
	}
	waitAnchorEmpty(t, an)
	if r := records(t, cdr, "bob", 1)[0]; r.Disposition != "no-sdp-answer" || r.HangupBy != "no-sdp-answer" {
		t.Fatalf("call record %+v", r)
	}
}

// No anchor takes the 200's offer: bob gets ACK and BYE, alice 503.
func TestDelayedOfferNoAnchor(t *testing.T) {
	dead := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
	n := startNode(t, nodeConfig{extra: fmt.Sprintf("media:\n  anchors: [%q]\n  timeout: 300ms\n  ping_interval: 1s\n", dead)})
	mb := newMediaSocket(t)
	_, bob, _, _, res := lateCall(t, n, mb)
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("alice got %d %s", res.StatusCode, res.Reason)
	}
	if ack := bob.readRequest(); ack.Method != sip.ACK {
		t.Fatalf("bob got %s, want ACK", ack.Method)
	}
	bye := bob.readRequest()
	if bye.Method != sip.BYE {
		t.Fatalf("bob got %s, want BYE", bye.Method)
	}
	bob.respond(bye, 200, "OK")
}

// A delayed-offer call is moved off a dead anchor as any other: sori
// offers the survivor alice's SDP (her answer in the ACK) and re-INVITEs
// bob, then alice, and RTP flows again both ways through the survivor.
func TestDelayedOfferFailover(t *testing.T) {
	anA := startAnchor(t, "-media-timeout", "0")
	anB := startAnchor(t, "-media-timeout", "0")
	n := startNode(t, nodeConfig{extra: fmt.Sprintf("media:\n  anchors: [%q, %q]\n  timeout: 300ms\n  ping_interval: 1s\n  failover_after: 1s\n", anA.ng, anB.ng)})
	ma, mb := newMediaSocket(t), newMediaSocket(t)
	alice, bob, _, _, res := lateCall(t, n, mb)
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", res.StatusCode)
	}
	alice.send(withSDP(alice.inDialog("ACK", 2, res), ma.sdp(1001)))
	if ack := bob.readRequest(); ack.Method != sip.ACK {
		t.Fatalf("bob got %s, want the ACK", ack.Method)
	}
	dead, survivor := anA, anB
	if to := mediaTarget(t, res.Body()); anB.owns(to.Addr().String(), fmt.Sprint(to.Port())) {
		dead, survivor = anB, anA
	}
	if err := dead.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-dead.exited

	reinv := bob.readRequest()
	if reinv.Method != sip.INVITE || reinv.From().Params.GetOr("tag", "") != res.From().Params.GetOr("tag", "") {
		t.Fatalf("bob got, want sori's re-INVITE as alice:\n%s", reinv)
	}
	toAnchorB := mediaTarget(t, reinv.Body())
	if !survivor.owns(toAnchorB.Addr().String(), fmt.Sprint(toAnchorB.Port())) {
		t.Fatalf("bob is sent to %s, not the surviving anchor", toAnchorB)
	}
	bob.respondSDP(reinv, 200, "OK", mb.sdp(2002), "Contact: <sip:bob@"+bob.local+">")
	if ack := bob.readRequest(); ack.Method != sip.ACK {
		t.Fatalf("bob got %s, want sori's ACK", ack.Method)
	}
	reinvA := alice.readRequest()
	if reinvA.Method != sip.INVITE || reinvA.From().Params.GetOr("tag", "") != res.To().Params.GetOr("tag", "") {
		t.Fatalf("alice got, want sori's re-INVITE as bob:\n%s", reinvA)
	}
	toAnchorA := mediaTarget(t, reinvA.Body())
	if !survivor.owns(toAnchorA.Addr().String(), fmt.Sprint(toAnchorA.Port())) {
		t.Fatalf("alice is sent to %s, not the surviving anchor", toAnchorA)
	}
	alice.respondSDP(reinvA, 200, "OK", ma.sdp(1001), "Contact: <sip:alice@"+alice.local+">")
	if ack := alice.readRequest(); ack.Method != sip.ACK {
		t.Fatalf("alice got %s, want sori's ACK", ack.Method)
	}
	stream(t, ma, toAnchorA, mb, toAnchorB, 0xa1, 20)
	stream(t, mb, toAnchorB, ma, toAnchorA, 0xb1, 20)

	alice.send(alice.inDialog("BYE", 3, res))
	bob.respond(bob.readRequest(), 200, "OK")
	if r := alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
	waitAnchorEmpty(t, survivor)
}

// Bob's two phones ring in parallel and both answer with an offer: alice
// gets the first 200 (one ng offer); the second phone's 200 is ended by
// sori (ACK and BYE) and never reaches her, since the anchor holds one
// offerer for her leg.
func TestDelayedOfferForks(t *testing.T) {
	an := startAnchor(t)
	n := startNode(t, nodeConfig{extra: fmt.Sprintf("media:\n  anchors: [%q]\n  ping_interval: 1s\n", an.ng)})
	alice, bob1, bob2 := newUA(t, n, "udp", "alice"), newUA(t, n, "udp", "bob"), newUA(t, n, "udp", "bob")
	for i, b := range []*ua{bob1, bob2} {
		if r := b.registerAuth("bob", "bob-secret", fmt.Sprintf("fork-reg-%d@test", i), 1, "Contact: <sip:bob@"+b.local+">"); r.StatusCode != 200 {
			t.Fatalf("REGISTER: %d", r.StatusCode)
		}
	}
	ma, mb1, mb2 := newMediaSocket(t), newMediaSocket(t), newMediaSocket(t)
	alice.authenticated("INVITE", "sip:bob@sori.test")
	inv1, inv2 := bob1.readRequest(), bob2.readRequest()
	bob1.send(answer200(inv1, "bob-1", "<sip:bob@"+bob1.local+">", mb1.sdp(2001)))
	res := alice.final()
	if res.StatusCode != 200 || res.To().Params.GetOr("tag", "") != "bob-1" {
		t.Fatalf("INVITE: %d from %s", res.StatusCode, res.To().Value())
	}
	bob2.send(answer200(inv2, "bob-2", "<sip:bob@"+bob2.local+">", mb2.sdp(2002)))
	if ack := bob2.readRequest(); ack.Method != sip.ACK {
		t.Fatalf("bob's second phone got %s, want sori's ACK", ack.Method)
	}
	bye := bob2.readRequest()
	if bye.Method != sip.BYE {
		t.Fatalf("bob's second phone got %s, want sori's BYE", bye.Method)
	}
	bob2.respond(bye, 200, "OK")

	alice.send(withSDP(alice.inDialog("ACK", 2, res), ma.sdp(1001)))
	ack := bob1.readRequest()
	if ack.Method != sip.ACK {
		t.Fatalf("bob got %s, want the ACK", ack.Method)
	}
	toA, toB := mediaTarget(t, res.Body()), mediaTarget(t, ack.Body())
	stream(t, ma, toA, mb1, toB, 0xa11ce, 20)
	stream(t, mb1, toB, ma, toA, 0xb0b, 20)

	alice.send(alice.inDialog("BYE", 3, res))
	bob1.respond(bob1.readRequest(), 200, "OK")
	// Had the second 200 reached alice, it would come before this.
	if r := alice.final(); r.StatusCode != 200 || r.CSeq().MethodName != sip.BYE {
		t.Fatalf("alice got %d for %s, want 200 for her BYE", r.StatusCode, r.CSeq().MethodName)
	}
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
	n := startNode(t, nodeConfig{extra: fmt.Sprintf("media:\n  anchors: [%q]\n  ping_interval: 1s\n", an.ng)})
	alice, bob := newUA(t, n, "udp", "alice"), newUA(t, n, "udp", "bob")
	if r := bob.registerAuth("bob", "bob-secret", "cancel-reg@test", 1, "Contact: <sip:bob@"+bob.local+">"); r.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", r.StatusCode)
	}
	invite := alice.call("sip:bob@sori.test")
	inv := bob.readRequest()
	bob.respond(inv, 180, "Ringing", "Contact: <sip:bob@"+bob.local+">")
	for res := alice.read(); res.StatusCode != 180; res = alice.read() {
		if res.StatusCode >= 200 {
			t.Fatalf("INVITE: %d while bob rings", res.StatusCode)
		}
	}
	alice.send(cancelOf(invite))
	cancel := bob.readRequest()
	if cancel.Method != sip.CANCEL {
		t.Fatalf("bob got %s, want CANCEL", cancel.Method)
	}
	bob.respond(cancel, 200, "OK")
	bob.send(answer200(inv, "bob-late", "<sip:bob@"+bob.local+">", newMediaSocket(t).sdp(2002)))
	for _, want := range []sip.RequestMethod{sip.ACK, sip.BYE} {
		req := bob.readRequest()
		if req.Method != want {
			t.Fatalf("bob got %s, want sori's %s", req.Method, want)
		}
		if want == sip.BYE {
			bob.respond(req, 200, "OK")
		}
	}
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
