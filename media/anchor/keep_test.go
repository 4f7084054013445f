package anchor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
)

// memKeeper keeps snapshots in memory, as anchorstate's Keeper would in Redis.
type memKeeper struct {
	mu      sync.Mutex
	calls   map[string]anchorstate.Call
	saves   int
	deleted []string
}

func (k *memKeeper) Save(c anchorstate.Call) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls[c.ID] = c
	k.saves++
}

func (k *memKeeper) Delete(id string) func(context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.calls, id)
	k.deleted = append(k.deleted, id)
	return func(context.Context) error { return nil }
}

func (k *memKeeper) all() []anchorstate.Call {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []anchorstate.Call
	for _, c := range k.calls {
		// Through the encoding, as Redis would give it back.
		b, err := anchorstate.Encode(c)
		if err != nil {
			panic(err)
		}
		d, err := anchorstate.Decode(b)
		if err != nil {
			panic(err)
		}
		out = append(out, d)
	}
	return out
}

func keepingManager(t *testing.T, lo int, k Keeper) (*Manager, *ports.Allocator) {
	t.Helper()
	alloc, err := ports.New(loopback, lo, lo+199)
	if err != nil {
		t.Fatal(err)
	}
	m := New(Config{Advertise: []netip.Addr{loopback}, Ports: alloc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Keep: k, KeepEvery: time.Hour})
	t.Cleanup(alloc.Close) // after m.Close: cleanups run last first
	t.Cleanup(m.Close)
	return m, alloc
}

// rtpOf is an Opus RTP packet of 80 zero bytes: sequence number seq,
// timestamp seq frames of 20 ms on, SSRC 0x42.
func rtpOf(seq uint16) []byte {
	b := make([]byte, 92)
	b[0], b[1] = 0x80, 111
	b[2], b[3] = byte(seq>>8), byte(seq)
	ts := uint32(seq) * 960
	b[4], b[5], b[6], b[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
	b[11] = 0x42
	return b
}

func packets(t *testing.T, m *Manager, callID string) int64 {
	t.Helper()
	q := do(t, m, "query", ng.Dict{"call-id": callID})
	if q.Str("result") != "ok" {
		t.Fatalf("query %s: %v", callID, q)
	}
	n, _ := q.Dict("totals").Dict("RTP").Int("packets")
	return n
}

func TestKeptCallRestoresOnItsPortsWithItsCounters(t *testing.T) {
	k := &memKeeper{calls: map[string]anchorstate.Call{}}
	m1, alloc1 := keepingManager(t, 45200, k)
	pa, pb := newUDPPhone(t), newUDPPhone(t)
	offer := do(t, m1, "offer", ng.Dict{"call-id": "kept", "from-tag": "a", "sdp": phoneSDP(pa.addr()), "label": "caller"})
	answer := do(t, m1, "answer", ng.Dict{"call-id": "kept", "from-tag": "a", "to-tag": "b", "sdp": phoneSDP(pb.addr())})
	toA := netip.AddrPortFrom(loopback, uint16(mediaOf(t, answer.Str("sdp")).Port))
	toB := netip.AddrPortFrom(loopback, uint16(mediaOf(t, offer.Str("sdp")).Port))
	if k.saves != 2 {
		t.Fatalf("%d saves after offer and answer, want 2", k.saves)
	}
	for seq := uint16(0); seq < 10; seq++ {
		if seq != 4 { // one lost on A's uplink
			pa.roundTrip(t, toA, pb, rtpOf(seq))
		}
		pb.roundTrip(t, toB, pa, rtpOf(seq))
	}
	// Latching a new address is a change the next tick writes; a tick with
	// nothing new writes nothing.
	m1.keepChanged(time.Now())
	if k.saves != 3 {
		t.Fatalf("%d saves after latching, want 3", k.saves)
	}
	m1.keepChanged(time.Now())
	if k.saves != 3 {
		t.Fatalf("%d saves after a quiet tick, want 3", k.saves)
	}
	m1.keepAll(time.Now()) // the periodic write, with the counters
	before := do(t, m1, "query", ng.Dict{"call-id": "kept"})

	// The anchor goes; a new one on the same range restores the call.
	kept := k.all()
	m1.Close()
	if alloc1.InUse() != 0 {
		t.Fatal("ports held after Close")
	}
	alloc1.Close() // the old process's parked pairs go with it
	m2, alloc2 := keepingManager(t, 45200, k)
	n, dropped := m2.Restore(kept)
	if n != 1 || len(dropped) != 0 || alloc2.InUse() != 2 {
		t.Fatalf("restored %d, dropped %v, %d pairs", n, dropped, alloc2.InUse())
	}
	after := do(t, m2, "query", ng.Dict{"call-id": "kept"})
	for _, tag := range []string{"a", "b"} {
		if got, want := after.Dict("tags").Dict(tag).Str("in dialogue with"), before.Dict("tags").Dict(tag).Str("in dialogue with"); got != want {
			t.Fatalf("tag %s in dialogue with %q, want %q", tag, got, want)
		}
	}
	if after.Dict("tags").Dict("a").Str("label") != "caller" {
		t.Fatalf("label lost: %v", after.Dict("tags").Dict("a"))
	}
	if got := packets(t, m2, "kept"); got != 19 {
		t.Fatalf("restored call counts %d packets, want the 19 before the restart", got)
	}
	// B first: the anchor sends to A's latched address before A speaks again.
	if from := pb.roundTrip(t, toB, pa, rtpOf(10)); from != toA {
		t.Fatalf("A got B's packet from %s, want %s", from, toA)
	}
	if from := pa.roundTrip(t, toA, pb, rtpOf(10)); from != toB {
		t.Fatalf("B got A's packet from %s, want %s", from, toB)
	}
	if got := packets(t, m2, "kept"); got != 21 {
		t.Fatalf("%d packets after the restart, want 21", got)
	}
	reception := func(q ng.Dict, tag string) ng.Dict {
		medias, _ := q.Dict("tags").Dict(tag)["medias"].([]any)
		streams, _ := ng.Dict(medias[0].(map[string]any))["streams"].([]any)
		return ng.Dict(streams[0].(map[string]any)).Dict("reception")
	}
	q := do(t, m2, "query", ng.Dict{"call-id": "kept"})
	if lost, _ := reception(q, "a").Int("lost"); lost != 1 {
		t.Fatalf("A's uplink loss after the restart: %v", reception(q, "a"))
	}
	if exp, _ := reception(q, "a").Int("expected"); exp != 11 {
		t.Fatalf("A's uplink expected %d, want 11 (sequence continued)", exp)
	}

	del := do(t, m2, "delete", ng.Dict{"call-id": "kept"})
	if del.Str("result") != "ok" || alloc2.InUse() != 0 || len(k.deleted) != 1 || k.deleted[0] != "kept" {
		t.Fatalf("delete %v: %d pairs, deleted %v", del, alloc2.InUse(), k.deleted)
	}
}

func TestKeptCallWhosePortIsTakenIsDropped(t *testing.T) {
	k := &memKeeper{calls: map[string]anchorstate.Call{}}
	m1, alloc1 := keepingManager(t, 45400, k)
	for _, id := range []string{"one", "two"} {
		do(t, m1, "offer", ng.Dict{"call-id": id, "from-tag": "a", "sdp": phoneSDP(netip.MustParseAddrPort("127.0.0.1:4000"))})
		do(t, m1, "answer", ng.Dict{"call-id": id, "from-tag": "a", "to-tag": "b", "sdp": phoneSDP(netip.MustParseAddrPort("127.0.0.1:4002"))})
	}
	kept := k.all()
	m1.Close()
	alloc1.Close()
	var two anchorstate.Call
	for _, c := range kept {
		if c.ID == "two" {
			two = c
		}
	}
	// Another process took the second leg's RTCP port of call "two".
	held, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(two.Ports()[1]+1))))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	m2, alloc2 := keepingManager(t, 45400, k)
	n, dropped := m2.Restore(kept)
	if n != 1 || len(dropped) != 1 || !errors.Is(dropped["two"], ports.ErrTaken) {
		t.Fatalf("restored %d, dropped %v", n, dropped)
	}
	if alloc2.InUse() != 2 {
		t.Fatalf("%d pairs held: the dropped call's first leg was not released", alloc2.InUse())
	}
	if r := do(t, m2, "query", ng.Dict{"call-id": "one"}); r.Str("result") != "ok" {
		t.Fatalf("call one: %v", r)
	}
	// Restoring again finds the call held.
	if _, dropped := m2.Restore(kept[:1]); len(dropped) != 1 {
		t.Fatalf("a second restore of a held call: %v", dropped)
	}
}

// An SRTP call restored goes on with the keys both legs negotiated.
func TestKeptSRTPCallKeepsItsKeys(t *testing.T) {
	k := &memKeeper{calls: map[string]anchorstate.Call{}}
	manager := func() (*Manager, *ports.Allocator) {
		alloc, err := ports.New(srtpAnchor, 47700, 47799)
		if err != nil {
			t.Fatal(err)
		}
		m := New(Config{Advertise: []netip.Addr{srtpAnchor}, Ports: alloc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Keep: k})
		t.Cleanup(alloc.Close)
		t.Cleanup(m.Close)
		return m, alloc
	}
	m1, alloc1 := manager()
	a, b := &end{p: newUDPPhone(t)}, &end{p: newUDPPhone(t)}
	aKey := gen(t, 1, "AES_CM_128_HMAC_SHA1_80")
	offer := do(t, m1, "offer", ng.Dict{"call-id": "srtp-kept", "from-tag": "ta", "sdp": savpSDP(a.p.addr(), "RTP/SAVP", aKey)})
	offeredB := cryptosOf(t, offer.Str("sdp"))
	b.to = netip.AddrPortFrom(srtpAnchor, uint16(mediaOf(t, offer.Str("sdp")).Port))
	bKey := gen(t, offeredB[0].Tag, offeredB[0].Suite.Name)
	b.send, b.recv = ctx(t, bKey), ctx(t, offeredB[0])
	answer := do(t, m1, "answer", ng.Dict{"call-id": "srtp-kept", "from-tag": "ta", "to-tag": "tb", "sdp": savpSDP(b.p.addr(), "RTP/SAVP", bKey)})
	answeredA := cryptosOf(t, answer.Str("sdp"))
	a.to = netip.AddrPortFrom(srtpAnchor, uint16(mediaOf(t, answer.Str("sdp")).Port))
	a.send, a.recv = ctx(t, aKey), ctx(t, answeredA[0])
	relays(t, "A→B", a, b, 5)
	relays(t, "B→A", b, a, 5)
	m1.keepAll(time.Now())
	kept := k.all()
	m1.Close()
	alloc1.Close()

	m2, _ := manager()
	if n, dropped := m2.Restore(kept); n != 1 || len(dropped) != 0 {
		t.Fatalf("restored %d, dropped %v", n, dropped)
	}
	relaysFrom(t, "A→B after the restore", a, b, 6, 10)
	relaysFrom(t, "B→A after the restore", b, a, 6, 10)
	q := do(t, m2, "query", ng.Dict{"call-id": "srtp-kept"})
	md := ng.Dict(q.Dict("tags").Dict("tb")["medias"].([]any)[0].(map[string]any))
	if md.Dict("SRTP").Str("suite") != offeredB[0].Suite.Name || md.Str("protocol") != "RTP/SAVP" {
		t.Fatalf("B's leg after the restore: %v", md)
	}
}
