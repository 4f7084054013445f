package webrtc

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/sori-voice/sori/media/dtlssrtp"
)

// keptCert is c as a restarted anchor reads it back.
func keptCert(t *testing.T, c *dtlssrtp.Certificate) *dtlssrtp.Certificate {
	t.Helper()
	cert, key, err := c.PEM()
	if err != nil {
		t.Fatal(err)
	}
	k, err := dtlssrtp.ParseCertificatePEM(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A leg whose handshake finished goes on in a new process from its State
// with no handshake of its own; a new one the browser starts is answered
// with the same certificate and keys the leg anew.
func TestRestoredLegNeedsNoHandshake(t *testing.T) {
	anchorCert, browserCert := mustCert(t), mustCert(t)
	b := &browser{t: t, addr: netip.MustParseAddrPort("127.0.0.30:50010"), cert: browserCert}
	selected := make(chan netip.AddrPort, 4)
	keys := newLeg(t, b, anchorCert, selected)
	b.check(b.addr, true)
	bdone := b.startDTLS(dtlssrtp.Client, anchorCert.Fingerprint())
	if err := b.leg.SetPeer(Peer{Ufrag: "brow", Fingerprint: browserCert.Fingerprint(), Role: dtlssrtp.Server}); err != nil {
		t.Fatal(err)
	}
	first, c := wait(t, keys), wait(t, bdone)
	if first.err != nil || c.err != nil {
		t.Fatalf("anchor %v, browser %v", first.err, c.err)
	}
	st := b.leg.State()
	if st.Keys == nil || !bytes.Equal(st.Keys.LocalKey, first.keys.LocalKey) || st.Peer == nil || st.Peer.Role != dtlssrtp.Server ||
		st.ICE.Nominated != b.addr || st.ICE.RemoteUfrag != "brow" || st.ICE.Consent.IsZero() {
		t.Fatalf("state %+v", st)
	}
	// The process goes: no close_notify to the browser.
	sentDTLS := len(b.sentTo(DTLS))
	if err := b.leg.Abandon(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(b.sentTo(DTLS)); n != sentDTLS {
		t.Fatalf("Abandon sent %d DTLS datagrams", n-sentDTLS)
	}

	// The next one restores it.
	b.mu.Lock()
	b.dtls = nil // the browser's association stays, silent
	b.mu.Unlock()
	again := make(chan result, 1)
	leg, err := Restore(t.Context(), Config{ICE: anchorICE, Certificate: keptCert(t, anchorCert), Send: b.anchorSend,
		Keys: func(k dtlssrtp.Keys, err error) { again <- result{k, err} }}, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leg.Close() })
	b.leg = leg
	if sel, ok := leg.Selected(); !ok || sel != b.addr || !leg.Validated(b.addr) || !leg.Consent(st.ICE.Consent).Fresh {
		t.Fatalf("restored ICE: selected %v %v, validated %v", sel, ok, leg.Validated(b.addr))
	}
	b.check(b.addr, true) // answered (check fails the test otherwise), and no handshake starts
	if n := len(b.sentTo(DTLS)); n != sentDTLS {
		t.Fatalf("the restored leg sent %d DTLS datagrams after a check", n-sentDTLS)
	}
	if err := leg.Handle([]byte{23, 254, 253, 0, 1, 0, 0, 0, 0, 0, 9, 0, 4, 1, 2, 3, 4}, b.addr); err == nil {
		t.Fatal("a record of the old association was taken")
	}
	if k := leg.State().Keys; k == nil || !bytes.Equal(k.RemoteKey, first.keys.RemoteKey) {
		t.Fatalf("the restored leg's keys %+v", k)
	}
	// The browser starts a new handshake: answered with the leg's
	// certificate, whose fingerprint its SDP had.
	bdone = b.startDTLS(dtlssrtp.Client, anchorCert.Fingerprint())
	a, c := wait(t, again), wait(t, bdone)
	if a.err != nil || c.err != nil {
		t.Fatalf("the new handshake: anchor %v, browser %v", a.err, c.err)
	}
	if !bytes.Equal(a.keys.LocalKey, c.keys.RemoteKey) || bytes.Equal(a.keys.LocalKey, first.keys.LocalKey) {
		t.Fatal("the new handshake's keys do not mirror, or are the old ones")
	}
	if k := leg.State().Keys; k == nil || !bytes.Equal(k.LocalKey, a.keys.LocalKey) {
		t.Fatal("the leg's state does not have the new keys")
	}
}

// A leg kept before its handshake finished starts it again in the new
// process: as client at once towards the validated path.
func TestRestoredUnkeyedLegHandshakesAgain(t *testing.T) {
	anchorCert, browserCert := mustCert(t), mustCert(t)
	b := &browser{t: t, addr: netip.MustParseAddrPort("127.0.0.30:50011"), cert: browserCert}
	_ = newLeg(t, b, anchorCert, make(chan netip.AddrPort, 4))
	b.check(b.addr, true)
	st := b.leg.State()
	st.Peer = &Peer{Ufrag: "brow", Fingerprint: browserCert.Fingerprint(), Role: dtlssrtp.Client}
	if err := b.leg.Abandon(); err != nil {
		t.Fatal(err)
	}
	keys := make(chan result, 1)
	leg, err := Restore(t.Context(), Config{ICE: anchorICE, Certificate: keptCert(t, anchorCert), Send: b.anchorSend,
		Keys: func(k dtlssrtp.Keys, err error) { keys <- result{k, err} }}, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leg.Close() })
	b.leg = leg
	for end := time.Now().Add(2 * time.Second); len(b.sentTo(DTLS)) == 0 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if got := b.sentTo(DTLS); len(got) != 1 || got[0] != b.addr {
		t.Fatalf("the restored client's ClientHello went to %v", got)
	}
	bdone := b.startDTLS(dtlssrtp.Server, anchorCert.Fingerprint()) // it answers the retransmission
	a, c := wait(t, keys), wait(t, bdone)
	if a.err != nil || c.err != nil || !bytes.Equal(a.keys.LocalKey, c.keys.RemoteKey) {
		t.Fatalf("anchor %v, browser %v", a.err, c.err)
	}
}

// A handshake that cannot complete (its answers lost, or the tail of one
// a previous process began) gives way to a new one the peer starts: a
// ClientHello with a new random gets a new endpoint, silently for the old
// one (no failure reported), and the new handshake keys the leg.
func TestNewClientHelloReplacesAStuckHandshake(t *testing.T) {
	anchorCert, browserCert := mustCert(t), mustCert(t)
	b := &browser{t: t, addr: netip.MustParseAddrPort("127.0.0.30:50012"), cert: browserCert}
	keys := newLeg(t, b, anchorCert, make(chan netip.AddrPort, 4))
	b.check(b.addr, true)
	if err := b.leg.SetPeer(Peer{Ufrag: "brow", Fingerprint: browserCert.Fingerprint(), Role: dtlssrtp.Server}); err != nil {
		t.Fatal(err)
	}
	// The first attempt's ClientHello reaches the leg; its answer is lost
	// (b.dtls is not this endpoint).
	first, err := dtlssrtp.Start(t.Context(), dtlssrtp.Config{Role: dtlssrtp.Client, Certificate: browserCert, Remote: anchorCert.Fingerprint(),
		Send: func(p []byte) error { _ = b.leg.Handle(p, b.addr); return nil }, Done: func(dtlssrtp.Keys, error) {}})
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); len(b.sentTo(DTLS)) == 0 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if len(b.sentTo(DTLS)) == 0 {
		t.Fatal("the leg never answered the first ClientHello")
	}
	_ = first.Close()
	bdone := b.startDTLS(dtlssrtp.Client, anchorCert.Fingerprint())
	a, c := wait(t, keys), wait(t, bdone)
	if a.err != nil || c.err != nil || !bytes.Equal(a.keys.LocalKey, c.keys.RemoteKey) || !bytes.Equal(a.keys.RemoteKey, c.keys.LocalKey) {
		t.Fatalf("anchor %v, browser %v", a.err, c.err)
	}
	if st := b.leg.State(); st.Keys == nil || !bytes.Equal(st.Keys.LocalKey, a.keys.LocalKey) {
		t.Fatal("the leg's state has not the new handshake's keys")
	}
	select {
	case r := <-keys:
		t.Fatalf("a second report: %v", r.err)
	default:
	}
}

// Only a ClientHello that begins a handshake (epoch 0, message 0, whole)
// is read for its random.
func TestHelloRandom(t *testing.T) {
	hello := make([]byte, 59)
	hello[0], hello[1], hello[2], hello[13] = 22, 254, 253, 1
	for i := range 32 {
		hello[27+i] = byte(i + 1)
	}
	if r := helloRandom(hello); len(r) != 32 || r[0] != 1 || r[31] != 32 {
		t.Fatalf("random %x", r)
	}
	for name, mutate := range map[string]func([]byte){
		"epoch 1":       func(p []byte) { p[4] = 1 },
		"message 1":     func(p []byte) { p[18] = 1 },
		"a fragment":    func(p []byte) { p[21] = 8 },
		"not a hello":   func(p []byte) { p[13] = 11 },
		"not handshake": func(p []byte) { p[0] = 21 },
	} {
		p := append([]byte(nil), hello...)
		mutate(p)
		if r := helloRandom(p); r != nil {
			t.Errorf("%s: random %x", name, r)
		}
	}
	if helloRandom(hello[:58]) != nil {
		t.Error("a short datagram read")
	}
}

// As DTLS client, a handshake stuck half way (the peer that answered its
// ClientHello is gone: the anchor restarted, or the browser reconnects)
// is started afresh when the peer restarts ICE (a re-offer with a new
// ufrag): the anchor's new ClientHello, once the new credentials' check
// passed, completes with the peer's new endpoint.
func TestClientHandshakeStartsAgainOnICERestart(t *testing.T) {
	anchorCert, browserCert := mustCert(t), mustCert(t)
	b := &browser{t: t, addr: netip.MustParseAddrPort("127.0.0.30:50013"), cert: browserCert}
	keys := newLeg(t, b, anchorCert, make(chan netip.AddrPort, 4))
	b.check(b.addr, true)
	// The first peer endpoint answers the leg's ClientHello, but its last
	// flight never reaches the leg.
	var sent int
	firstDone := make(chan result, 1)
	first, err := dtlssrtp.Start(t.Context(), dtlssrtp.Config{Role: dtlssrtp.Server, Certificate: browserCert, Remote: anchorCert.Fingerprint(),
		Send: func(p []byte) error {
			if sent++; sent <= 2 { // HelloVerifyRequest, then its flight 4; not its flight 6
				_ = b.leg.Handle(p, b.addr)
			}
			return nil
		},
		Done: func(k dtlssrtp.Keys, err error) { firstDone <- result{k, err} }})
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.dtls = first
	b.mu.Unlock()
	if err := b.leg.SetPeer(Peer{Ufrag: "brow", Fingerprint: browserCert.Fingerprint(), Role: dtlssrtp.Client}); err != nil {
		t.Fatal(err)
	}
	if r := wait(t, firstDone); r.err != nil {
		t.Fatalf("the first peer endpoint: %v", r.err)
	}
	_ = first.Close()
	select {
	case r := <-keys:
		t.Fatalf("the leg keyed without the peer's last flight: %v", r.err)
	default:
	}

	// The peer reconnects: a new endpoint, new ICE credentials.
	bdone := b.startDTLS(dtlssrtp.Server, anchorCert.Fingerprint())
	if err := b.leg.SetPeer(Peer{Ufrag: "brw2", Fingerprint: browserCert.Fingerprint(), Role: dtlssrtp.Client}); err != nil {
		t.Fatal(err)
	}
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername("anch:brw2"),
		stun.RawAttribute{Type: stun.AttrICEControlling, Value: make([]byte, 8)}, stun.RawAttribute{Type: stun.AttrUseCandidate},
		stun.NewShortTermIntegrity(anchorICE.Pwd), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.leg.Handle(m.Raw, b.addr); err != nil {
		t.Fatal(err)
	}
	a, c := wait(t, keys), wait(t, bdone)
	if a.err != nil || c.err != nil || !bytes.Equal(a.keys.LocalKey, c.keys.RemoteKey) {
		t.Fatalf("anchor %v, peer %v", a.err, c.err)
	}
}
