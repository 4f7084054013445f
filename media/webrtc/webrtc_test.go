package webrtc

import (
	"bytes"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/media/icelite"
)

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		first byte
		want  Kind
	}{
		{0, STUN}, {1, STUN}, {3, STUN}, {4, Unknown}, {19, Unknown},
		{20, DTLS}, {22, DTLS}, {23, DTLS}, {63, DTLS},
		{64, TURN}, {79, TURN}, {80, Unknown}, {127, Unknown},
		{128, RTP}, {0x80, RTP}, {0x90, RTP}, {191, RTP}, {192, Unknown}, {255, Unknown},
	} {
		if got := Classify(tt.first); got != tt.want {
			t.Errorf("Classify(%d) = %v, want %v", tt.first, got, tt.want)
		}
	}
}

var anchorICE = icelite.Credentials{Ufrag: "anch", Pwd: "anchorpasswordof24chars+"}

// browser plays the WebRTC peer in memory: STUN checks built with
// pion/stun, DTLS by a dtlssrtp endpoint in the other role.
type browser struct {
	t    *testing.T
	addr netip.AddrPort
	leg  *Leg
	cert *dtlssrtp.Certificate

	mu   sync.Mutex
	got  []sent // what the anchor sent
	dtls *dtlssrtp.Endpoint
}

type sent struct {
	b  []byte
	to netip.AddrPort
}

func (b *browser) check(from netip.AddrPort, nominate bool) *stun.Message {
	b.t.Helper()
	s := []stun.Setter{stun.TransactionID, stun.BindingRequest, stun.NewUsername("anch:brow"),
		stun.RawAttribute{Type: stun.AttrICEControlling, Value: make([]byte, 8)}}
	if nominate {
		s = append(s, stun.RawAttribute{Type: stun.AttrUseCandidate})
	}
	m, err := stun.Build(append(s, stun.NewShortTermIntegrity(anchorICE.Pwd), stun.Fingerprint)...)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := b.leg.Handle(m.Raw, from); err != nil {
		b.t.Fatal(err)
	}
	return m
}

// anchorSend is the leg's Config.Send: STUN goes back to the test, DTLS
// to the browser's endpoint.
func (b *browser) anchorSend(p []byte, to netip.AddrPort) error {
	b.mu.Lock()
	b.got = append(b.got, sent{append([]byte(nil), p...), to})
	e := b.dtls
	b.mu.Unlock()
	if e != nil && Classify(p[0]) == DTLS && to == b.addr {
		e.Handle(p)
	}
	return nil
}

func (b *browser) sentTo(kind Kind) []netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []netip.AddrPort
	for _, s := range b.got {
		if Classify(s.b[0]) == kind {
			out = append(out, s.to)
		}
	}
	return out
}

type result struct {
	keys dtlssrtp.Keys
	err  error
}

func newLeg(t *testing.T, b *browser, anchorCert *dtlssrtp.Certificate, selected chan netip.AddrPort) chan result {
	t.Helper()
	keys := make(chan result, 1)
	leg, err := New(t.Context(), Config{
		ICE: anchorICE, Certificate: anchorCert, Send: b.anchorSend,
		Keys:     func(k dtlssrtp.Keys, err error) { keys <- result{k, err} },
		Selected: func(a netip.AddrPort) { selected <- a },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leg.Close() })
	b.leg = leg
	return keys
}

// startBrowserDTLS starts the browser's endpoint; its datagrams reach the
// leg from b.addr.
func (b *browser) startDTLS(role dtlssrtp.Role, anchorFP dtlssrtp.Fingerprint) chan result {
	done := make(chan result, 1)
	e, err := dtlssrtp.Start(b.t.Context(), dtlssrtp.Config{
		Role: role, Certificate: b.cert, Remote: anchorFP,
		Send: func(p []byte) error { _ = b.leg.Handle(p, b.addr); return nil },
		Done: func(k dtlssrtp.Keys, err error) { done <- result{k, err} },
	})
	if err != nil {
		b.t.Fatal(err)
	}
	b.mu.Lock()
	b.dtls = e
	b.mu.Unlock()
	b.t.Cleanup(func() { _ = e.Close() })
	return done
}

func wait[T any](t *testing.T, ch chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(15 * time.Second):
		t.Fatal("timed out")
		var zero T
		return zero
	}
}

func TestLegServerRole(t *testing.T) {
	anchorCert, browserCert := mustCert(t), mustCert(t)
	b := &browser{t: t, addr: netip.MustParseAddrPort("127.0.0.30:50000"), cert: browserCert}
	selected := make(chan netip.AddrPort, 4)
	keys := newLeg(t, b, anchorCert, selected)

	// A check answers before the peer's SDP is known; USE-CANDIDATE
	// selects the path.
	req := b.check(b.addr, true)
	if got := b.sentTo(STUN); len(got) != 1 || got[0] != b.addr {
		t.Fatalf("STUN responses went to %v", got)
	}
	b.mu.Lock()
	resp := &stun.Message{Raw: b.got[0].b}
	b.mu.Unlock()
	if err := resp.Decode(); err != nil || resp.TransactionID != req.TransactionID || resp.Type != stun.BindingSuccess {
		t.Fatalf("response %v %v", resp, err)
	}
	if a := wait(t, selected); a != b.addr {
		t.Errorf("selected %v", a)
	}
	b.check(b.addr, true) // the same nomination again is not reported again

	// The browser's ClientHello comes before the anchor has its SDP: kept.
	bdone := b.startDTLS(dtlssrtp.Client, anchorCert.Fingerprint())
	// DTLS from an address that passed no check is refused.
	if err := b.leg.Handle([]byte{22, 254, 253, 0, 0}, netip.MustParseAddrPort("127.0.0.31:1")); err == nil {
		t.Error("DTLS from an unchecked address accepted")
	}
	if err := b.leg.SetPeer(Peer{Ufrag: "brow", Fingerprint: browserCert.Fingerprint(), Role: dtlssrtp.Server}); err != nil {
		t.Fatal(err)
	}
	a, c := wait(t, keys), wait(t, bdone)
	if a.err != nil || c.err != nil {
		t.Fatalf("anchor %v, browser %v", a.err, c.err)
	}
	if !bytes.Equal(a.keys.LocalKey, c.keys.RemoteKey) || !bytes.Equal(a.keys.RemoteSalt, c.keys.LocalSalt) {
		t.Error("keys do not mirror")
	}
	for _, to := range b.sentTo(DTLS) {
		if to != b.addr {
			t.Errorf("DTLS sent to %v", to)
		}
	}
	select {
	case a := <-selected:
		t.Errorf("a repeated nomination reported again: %v", a)
	default:
	}
	if err := b.leg.SetPeer(Peer{Ufrag: "brow", Fingerprint: anchorCert.Fingerprint(), Role: dtlssrtp.Server}); err == nil {
		t.Error("a changed fingerprint accepted on a running association")
	}
	if err := b.leg.SetPeer(Peer{Ufrag: "brw2", Fingerprint: browserCert.Fingerprint(), Role: dtlssrtp.Server}); err != nil {
		t.Errorf("ICE restart refused: %v", err)
	}
}

func TestLegClientRoleWaitsForICE(t *testing.T) {
	anchorCert, browserCert := mustCert(t), mustCert(t)
	b := &browser{t: t, addr: netip.MustParseAddrPort("127.0.0.30:50001"), cert: browserCert}
	selected := make(chan netip.AddrPort, 4)
	keys := newLeg(t, b, anchorCert, selected)
	bdone := b.startDTLS(dtlssrtp.Server, anchorCert.Fingerprint())
	if err := b.leg.SetPeer(Peer{Ufrag: "brow", Fingerprint: browserCert.Fingerprint(), Role: dtlssrtp.Client}); err != nil {
		t.Fatal(err)
	}
	if got := b.sentTo(DTLS); len(got) != 0 {
		t.Fatalf("ClientHello sent before ICE found the peer: %v", got)
	}
	b.check(b.addr, false) // valid but not nominated: enough to start
	a, c := wait(t, keys), wait(t, bdone)
	if a.err != nil || c.err != nil {
		t.Fatalf("anchor %v, browser %v", a.err, c.err)
	}
	if !bytes.Equal(a.keys.LocalKey, c.keys.RemoteKey) {
		t.Error("keys do not mirror")
	}
	select {
	case a := <-selected:
		t.Errorf("a check without USE-CANDIDATE reported as selected: %v", a)
	default:
	}
}

func TestLegRefuses(t *testing.T) {
	cert := mustCert(t)
	if _, err := New(t.Context(), Config{ICE: anchorICE, Certificate: cert, Send: func([]byte, netip.AddrPort) error { return nil }}); err == nil {
		t.Error("no Keys accepted")
	}
	if _, err := New(t.Context(), Config{ICE: icelite.Credentials{Ufrag: "a"}, Certificate: cert, Send: func([]byte, netip.AddrPort) error { return nil }, Keys: func(dtlssrtp.Keys, error) {}}); err == nil {
		t.Error("bad credentials accepted")
	}
	leg, err := New(t.Context(), Config{ICE: anchorICE, Certificate: cert, Send: func([]byte, netip.AddrPort) error { return nil }, Keys: func(dtlssrtp.Keys, error) {}})
	if err != nil {
		t.Fatal(err)
	}
	from := netip.MustParseAddrPort("127.0.0.30:9")
	for _, pkt := range [][]byte{nil, {0x80, 0, 0, 0}, {100}, {0, 1, 0, 0}} {
		if err := leg.Handle(pkt, from); err == nil {
			t.Errorf("%x accepted", pkt)
		}
	}
	if err := leg.SetPeer(Peer{Fingerprint: dtlssrtp.Fingerprint{Hash: "md5", Value: "AA"}}); err == nil {
		t.Error("unusable fingerprint accepted")
	}
	_ = leg.Close()
	if err := leg.SetPeer(Peer{Fingerprint: cert.Fingerprint()}); err == nil {
		t.Error("SetPeer on a closed leg")
	}
}

func mustCert(t *testing.T) *dtlssrtp.Certificate {
	t.Helper()
	c, err := dtlssrtp.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLegConsentFollowsTheNominatedPathsChecks(t *testing.T) {
	b := &browser{t: t, addr: netip.MustParseAddrPort("127.0.0.30:50002"), cert: mustCert(t)}
	leg, err := New(t.Context(), Config{ICE: anchorICE, Certificate: mustCert(t), Send: b.anchorSend, Keys: func(dtlssrtp.Keys, error) {},
		ConsentTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leg.Close() })
	b.leg = leg
	if c := leg.Consent(time.Now()); c.Path.IsValid() || c.Fresh {
		t.Fatalf("consent before any check: %+v", c)
	}
	b.check(b.addr, true)
	c := leg.Consent(time.Now())
	if c.Path != b.addr || !c.Fresh {
		t.Fatalf("consent after a check: %+v", c)
	}
	if !leg.Consent(c.Last.Add(3*time.Second-time.Nanosecond)).Fresh || leg.Consent(c.Last.Add(3*time.Second)).Fresh {
		t.Fatalf("consent must last Config.ConsentTimeout after the check at %v", c.Last)
	}
	b.check(netip.MustParseAddrPort("127.0.0.30:50003"), false) // another candidate
	if got := leg.Consent(time.Now()).Last; !got.Equal(c.Last) {
		t.Fatalf("a check on another candidate renewed the nominated path's consent (%v, was %v)", got, c.Last)
	}
}
