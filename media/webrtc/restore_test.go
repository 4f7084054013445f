package webrtc

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

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
