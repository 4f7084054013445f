package icelite

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

var local = Credentials{Ufrag: "anch", Pwd: "anchorpasswordof24chars+"}

// check builds a browser's Binding request.
func check(t *testing.T, extra ...stun.Setter) []byte {
	t.Helper()
	setters := append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, extra...)
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func controlling() stun.Setter {
	return stun.RawAttribute{Type: stun.AttrICEControlling, Value: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
}

func TestHandle(t *testing.T) {
	from := netip.MustParseAddrPort("127.0.0.30:40000")
	good := []stun.Setter{stun.NewUsername("anch:brow"), controlling(), stun.NewShortTermIntegrity(local.Pwd), stun.Fingerprint}
	tests := []struct {
		name       string
		remote     string // SetRemoteUfrag
		pkt        func(t *testing.T) []byte
		err        error
		code       stun.ErrorCode // 0: success response (or none when !respond)
		respond    bool
		valid, nom bool
	}{
		{name: "check", pkt: func(t *testing.T) []byte { return check(t, good...) }, respond: true, valid: true},
		{name: "check naming the known remote ufrag", remote: "brow", pkt: func(t *testing.T) []byte { return check(t, good...) }, respond: true, valid: true},
		{name: "nomination", pkt: func(t *testing.T) []byte {
			return check(t, stun.NewUsername("anch:brow"), controlling(), stun.RawAttribute{Type: stun.AttrUseCandidate}, stun.NewShortTermIntegrity(local.Pwd), stun.Fingerprint)
		}, respond: true, valid: true, nom: true},
		{name: "wrong password", pkt: func(t *testing.T) []byte {
			return check(t, stun.NewUsername("anch:brow"), controlling(), stun.NewShortTermIntegrity("someoneelsespassword1234"), stun.Fingerprint)
		}, err: ErrUnauthorized, code: stun.CodeUnauthorized, respond: true},
		{name: "wrong local ufrag", pkt: func(t *testing.T) []byte {
			return check(t, stun.NewUsername("other:brow"), controlling(), stun.NewShortTermIntegrity(local.Pwd), stun.Fingerprint)
		}, err: ErrUnauthorized, code: stun.CodeUnauthorized, respond: true},
		{name: "wrong remote ufrag", remote: "else", pkt: func(t *testing.T) []byte { return check(t, good...) }, err: ErrUnauthorized, code: stun.CodeUnauthorized, respond: true},
		{name: "no username", pkt: func(t *testing.T) []byte {
			return check(t, controlling(), stun.NewShortTermIntegrity(local.Pwd), stun.Fingerprint)
		}, err: ErrBadRequest, code: stun.CodeBadRequest, respond: true},
		{name: "no integrity", pkt: func(t *testing.T) []byte {
			return check(t, stun.NewUsername("anch:brow"), controlling(), stun.Fingerprint)
		}, err: ErrBadRequest, code: stun.CodeBadRequest, respond: true},
		{name: "peer also controlled", pkt: func(t *testing.T) []byte {
			return check(t, stun.NewUsername("anch:brow"), stun.RawAttribute{Type: stun.AttrICEControlled, Value: make([]byte, 8)}, stun.NewShortTermIntegrity(local.Pwd), stun.Fingerprint)
		}, err: ErrRoleConflict, code: stun.CodeRoleConflict, respond: true},
		{name: "bad fingerprint is dropped", pkt: func(t *testing.T) []byte {
			b := check(t, good...)
			b[len(b)-1] ^= 0xff
			return b
		}, err: ErrBadRequest},
		{name: "indication", pkt: func(t *testing.T) []byte {
			m, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication), stun.Fingerprint)
			return m.Raw
		}},
		{name: "not STUN", pkt: func(*testing.T) []byte { return []byte{0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1} }, err: ErrNotSTUN},
		{name: "truncated", pkt: func(t *testing.T) []byte { return check(t, good...)[:30] }, err: ErrNotSTUN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(local)
			if err != nil {
				t.Fatal(err)
			}
			if tt.remote != "" {
				a.SetRemoteUfrag(tt.remote)
			}
			req := tt.pkt(t)
			res, err := a.Handle(req, from)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if res.Valid != tt.valid || res.Nominated != tt.nom {
				t.Errorf("valid %v nominated %v, want %v %v", res.Valid, res.Nominated, tt.valid, tt.nom)
			}
			if a.Validated(from) != tt.valid {
				t.Errorf("Validated %v, want %v", a.Validated(from), tt.valid)
			}
			if sel, ok := a.Selected(); ok != tt.valid || (ok && sel != from) {
				t.Errorf("Selected %v %v", sel, ok)
			}
			if !tt.respond {
				if res.Response != nil {
					t.Fatalf("answered %x", res.Response)
				}
				return
			}
			checkResponse(t, req, res.Response, from, tt.code)
		})
	}
}

// checkResponse decodes a response as the browser would.
func checkResponse(t *testing.T, req, resp []byte, from netip.AddrPort, code stun.ErrorCode) {
	t.Helper()
	r := &stun.Message{Raw: resp}
	if err := r.Decode(); err != nil {
		t.Fatal(err)
	}
	q := &stun.Message{Raw: req}
	_ = q.Decode()
	if r.TransactionID != q.TransactionID {
		t.Error("transaction ID not echoed")
	}
	if err := stun.Fingerprint.Check(r); err != nil {
		t.Errorf("FINGERPRINT: %v", err)
	}
	if code == 0 {
		if r.Type != stun.BindingSuccess {
			t.Fatalf("type %v, want success", r.Type)
		}
		if err := stun.NewShortTermIntegrity(local.Pwd).Check(r); err != nil {
			t.Errorf("MESSAGE-INTEGRITY: %v", err)
		}
		var xa stun.XORMappedAddress
		if err := xa.GetFrom(r); err != nil {
			t.Fatal(err)
		}
		got, _ := netip.AddrFromSlice(xa.IP)
		if netip.AddrPortFrom(got.Unmap(), uint16(xa.Port)) != from {
			t.Errorf("XOR-MAPPED-ADDRESS %v, want %v", xa, from)
		}
		return
	}
	if r.Type != stun.BindingError {
		t.Fatalf("type %v, want error", r.Type)
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(r); err != nil || ec.Code != code {
		t.Errorf("error code %v %v, want %d", ec.Code, err, code)
	}
	if authenticated := code == stun.CodeRoleConflict; r.Contains(stun.AttrMessageIntegrity) != authenticated {
		t.Errorf("MESSAGE-INTEGRITY present %v, want %v", r.Contains(stun.AttrMessageIntegrity), authenticated)
	}
}

func TestSelectedFollowsNomination(t *testing.T) {
	a, _ := New(local)
	one := netip.MustParseAddrPort("127.0.0.30:1000")
	two := netip.MustParseAddrPort("127.0.0.31:2000")
	ok := func(nominate bool) []byte {
		s := []stun.Setter{stun.NewUsername("anch:b"), controlling()}
		if nominate {
			s = append(s, stun.RawAttribute{Type: stun.AttrUseCandidate})
		}
		return check(t, append(s, stun.NewShortTermIntegrity(local.Pwd), stun.Fingerprint)...)
	}
	if _, err := a.Handle(ok(true), one); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Handle(ok(false), two); err != nil {
		t.Fatal(err)
	}
	if sel, _ := a.Selected(); sel != one {
		t.Errorf("selected %v, want the nominated %v", sel, one)
	}
	if !a.Validated(two) {
		t.Error("a checked address is not valid")
	}
	if _, err := a.Handle(ok(true), two); err != nil {
		t.Fatal(err)
	}
	if sel, _ := a.Selected(); sel != two {
		t.Errorf("selected %v after renomination, want %v", sel, two)
	}
	for i := range maxValid {
		_, _ = a.Handle(ok(false), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.32"), uint16(3000+i)))
	}
	if a.Validated(one) {
		t.Error("the oldest of more than maxValid addresses is still remembered")
	}
}

func TestCredentials(t *testing.T) {
	c, err := NewCredentials()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	d, _ := NewCredentials()
	if c == d {
		t.Error("two draws gave the same credentials")
	}
	for _, bad := range []Credentials{{Ufrag: "abc", Pwd: local.Pwd}, {Ufrag: "abcd", Pwd: "short"}, {Ufrag: "ab:d", Pwd: local.Pwd}} {
		if _, err := New(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// An agent restored from another's State takes the same addresses, sends
// to the same path, checks the same remote ufrag and keeps its consent.
func TestRestoredAgentGoesOn(t *testing.T) {
	a, _ := New(local)
	a.SetRemoteUfrag("brow")
	one := netip.MustParseAddrPort("127.0.0.30:1000")
	two := netip.MustParseAddrPort("127.0.0.31:2000")
	at := time.Now()
	for _, c := range []struct {
		from     netip.AddrPort
		nominate bool
	}{{one, true}, {two, false}} {
		s := []stun.Setter{stun.NewUsername("anch:brow"), controlling()}
		if c.nominate {
			s = append(s, stun.RawAttribute{Type: stun.AttrUseCandidate})
		}
		if _, err := a.HandleAt(check(t, append(s, stun.NewShortTermIntegrity(local.Pwd), stun.Fingerprint)...), c.from, at); err != nil {
			t.Fatal(err)
		}
	}
	st := a.State()
	b, _ := New(local)
	b.Restore(st)
	if sel, ok := b.Selected(); !ok || sel != one || !b.Validated(two) || b.Validated(netip.MustParseAddrPort("127.0.0.32:1")) {
		t.Fatalf("restored: selected %v, state %+v", sel, st)
	}
	if c := b.Consent(at.Add(time.Second), 0); !c.Fresh || !c.Last.Equal(at) || c.Path != one {
		t.Fatalf("restored consent %+v", c)
	}
	// The remote ufrag is checked as before.
	bad := check(t, stun.NewUsername("anch:other"), controlling(), stun.NewShortTermIntegrity(local.Pwd), stun.Fingerprint)
	if _, err := b.Handle(bad, one); err == nil {
		t.Fatal("a check naming another remote ufrag passed the restored agent")
	}
	if got := b.State(); !reflect.DeepEqual(got, st) {
		t.Fatalf("state %+v, restored from %+v", got, st)
	}
}
