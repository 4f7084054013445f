package anchor

import (
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
)

// The anchor's certificate for new legs across a restart: the process
// that comes back with the certificate its predecessor kept
// (Config.Certificate, read back from its PEM, as sori-anchor -redis
// does) offers new legs that one, and restored legs theirs, until it is
// due for renewal; then new legs get a new one, handed to CertRenewed to
// be kept, while a restored leg's re-offer still names the certificate
// its SDP advertised.
func TestKeptCertificateGoesOnUntilItsRenewal(t *testing.T) {
	const lifetime = 2 * time.Hour
	clock := newFakeClock(time.Now())
	k := &memKeeper{calls: map[string]anchorstate.Call{}}
	var mu sync.Mutex
	var renewed []*dtlssrtp.Certificate
	manager := func(cert *dtlssrtp.Certificate) (*Manager, *ports.Allocator) {
		t.Helper()
		alloc, err := ports.New(loopback, 46400, 46499)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(alloc.Close)
		m := New(Config{Advertise: []netip.Addr{loopback}, Ports: alloc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Keep: k, KeepEvery: time.Hour, Certificate: cert, CertLifetime: lifetime, Clock: clock.Now,
			CertRenewed: func(c *dtlssrtp.Certificate) { mu.Lock(); renewed = append(renewed, c); mu.Unlock() }})
		t.Cleanup(m.Close)
		return m, alloc
	}
	renewals := func() []*dtlssrtp.Certificate {
		mu.Lock()
		defer mu.Unlock()
		return append([]*dtlssrtp.Certificate(nil), renewed...)
	}
	readBack := func(c *dtlssrtp.Certificate) *dtlssrtp.Certificate {
		t.Helper()
		cp, kp, err := c.PEM()
		if err != nil {
			t.Fatal(err)
		}
		back, err := dtlssrtp.ParseCertificatePEM(cp, kp)
		if err != nil {
			t.Fatal(err)
		}
		return back
	}
	bcert, err := dtlssrtp.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	phone := newUDPPhone(t)
	// call sets up (or re-offers) a call from the browser on m: the SDP
	// the browser is answered.
	call := func(m *Manager, id string, again bool) string {
		t.Helper()
		offer := ng.Dict{"call-id": id, "from-tag": "browser", "sdp": withFingerprint(t, bcert, "actpass"), "ICE": "remove", "transport-protocol": "RTP/AVP"}
		if again {
			offer["to-tag"] = "phone"
		}
		if res := do(t, m, "offer", offer); res.Str("result") != "ok" {
			t.Fatalf("offer: %v", res)
		}
		res := do(t, m, "answer", ng.Dict{"call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"})
		if res.Str("result") != "ok" {
			t.Fatalf("answer: %v", res)
		}
		return res.Str("sdp")
	}
	fp := func(c *dtlssrtp.Certificate) string { return c.Fingerprint().String() }
	got := func(body string) string { f := fingerprintOf(body); return f.Hash + " " + f.Value }

	first, err := dtlssrtp.NewCertificateAt(clock.Now(), lifetime)
	if err != nil {
		t.Fatal(err)
	}
	m1, alloc1 := manager(first)
	if f := got(call(m1, "old", false)); f != fp(first) {
		t.Fatalf("a leg got %s, the anchor's certificate is %s", f, fp(first))
	}
	kept := k.all()
	m1.Close()
	alloc1.Close()

	// Restarted before the renewal is due, with the kept certificate.
	clock.advance(30 * time.Minute)
	m2, _ := manager(readBack(first))
	if n, dropped := m2.Restore(kept); n != 1 || len(dropped) != 0 {
		t.Fatalf("restored %d, dropped %v", n, dropped)
	}
	if c, err := m2.Certificate(); err != nil || fp(c) != fp(first) {
		t.Fatalf("the restarted anchor's certificate for new legs %v (%v), want the kept %s", c, err, fp(first))
	}
	if f := got(call(m2, "new", false)); f != fp(first) {
		t.Fatalf("a new leg after the restart got %s, want the kept %s", f, fp(first))
	}
	if r := renewals(); len(r) != 0 {
		t.Fatalf("%d renewals before one was due", len(r))
	}

	// Past half of its life: renewed for new legs, kept through
	// CertRenewed; the restored leg keeps what its SDP named.
	clock.advance(40 * time.Minute)
	newer := got(call(m2, "newer", false))
	r := renewals()
	if newer == fp(first) || len(r) != 1 || fp(r[0]) != newer {
		t.Fatalf("after the renewal a new leg got %s, CertRenewed had %d certificates; the first was %s", newer, len(r), fp(first))
	}
	if f := got(call(m2, "old", true)); f != fp(first) {
		t.Fatalf("the restored leg's re-offer after the renewal names %s, its SDP said %s", f, fp(first))
	}
	if f := webrtcSRTP(t, m2, "old", "browser").Str("DTLS fingerprint"); f != fp(first) {
		t.Fatalf("the restored leg's certificate is %s, its SDP said %s", f, fp(first))
	}
}
