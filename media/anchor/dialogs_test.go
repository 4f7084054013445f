package anchor

import (
	"net/netip"
	"testing"

	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/ng"
)

// earlyOffer is callee tag's offer in a reliable 18x to alice ("ta"):
// from-tag the callee's, to-tag alice's, via-branch her INVITE's.
func earlyOffer(t *testing.T, m *Manager, id, tag string, callee *udpPhone) netip.AddrPort {
	t.Helper()
	res := do(t, m, "offer", ng.Dict{"call-id": id, "from-tag": tag, "to-tag": "ta", "via-branch": "z9hG4bK-alice",
		"sdp": phoneSDP(callee.addr()), "ICE": "remove", "replace": []any{"origin"}})
	if res.Str("result") != "ok" {
		t.Fatalf("%s's offer: %v", tag, res)
	}
	return netip.AddrPortFrom(loopback, uint16(mediaOf(t, res.Str("sdp")).Port))
}

// prackAnswer is alice's answer in her PRACK to callee tag's offer; it
// returns where the callee sends to.
func prackAnswer(t *testing.T, m *Manager, id, tag string, alice *udpPhone) netip.AddrPort {
	t.Helper()
	res := do(t, m, "answer", ng.Dict{"call-id": id, "from-tag": tag, "to-tag": "ta", "sdp": phoneSDP(alice.addr()), "ICE": "remove"})
	if res.Str("result") != "ok" {
		t.Fatalf("alice's answer to %s: %v", tag, res)
	}
	return netip.AddrPortFrom(loopback, uint16(mediaOf(t, res.Str("sdp")).Port))
}

// Two callees offer to alice's one tag in their reliable 18x: each early
// dialog gets a caller-side leg of its own (another port for alice), a
// retransmitted offer finds its own, each PRACK answer pairs with its own
// dialog's offer, and each callee's early media reaches alice from its
// dialog's port, hers reaching that callee. The delete of the callee that
// lost (its from-tag alone) leaves the winner's two legs, and the call's
// delete the rest.
func TestEarlyDialogsGetALegEach(t *testing.T) {
	m, alloc := newManager(t, 50600, 0, nil)
	alice, bob1, bob2 := newUDPPhone(t), newUDPPhone(t), newUDPPhone(t)
	toA1 := earlyOffer(t, m, "early-1", "b1", bob1)
	toA2 := earlyOffer(t, m, "early-1", "b2", bob2)
	if toA1 == toA2 || alloc.InUse() != 4 {
		t.Fatalf("alice got %s and %s for the two dialogs, %d port pairs; want two ports, 4 pairs", toA1, toA2, alloc.InUse())
	}
	if again := earlyOffer(t, m, "early-1", "b2", bob2); again != toA2 || alloc.InUse() != 4 {
		t.Fatalf("b2's offer again gave %s (first %s), %d pairs", again, toA2, alloc.InUse())
	}
	if again := earlyOffer(t, m, "early-1", "b1", bob1); again != toA1 || alloc.InUse() != 4 {
		t.Fatalf("b1's offer again gave %s (first %s), %d pairs", again, toA1, alloc.InUse())
	}
	toB2 := prackAnswer(t, m, "early-1", "b2", alice) // the second dialog answered first
	toB1 := prackAnswer(t, m, "early-1", "b1", alice)
	if toB1 == toB2 || toB1 == toA1 || toB2 == toA2 || alloc.InUse() != 4 {
		t.Fatalf("the callees send to %s and %s (alice to %s, %s), %d pairs", toB1, toB2, toA1, toA2, alloc.InUse())
	}
	for i := range 3 {
		for _, d := range []struct {
			callee     *udpPhone
			toA, toB   netip.AddrPort
			name       string
			calleeByte byte
		}{{bob1, toA1, toB1, "b1", 1}, {bob2, toA2, toB2, "b2", 2}} {
			if from := d.callee.roundTrip(t, d.toB, alice, []byte{0x80, 111, d.calleeByte, byte(i)}); from != d.toA {
				t.Fatalf("%s's early media reached alice from %s, want its dialog's port %s", d.name, from, d.toA)
			}
			if from := alice.roundTrip(t, d.toA, d.callee, []byte{0x80, 111, 9, byte(i)}); from != d.toB {
				t.Fatalf("alice's media to %s's dialog came from %s, want %s", d.name, from, d.toB)
			}
		}
	}

	// b1 answers: b2's early dialog goes.
	if r := do(t, m, "delete", ng.Dict{"call-id": "early-1", "from-tag": "b2"}); r.Str("result") != "ok" || alloc.InUse() != 2 {
		t.Fatalf("delete of the losing callee: %v, %d pairs", r, alloc.InUse())
	}
	tags := do(t, m, "query", ng.Dict{"call-id": "early-1"}).Dict("tags")
	if len(tags) != 2 || tags.Dict("ta").Str("in dialogue with") != "b1" || tags.Dict("b1").Str("in dialogue with") != "ta" {
		t.Fatalf("after the loser's delete: %v", tags)
	}
	if from := bob1.roundTrip(t, toB1, alice, []byte{0x80, 111, 1, 7}); from != toA1 {
		t.Fatalf("the winner's media came from %s", from)
	}
	// The 2xx repeats b1's offer: the same legs.
	if again := earlyOffer(t, m, "early-1", "b1", bob1); again != toA1 || alloc.InUse() != 2 {
		t.Fatalf("b1's offer in the 2xx gave %s (first %s), %d pairs", again, toA1, alloc.InUse())
	}
	if r := do(t, m, "delete", ng.Dict{"call-id": "early-1", "from-tag": "ta"}); r.Str("result") != "ok" || alloc.InUse() != 0 {
		t.Fatalf("delete: %v, %d pairs left", r, alloc.InUse())
	}
	if r := do(t, m, "query", ng.Dict{"call-id": "early-1"}); r.Str("result") != "error" {
		t.Fatalf("the call is still there: %v", r)
	}
}

// A callee that offers after another's early dialog, in its 2xx, gets a
// dialog of its own too; the first callee's delete leaves it. A delete
// of the only dialog's tag ends the call.
func TestEarlyDialogTakenOverBy2xx(t *testing.T) {
	m, alloc := newManager(t, 50800, 0, nil)
	alice, bob1, bob2 := newUDPPhone(t), newUDPPhone(t), newUDPPhone(t)
	toA1 := earlyOffer(t, m, "early-2", "b1", bob1)
	prackAnswer(t, m, "early-2", "b1", alice)
	toA2 := earlyOffer(t, m, "early-2", "b2", bob2)
	toB2 := prackAnswer(t, m, "early-2", "b2", alice) // the ACK's answer
	if toA1 == toA2 || alloc.InUse() != 4 {
		t.Fatalf("alice got %s and %s, %d pairs", toA1, toA2, alloc.InUse())
	}
	if r := do(t, m, "delete", ng.Dict{"call-id": "early-2", "from-tag": "b1"}); r.Str("result") != "ok" || alloc.InUse() != 2 {
		t.Fatalf("delete of b1: %v, %d pairs", r, alloc.InUse())
	}
	if from := bob2.roundTrip(t, toB2, alice, []byte{0x80, 111, 2, 1}); from != toA2 {
		t.Fatalf("b2's media came from %s, want %s", from, toA2)
	}
	if r := do(t, m, "delete", ng.Dict{"call-id": "early-2", "from-tag": "b2"}); r.Str("result") != "ok" || alloc.InUse() != 0 {
		t.Fatalf("delete of the last dialog's callee: %v, %d pairs left", r, alloc.InUse())
	}
	if r := do(t, m, "query", ng.Dict{"call-id": "early-2"}); r.Str("result") != "error" {
		t.Fatalf("the call is still there: %v", r)
	}
}

// Two early dialogs survive a restart (keep.go keeps the legs by index,
// not by tag): each callee's media reaches alice from its own dialog's
// port again, and the loser's delete leaves the winner's legs.
func TestEarlyDialogsRestored(t *testing.T) {
	k := &memKeeper{calls: map[string]anchorstate.Call{}}
	m1, alloc1 := keepingManager(t, 51000, k)
	alice, bob1, bob2 := newUDPPhone(t), newUDPPhone(t), newUDPPhone(t)
	toA1 := earlyOffer(t, m1, "early-3", "b1", bob1)
	toA2 := earlyOffer(t, m1, "early-3", "b2", bob2)
	toB1 := prackAnswer(t, m1, "early-3", "b1", alice)
	toB2 := prackAnswer(t, m1, "early-3", "b2", alice)
	kept := k.all()
	m1.Close()
	alloc1.Close()
	m2, alloc2 := keepingManager(t, 51000, k)
	if n, dropped := m2.Restore(kept); n != 1 || len(dropped) != 0 || alloc2.InUse() != 4 {
		t.Fatalf("restored %d, dropped %v, %d pairs", n, dropped, alloc2.InUse())
	}
	if from := bob1.roundTrip(t, toB1, alice, rtpOf(1)); from != toA1 {
		t.Fatalf("b1's media reached alice from %s after the restart, want %s", from, toA1)
	}
	if from := bob2.roundTrip(t, toB2, alice, rtpOf(1)); from != toA2 {
		t.Fatalf("b2's media reached alice from %s after the restart, want %s", from, toA2)
	}
	if again := earlyOffer(t, m2, "early-3", "b2", bob2); again != toA2 || alloc2.InUse() != 4 {
		t.Fatalf("b2's offer again after the restart gave %s (was %s), %d pairs", again, toA2, alloc2.InUse())
	}
	if r := do(t, m2, "delete", ng.Dict{"call-id": "early-3", "from-tag": "b1"}); r.Str("result") != "ok" || alloc2.InUse() != 2 {
		t.Fatalf("delete of the losing callee: %v, %d pairs", r, alloc2.InUse())
	}
	if from := alice.roundTrip(t, toA2, bob2, rtpOf(2)); from != toB2 {
		t.Fatalf("alice's media reached b2 from %s, want %s", from, toB2)
	}
	if len(k.all()) != 1 || len(k.all()[0].Legs) != 2 {
		t.Fatalf("kept after the loser's delete: %+v", k.all())
	}
}
