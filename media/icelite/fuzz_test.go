package icelite

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// FuzzHandle: any datagram on a WebRTC leg's port that looks like STUN
// is answered with a well-formed response echoing its transaction, or
// not at all; only a check with the leg's credentials validates its
// source, and its success response maps that source.
func FuzzHandle(f *testing.F) {
	tid := stun.NewTransactionIDSetter([stun.TransactionIDSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	build := func(setters ...stun.Setter) []byte {
		m, err := stun.Build(append([]stun.Setter{tid}, setters...)...)
		if err != nil {
			f.Fatal(err)
		}
		return m.Raw
	}
	controlling := stun.RawAttribute{Type: stun.AttrICEControlling, Value: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	integrity := stun.NewShortTermIntegrity(local.Pwd)
	for _, p := range [][]byte{
		build(stun.BindingRequest, stun.NewUsername("anch:brow"), controlling, integrity, stun.Fingerprint),
		build(stun.BindingRequest, stun.NewUsername("anch:brow"), controlling, stun.RawAttribute{Type: stun.AttrUseCandidate}, integrity, stun.Fingerprint),
		build(stun.BindingRequest, stun.NewUsername("anch:brow"), stun.RawAttribute{Type: stun.AttrICEControlled, Value: make([]byte, 8)}, integrity, stun.Fingerprint),
		build(stun.BindingRequest, stun.NewUsername("anch"), integrity),
		build(stun.BindingRequest, stun.NewUsername("anch:brow"), stun.NewShortTermIntegrity("someoneelsespassword1234"), stun.Fingerprint),
		build(stun.NewType(stun.MethodAllocate, stun.ClassRequest), stun.Fingerprint),
		build(stun.NewType(stun.MethodBinding, stun.ClassIndication), stun.Fingerprint),
		build(stun.BindingSuccess),
		{0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1},
	} {
		f.Add(p, "")
		f.Add(p, "brow")
	}
	from := netip.MustParseAddrPort("198.51.100.7:40000")
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, pkt []byte, remote string) {
		a, err := New(local)
		if err != nil {
			t.Fatal(err)
		}
		a.SetRemoteUfrag(remote)
		res, _ := a.HandleAt(pkt, from, now)
		if res.Nominated && !res.Valid {
			t.Fatal("nominated without a valid check")
		}
		if res.Valid != a.Validated(from) {
			t.Fatalf("Valid %v, Validated %v", res.Valid, a.Validated(from))
		}
		if sel, ok := a.Selected(); ok != res.Valid || ok && sel != from {
			t.Fatalf("Selected %v %v after a check valid %v", sel, ok, res.Valid)
		}
		if res.Response == nil {
			if res.Valid {
				t.Fatal("a valid check unanswered")
			}
			return
		}
		r := &stun.Message{Raw: res.Response}
		if err := r.Decode(); err != nil {
			t.Fatalf("response does not decode: %v", err)
		}
		q := &stun.Message{Raw: append([]byte(nil), pkt...)}
		if err := q.Decode(); err != nil || q.TransactionID != r.TransactionID {
			t.Fatalf("response to a datagram that does not decode (%v), or another transaction", err)
		}
		if err := stun.Fingerprint.Check(r); err != nil {
			t.Fatalf("response FINGERPRINT: %v", err)
		}
		if !res.Valid {
			if r.Type.Class != stun.ClassErrorResponse {
				t.Fatalf("answered %v to a check that is not valid", r.Type)
			}
			return
		}
		var xor stun.XORMappedAddress
		if err := xor.GetFrom(r); err != nil || xor.Port != int(from.Port()) || !xor.IP.Equal(from.Addr().AsSlice()) {
			t.Fatalf("success response maps %v (%v), want %v", xor, err, from)
		}
		if err := stun.NewShortTermIntegrity(local.Pwd).Check(r); err != nil {
			t.Fatalf("success response integrity: %v", err)
		}
	})
}
