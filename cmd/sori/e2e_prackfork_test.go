package main

import (
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// Early dialogs of a fork (RFC 3261 §16.7, RFC 3262, RFC 6337 §3.1.1 and
// §5): alice's INVITE without SDP rings bob's two phones, and each offers
// in its own reliable 183. Each 183 reaches alice with the anchor's SDP
// for its early dialog (a port of its own), each PRACK's answer is
// anchored to its own dialog, and each phone's early media reaches alice
// through the anchor from its dialog's port (hers reaching that phone).
// One phone's 200 makes the call (the first's repeating its offer, or the
// second's without SDP): the other gets CANCEL, the anchor drops its
// early dialog's legs (the call keeps alice's and the winner's, one port
// pair each), and the BYE leaves the anchor empty.
func TestReliableOffersOfTwoForks(t *testing.T) {
	for _, secondWins := range []bool{false, true} {
		t.Run(map[bool]string{false: "the first answers, repeating its offer", true: "the second answers, without SDP"}[secondWins], func(t *testing.T) {
			reliableOffersOfTwoForks(t, secondWins)
		})
	}
}

func reliableOffersOfTwoForks(t *testing.T, secondWins bool) {
	an := startAnchor(t)
	n := startNode(t, anchoredConfig("", an.ng))
	alice, bob1, bob2 := newUA(t, n, "udp", "alice"), registeredBob(t, n, "prack-forks-0@test"), registeredBob(t, n, "prack-forks-1@test")
	ma, mb1, mb2 := newMediaSocket(t), newMediaSocket(t), newMediaSocket(t)
	alice.authenticated("INVITE", "sip:bob@sori.test", "Supported: 100rel")
	inv1, inv2 := bob1.readRequest(), bob2.readRequest()
	if len(inv1.Body()) != 0 || len(inv2.Body()) != 0 {
		t.Fatalf("the INVITE without SDP reached bob's phones with bodies %q, %q", inv1.Body(), inv2.Body())
	}

	bob1.send(reliable183(inv1, "bob-1", contactOf(bob1), "1", mb1.sdp(2001)))
	early1 := provisional(t, alice, 183)
	bob2.send(reliable183(inv2, "bob-2", contactOf(bob2), "1", mb2.sdp(2002)))
	early2 := provisional(t, alice, 183)
	if a, b := early1.To().Params.GetOr("tag", ""), early2.To().Params.GetOr("tag", ""); a != "bob-1" || b != "bob-2" {
		t.Fatalf("alice's 183s are from %q and %q, want bob-1's and bob-2's", a, b)
	}
	toA1, toA2 := mediaTarget(t, early1.Body()), mediaTarget(t, early2.Body())
	if !an.hasPort(toA1) || !an.hasPort(toA2) || toA1 == toA2 {
		t.Fatalf("alice's 183s send her media to %s and %s: want two anchor ports, one per early dialog", toA1, toA2)
	}

	// Alice answers each offer in its own PRACK (the second dialog's first).
	toB := map[string]netip.AddrPort{}
	for i, d := range []struct {
		bob   *ua
		early *sip.Response
	}{{bob2, early2}, {bob1, early1}} {
		alice.send(prack(alice, 3+i, d.early, ma.sdp(1001)))
		pr := next(t, d.bob, sip.PRACK, "the PRACK")
		to := mediaTarget(t, pr.Body())
		if !an.hasPort(to) || to == toA1 || to == toA2 {
			t.Fatalf("%s's PRACK sends its media to %s (alice's: %s, %s)", d.bob.local, to, toA1, toA2)
		}
		toB[d.early.To().Params.GetOr("tag", "")] = to
		d.bob.respond(pr, 200, "OK")
		if res := alice.read(); res.StatusCode != 200 || res.CSeq().MethodName != sip.PRACK || res.To().Params.GetOr("tag", "") != d.early.To().Params.GetOr("tag", "") {
			t.Fatalf("alice got %d for %s from %s, want 200 for her PRACK to %s", res.StatusCode, res.CSeq().MethodName, res.To().Value(), d.early.To().Value())
		}
	}
	toB1, toB2 := toB["bob-1"], toB["bob-2"]
	if toB1 == toB2 {
		t.Fatalf("both phones send to %s", toB1)
	}
	// Early media of each dialog, both ways through its own legs.
	streamBothWays(t, mb1, toB1, ma, toA1, 0xb0b1, 0xa11ce1, 20)
	streamBothWays(t, mb2, toB2, ma, toA2, 0xb0b2, 0xa11ce2, 20)

	type phone struct {
		bob      *ua
		inv      *sip.Request
		tag      string
		early    *sip.Response
		toA, toB netip.AddrPort
		media    *mediaSocket
		offer    string
	}
	win, lose := phone{bob1, inv1, "bob-1", early1, toA1, toB1, mb1, mb1.sdp(2001)}, phone{bob2, inv2, "bob-2", early2, toA2, toB2, mb2, ""}
	if secondWins {
		win, lose = phone{bob2, inv2, "bob-2", early2, toA2, toB2, mb2, ""}, phone{bob1, inv1, "bob-1", early1, toA1, toB1, mb1, ""}
	}
	// The winner answers, repeating its offer or with no SDP: alice gets
	// its 183's SDP, or none.
	ok200 := sip.NewResponseFromRequest(win.inv, 200, "OK", nil)
	ok200.To().Params.Add("tag", win.tag)
	ok200.AppendHeader(sip.NewHeader("Contact", contactOf(win.bob)))
	if win.offer != "" {
		ok200.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		ok200.SetBody([]byte(win.offer))
	}
	win.bob.send(ok200.String())
	res := alice.final()
	want := "" // no SDP in the 200: none goes up
	if win.offer != "" {
		want = string(win.early.Body())
	}
	if res.StatusCode != 200 || res.To().Params.GetOr("tag", "") != win.tag || string(res.Body()) != want {
		t.Fatalf("INVITE: %d from %s with SDP\n%s\nwant (%s's 183's, or none):\n%s", res.StatusCode, res.To().Value(), res.Body(), win.tag, want)
	}
	lose.bob.respond(next(t, lose.bob, sip.CANCEL, "sori's CANCEL"), 200, "OK")
	lose.bob.respond(lose.inv, 487, "Request Terminated")
	next(t, lose.bob, sip.ACK, "sori's ACK of the 487")
	if ack := sendACK(t, alice, win.bob, 2, res); len(ack.Body()) != 0 {
		t.Fatalf("%s got the ACK with body %q", win.tag, ack.Body())
	}

	// The losing dialog's legs go: alice's and the winner's are left.
	waitLoserDeleted(t, an, n)
	aliceTag := res.From().Params.GetOr("tag", "")
	tags := liveLegs(ngQuery(t, an, res.CallID().Value()).Dict("tags"))
	if len(tags) != 2 || tags.Dict(win.tag) == nil || peerOf(tags.Dict(win.tag)) != aliceTag || peerOf(tags.Dict(aliceTag)) != win.tag {
		t.Fatalf("the anchor's call has legs %v, want alice's and %s's, in dialogue", keys(tags), win.tag)
	}
	streamBothWays(t, ma, win.toA, win.media, win.toB, 0xa11ce3, 0xb0b3, 20)

	hangUp(t, alice, win.bob, 5, res)
	waitAnchorEmpty(t, an)
}
