package anchor

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/sori-voice/sori/media/ng"
)

// forkOffers offers alice's SDP from tag "ta" on two branches of call id:
// one toward a browser (WebRTC), one toward a plain phone (RTP/AVP).
func forkOffers(t *testing.T, m *Manager, id string, alice *udpPhone) (toBrowser, toPhone string) {
	t.Helper()
	wss := do(t, m, "offer", ng.Dict{"call-id": id, "from-tag": "ta", "via-branch": "z9hG4bK-wss", "sdp": phoneSDP(alice.addr()),
		"ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF", "replace": []any{"origin"}})
	if wss.Str("result") != "ok" {
		t.Fatalf("offer to the browser's branch: %v", wss)
	}
	udp := do(t, m, "offer", ng.Dict{"call-id": id, "from-tag": "ta", "via-branch": "z9hG4bK-udp", "sdp": phoneSDP(alice.addr()),
		"ICE": "remove", "transport-protocol": "RTP/AVP", "replace": []any{"origin"}})
	if udp.Str("result") != "ok" {
		t.Fatalf("offer to the phone's branch: %v", udp)
	}
	return wss.Str("sdp"), udp.Str("sdp")
}

// Each branch of a forked offer gets its own leg, made for what the
// branch speaks; the phone's answer on its branch is applied to that
// branch's offer, and the browser's branch, deleted by its via-branch,
// gives its ports back while the call goes on.
func TestForkedOfferGetsALegPerBranch(t *testing.T) {
	m, alloc := newManager(t, 50000, 0, nil)
	alice, bob := newUDPPhone(t), newUDPPhone(t)
	toBrowser, toPhone := forkOffers(t, m, "fork-1", alice)
	checkToBrowser(t, m, toBrowser, "actpass")
	phoneMedia := checkToPhone(t, toPhone, "RTP/AVP")
	if mediaOf(t, toBrowser).Port == phoneMedia.Port {
		t.Fatalf("both branches were offered port %d", phoneMedia.Port)
	}
	if alloc.InUse() != 3 {
		t.Fatalf("%d port pairs for the offerer and two branches, want 3", alloc.InUse())
	}
	// A branch's offer again (a retransmission) finds its own leg: the
	// other branch's offer does not overwrite it.
	again := do(t, m, "offer", ng.Dict{"call-id": "fork-1", "from-tag": "ta", "via-branch": "z9hG4bK-wss", "sdp": phoneSDP(alice.addr()),
		"ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF", "replace": []any{"origin"}})
	if w := checkToBrowser(t, m, again.Str("sdp"), "actpass"); mediaOf(t, again.Str("sdp")).Port != mediaOf(t, toBrowser).Port ||
		!strings.Contains(toBrowser, "a=ice-ufrag:"+w.Ufrag+"\r\n") || alloc.InUse() != 3 {
		t.Fatalf("the browser's branch offered again moved (%d pairs):\n%s\nwas\n%s", alloc.InUse(), again.Str("sdp"), toBrowser)
	}

	res := do(t, m, "answer", ng.Dict{"call-id": "fork-1", "from-tag": "ta", "to-tag": "tb", "via-branch": "z9hG4bK-udp", "sdp": phoneSDP(bob.addr()), "ICE": "remove"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer on the phone's branch: %v", res)
	}
	toAlice := checkToPhone(t, res.Str("sdp"), "RTP/AVP")
	portA := netip.AddrPortFrom(loopback, uint16(toAlice.Port))
	portB := netip.AddrPortFrom(loopback, uint16(phoneMedia.Port))
	for i := range 3 {
		if from := alice.roundTrip(t, portA, bob, []byte{0x80, 111, 0, byte(i)}); from != portB {
			t.Fatalf("bob got alice's packet from %s, want his branch's port %s", from, portB)
		}
		if from := bob.roundTrip(t, portB, alice, []byte{0x80, 111, 1, byte(i)}); from != portA {
			t.Fatalf("alice got bob's packet from %s, want %s", from, portA)
		}
	}
	q := do(t, m, "query", ng.Dict{"call-id": "fork-1"})
	if q.Dict("tags").Dict("ta").Str("in dialogue with") != "tb" || mediaDict(t, q, "tb").Str("protocol") != "RTP/AVP" {
		t.Fatalf("after the answer: %v", q.Dict("tags"))
	}

	if r := do(t, m, "delete", ng.Dict{"call-id": "fork-1", "from-tag": "ta", "via-branch": "z9hG4bK-nobody"}); r.Str("result") != "error" || alloc.InUse() != 3 {
		t.Fatalf("delete of a branch nobody offered: %v, %d pairs", r, alloc.InUse())
	}
	if r := do(t, m, "delete", ng.Dict{"call-id": "fork-1", "from-tag": "ta", "via-branch": "z9hG4bK-wss"}); r.Str("result") != "ok" {
		t.Fatalf("delete of the browser's branch: %v", r)
	}
	if alloc.InUse() != 2 {
		t.Fatalf("%d port pairs after the browser's branch went, want 2", alloc.InUse())
	}
	q = do(t, m, "query", ng.Dict{"call-id": "fork-1"})
	if len(q.Dict("tags")) != 2 || q.Dict("tags").Dict("ta").Str("in dialogue with") != "tb" {
		t.Fatalf("the call after its lost branch went: %v", q.Dict("tags"))
	}
	if from := alice.roundTrip(t, portA, bob, []byte{0x80, 111, 0, 9}); from != portB {
		t.Fatalf("media after the branch delete came from %s", from)
	}
	if r := do(t, m, "delete", ng.Dict{"call-id": "fork-1"}); r.Str("result") != "ok" || alloc.InUse() != 0 {
		t.Fatalf("delete: %v, %d pairs left", r, alloc.InUse())
	}
}

// The browser's branch answers, though the phone's was offered last: its
// answer finds its own branch's WebRTC leg; the phone's branch is deleted,
// and the offerer is answered in the profile it offered.
func TestForkedOfferAnsweredOnTheFirstBranch(t *testing.T) {
	m, alloc := newManager(t, 50200, 0, nil)
	alice := newUDPPhone(t)
	forkOffers(t, m, "fork-2", alice)
	answer := strings.Replace(browserSDP(t), "a=setup:actpass", "a=setup:active", 1)
	res := do(t, m, "answer", ng.Dict{"call-id": "fork-2", "from-tag": "ta", "to-tag": "browser", "via-branch": "z9hG4bK-wss", "sdp": answer, "ICE": "remove"})
	if res.Str("result") != "ok" {
		t.Fatalf("the browser's answer on its branch: %v", res)
	}
	checkToPhone(t, res.Str("sdp"), "RTP/AVP")
	b := mediaDict(t, do(t, m, "query", ng.Dict{"call-id": "fork-2"}), "browser")
	if b.Str("protocol") != "UDP/TLS/RTP/SAVPF" || b.Dict("SRTP").Str("DTLS role") != "server" {
		t.Fatalf("the browser's leg: %v", b)
	}
	if r := do(t, m, "delete", ng.Dict{"call-id": "fork-2", "from-tag": "ta", "via-branch": "z9hG4bK-udp"}); r.Str("result") != "ok" || alloc.InUse() != 2 {
		t.Fatalf("delete of the phone's branch: %v, %d pairs", r, alloc.InUse())
	}
	q := do(t, m, "query", ng.Dict{"call-id": "fork-2"})
	if q.Dict("tags").Dict("ta").Str("in dialogue with") != "browser" {
		t.Fatalf("after the phone's branch went: %v", q.Dict("tags"))
	}
	// Its last branch deleted, the call goes.
	if r := do(t, m, "delete", ng.Dict{"call-id": "fork-2", "from-tag": "ta", "via-branch": "z9hG4bK-wss"}); r.Str("result") != "ok" || alloc.InUse() != 0 {
		t.Fatalf("delete of the last branch: %v, %d pairs", r, alloc.InUse())
	}
	if r := do(t, m, "query", ng.Dict{"call-id": "fork-2"}); r.Str("result") != "error" {
		t.Fatalf("the call is still there: %v", r)
	}
}

// Offers without a via-branch, or an answer naming a Via no offer named
// (Kamailio's via-branch=1 in a reply route), keep the one peer leg of
// before branches.
func TestOffersWithoutBranchesShareOnePeer(t *testing.T) {
	m, alloc := newManager(t, 50400, 0, nil)
	alice, bob := newUDPPhone(t), newUDPPhone(t)
	offer := ng.Dict{"call-id": "fork-3", "from-tag": "ta", "sdp": phoneSDP(alice.addr()), "ICE": "remove"}
	first := do(t, m, "offer", offer)
	offer["via-branch"] = "z9hG4bK-caller"
	second := do(t, m, "offer", offer)
	if mediaOf(t, first.Str("sdp")).Port != mediaOf(t, second.Str("sdp")).Port || alloc.InUse() != 2 {
		t.Fatalf("an offer naming its branch after one that did not got another leg (%d pairs)", alloc.InUse())
	}
	res := do(t, m, "answer", ng.Dict{"call-id": "fork-3", "from-tag": "ta", "to-tag": "tb", "via-branch": "z9hG4bK-proxy", "sdp": phoneSDP(bob.addr())})
	if res.Str("result") != "ok" || alloc.InUse() != 2 {
		t.Fatalf("answer naming another Via: %v (%d pairs)", res, alloc.InUse())
	}
	if q := do(t, m, "query", ng.Dict{"call-id": "fork-3"}); q.Dict("tags").Dict("ta").Str("in dialogue with") != "tb" {
		t.Fatalf("%v", q.Dict("tags"))
	}
}
