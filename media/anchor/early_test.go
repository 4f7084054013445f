package anchor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/stun/v3"

	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/sdp"
)

// Early media toward a WebRTC leg, a browser's early ClientHello and the
// DTLS certificate's renewal, on loopback sockets: the browser is a
// consentBrowser (consent_test.go), the phone a plain UDP socket.

// webrtcManager is a Manager on loopback whose certificates follow clock
// (nil: time.Now).
func webrtcManager(t *testing.T, lo int, lifetime time.Duration, clock func() time.Time) *Manager {
	t.Helper()
	alloc, err := ports.New(loopback, lo, lo+99)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(alloc.Close)
	m := New(Config{Advertise: []netip.Addr{loopback}, Ports: alloc, CertLifetime: lifetime, Clock: clock,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(m.Close)
	return m
}

// withFingerprint is Chromium's SDP (browserSDP) with cert's fingerprint
// and a=setup:setup.
func withFingerprint(t *testing.T, cert *dtlssrtp.Certificate, setup string) string {
	t.Helper()
	s := browserSDP(t)
	i := strings.Index(s, "a=fingerprint:")
	j := i + strings.Index(s[i:], "\r\n")
	s = s[:i] + "a=fingerprint:" + cert.Fingerprint().String() + s[j:]
	return strings.Replace(s, "a=setup:actpass", "a=setup:"+setup, 1)
}

// newBrowser is a browser on a loopback socket, told the anchor's SDP
// toBrowser (its port, ICE credentials and fingerprint).
func newBrowser(t *testing.T, toBrowser string) *consentBrowser {
	t.Helper()
	s, err := sdp.Parse([]byte(toBrowser))
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.WebRTC(0)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	b := &consentBrowser{t: t, conn: conn, anchor: netip.AddrPortFrom(loopback, uint16(s.Media[0].Port)), ice: w,
		answers: make(chan [stun.TransactionIDSize]byte, 64), heard: make(chan struct{}, 1024)}
	go b.read()
	return b
}

type dtlsResult struct {
	keys dtlssrtp.Keys
	err  error
}

// startDTLS starts the browser's DTLS endpoint in role, expecting the
// anchor's certificate to match the fingerprint of its SDP; a client
// sends its ClientHello at once.
func (b *consentBrowser) startDTLS(ctx context.Context, cert *dtlssrtp.Certificate, role dtlssrtp.Role) <-chan dtlsResult {
	b.t.Helper()
	done := make(chan dtlsResult, 1)
	e, err := dtlssrtp.Start(ctx, dtlssrtp.Config{Role: role, Certificate: cert, Remote: dtlssrtp.Fingerprint(b.ice.Fingerprint),
		Send: func(p []byte) error { _, err := b.conn.WriteToUDPAddrPort(p, b.anchor); return err },
		Done: func(k dtlssrtp.Keys, err error) { done <- dtlsResult{k, err} }})
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = e.Close() })
	b.mu.Lock()
	b.dtls = e
	b.mu.Unlock()
	return done
}

// keyed waits for the handshake and keys the browser's SRTP with it.
func (b *consentBrowser) keyed(done <-chan dtlsResult) error {
	var r dtlsResult
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		return errors.New("no DTLS handshake in 10 s")
	}
	if r.err != nil {
		return r.err
	}
	in, err := srtp.CreateContext(r.keys.RemoteKey, r.keys.RemoteSalt, srtp.ProtectionProfile(r.keys.Profile))
	if err != nil {
		return err
	}
	out, err := srtp.CreateContext(r.keys.LocalKey, r.keys.LocalSalt, srtp.ProtectionProfile(r.keys.Profile))
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.in, b.out = in, out
	b.mu.Unlock()
	return nil
}

// heardWithin: the phone's media reached the browser (SRTP, decrypted)
// within d.
func (b *consentBrowser) heardWithin(d time.Duration) bool {
	select {
	case <-b.heard:
		return true
	case <-time.After(d):
		return false
	}
}

// phoneTalks sends the phone's RTP (ending in "phone") to the anchor every
// 10 ms until ctx ends.
func phoneTalks(ctx context.Context, phone *udpPhone, to netip.AddrPort) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for seq := uint16(1); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 480, SSRC: 0x50710003},
			Payload: []byte{0xfc, 'p', 'h', 'o', 'n', 'e'}}
		b, _ := pkt.Marshal()
		_, _ = phone.conn.WriteToUDPAddrPort(b, to)
	}
}

// phoneHears counts the browser's media ("brow") reaching the phone.
func phoneHears(phone *udpPhone, n *atomic.Int64) {
	buf := make([]byte, 1500)
	for {
		k, _, err := phone.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if bytes.HasSuffix(buf[:k], []byte("brow")) {
			n.Add(1)
		}
	}
}

// waitFor polls cond (a state of the anchor's, no event to wait on) for
// up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// webrtcSRTP is the query's SRTP of the leg tag of call id.
func webrtcSRTP(t *testing.T, m *Manager, id, tag string) ng.Dict {
	t.Helper()
	return mediaDict(t, do(t, m, "query", ng.Dict{"call-id": id}), tag).Dict("SRTP")
}

func unkeyedDrops(t *testing.T, m *Manager, id, tag string) int64 {
	t.Helper()
	n, ok := webrtcSRTP(t, m, id, tag).Int("unkeyed drops")
	if !ok {
		t.Fatalf("query of %s has no unkeyed drops for %s", id, tag)
	}
	return n
}

// TestEarlyMediaTowardABrowserWaitsForItsKeys: a browser calls a phone,
// which answers 183 with SDP and talks at once. Until the browser's DTLS
// handshake ends nothing of it reaches the browser, in clear or at all,
// before ICE (no path) or after (a path, no keys): each packet is dropped
// and counted. Once the handshake ends the phone's media reaches the
// browser as SRTP, both ways, and the 200's answer (the same SDP again)
// changes nothing.
func TestEarlyMediaTowardABrowserWaitsForItsKeys(t *testing.T) {
	m := webrtcManager(t, 49400, 0, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	bcert, err := dtlssrtp.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	const id = "early-media"
	res := do(t, m, "offer", ng.Dict{"call-id": id, "from-tag": "browser", "sdp": withFingerprint(t, bcert, "actpass"), "ICE": "remove", "transport-protocol": "RTP/AVP"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	anchorForPhone := netip.AddrPortFrom(loopback, uint16(mediaOf(t, res.Str("sdp")).Port))
	phone := newUDPPhone(t)
	var phoneHeard atomic.Int64
	go phoneHears(phone, &phoneHeard)
	answer := ng.Dict{"call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"}
	res = do(t, m, "answer", answer) // the 183's
	if res.Str("result") != "ok" {
		t.Fatalf("183 answer: %v", res)
	}
	toBrowser := res.Str("sdp")
	checkSetup := func(body string) {
		t.Helper()
		s, err := sdp.Parse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if w, _ := s.WebRTC(0); w.Setup != "passive" {
			t.Fatalf("a=setup:%s to the browser, want passive", w.Setup)
		}
	}
	checkSetup(toBrowser)
	b := newBrowser(t, toBrowser)
	go phoneTalks(ctx, phone, anchorForPhone)

	// Early media before the browser's ICE check: no path, no keys.
	waitFor(t, "the phone's early media counted as dropped before ICE", func() bool { return unkeyedDrops(t, m, id, "browser") >= 3 })
	// A path, still no keys: the drops go on and nothing is sent.
	b.check()
	atCheck := unkeyedDrops(t, m, id, "browser")
	waitFor(t, "the phone's early media dropped with a path and no keys", func() bool { return unkeyedDrops(t, m, id, "browser") >= atCheck+5 })
	if n := b.plain.Load(); n != 0 {
		t.Fatalf("%d packets of the phone reached the browser in clear", n)
	}
	select {
	case <-b.heard:
		t.Fatal("the browser heard the phone before any handshake")
	default:
	}

	// The handshake: the anchor is its server (it answered passive).
	if err := b.keyed(b.startDTLS(ctx, bcert, dtlssrtp.Client)); err != nil {
		t.Fatal(err)
	}
	if !b.heardWithin(5 * time.Second) {
		t.Fatal("the phone's early media never reached the browser once keyed")
	}
	for i := 0; i < 20; i++ {
		b.talk()
	}
	waitFor(t, "the browser's media reaching the phone", func() bool { return phoneHeard.Load() > 0 })

	// The 200, with the same SDP: the association, its keys and the media
	// stay; no more drops.
	res = do(t, m, "answer", answer)
	if res.Str("result") != "ok" {
		t.Fatalf("200 answer: %v", res)
	}
	checkSetup(res.Str("sdp"))
	for len(b.heard) > 0 {
		<-b.heard
	}
	if !b.heardWithin(2 * time.Second) {
		t.Fatal("media stopped after the 200's answer")
	}
	dropped := unkeyedDrops(t, m, id, "browser")
	for i := 0; i < 10; i++ {
		if !b.heardWithin(2 * time.Second) {
			t.Fatal("media stopped after the 200's answer")
		}
	}
	if now := unkeyedDrops(t, m, id, "browser"); now != dropped {
		t.Fatalf("%d more packets dropped as unkeyed after the handshake", now-dropped)
	}
	if n := b.plain.Load(); n != 0 {
		t.Fatalf("%d packets of the phone reached the browser in clear", n)
	}
	q := webrtcSRTP(t, m, id, "browser")
	if q.Str("DTLS role") != "server" || q.Str("suite") == "" || q.Str("DTLS failure") != "" {
		t.Fatalf("query: %v", q)
	}
	before := phoneHeard.Load()
	for i := 0; i < 20; i++ {
		b.talk()
	}
	waitFor(t, "the browser's media reaching the phone after the 200", func() bool { return phoneHeard.Load() > before })
}

// TestEarlyClientHelloBeforeTheBrowsersAnswer: a phone calls a browser;
// the browser answers a=setup:active, and its ICE check and ClientHello
// reach the anchor before its SDP answer does (it travels through SIP).
// The ClientHello is kept; once the answer comes the handshake completes
// and media flows both ways.
func TestEarlyClientHelloBeforeTheBrowsersAnswer(t *testing.T) {
	m := webrtcManager(t, 49500, 0, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	bcert, err := dtlssrtp.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	const id = "early-hello"
	phone := newUDPPhone(t)
	var phoneHeard atomic.Int64
	go phoneHears(phone, &phoneHeard)
	res := do(t, m, "offer", ng.Dict{"call-id": id, "from-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	b := newBrowser(t, res.Str("sdp"))
	if b.ice.Setup != "actpass" {
		t.Fatalf("a=setup:%s to the browser, want actpass", b.ice.Setup)
	}
	early := func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		md := m.calls[id].legByTag("phone").peer.medias[0]
		return md.rtc.leg.Early()
	}

	// The browser's ICE check, then its ClientHello: the anchor has no
	// answer yet, and keeps it.
	b.check()
	done := b.startDTLS(ctx, bcert, dtlssrtp.Client)
	waitFor(t, "the early ClientHello kept by the anchor", func() bool { return early() > 0 })
	select {
	case r := <-done:
		t.Fatalf("the handshake ended before the anchor had the browser's fingerprint: %v", r.err)
	default:
	}

	res = do(t, m, "answer", ng.Dict{"call-id": id, "from-tag": "phone", "to-tag": "browser", "sdp": withFingerprint(t, bcert, "active"), "ICE": "remove"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	anchorForPhone := netip.AddrPortFrom(loopback, uint16(mediaOf(t, res.Str("sdp")).Port))
	if err := b.keyed(done); err != nil {
		t.Fatal(err)
	}
	if n := early(); n != 0 {
		t.Fatalf("%d early datagrams still held after the handshake", n)
	}
	go phoneTalks(ctx, phone, anchorForPhone)
	if !b.heardWithin(5 * time.Second) {
		t.Fatal("the phone's media never reached the browser")
	}
	for i := 0; i < 20; i++ {
		b.talk()
	}
	waitFor(t, "the browser's media reaching the phone", func() bool { return phoneHeard.Load() > 0 })
	if q := webrtcSRTP(t, m, id, "browser"); q.Str("DTLS role") != "server" || q.Str("suite") == "" || q.Str("DTLS failure") != "" {
		t.Fatalf("query: %v", q)
	}
	if n := b.plain.Load(); n != 0 {
		t.Fatalf("%d packets of the phone reached the browser in clear", n)
	}
}

// fakeClock is the certificates' clock of a test.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }
func newFakeClock(t time.Time) *fakeClock    { c := &fakeClock{}; c.ns.Store(t.UnixNano()); return c }
func fingerprintOf(body string) sdp.Fingerprint {
	s, _ := sdp.Parse([]byte(body))
	w, _ := s.WebRTC(0)
	return w.Fingerprint
}

// TestDTLSCertificateRenewal: once half of a certificate's lifetime has
// passed, a new leg gets a new certificate, valid for the lifetime from
// then; a leg set up before keeps its own, on re-offers either way too,
// and its handshake still succeeds against it, after the renewal.
func TestDTLSCertificateRenewal(t *testing.T) {
	const lifetime = 2 * time.Hour
	clock := newFakeClock(time.Now())
	m := webrtcManager(t, 49600, lifetime, clock.Now)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	bcert, err := dtlssrtp.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	phone := newUDPPhone(t)
	// browserCall sets up a call from the browser: the SDP it is answered.
	browserCall := func(id string) string {
		t.Helper()
		res := do(t, m, "offer", ng.Dict{"call-id": id, "from-tag": "browser", "sdp": withFingerprint(t, bcert, "actpass"), "ICE": "remove", "transport-protocol": "RTP/AVP"})
		if res.Str("result") != "ok" {
			t.Fatalf("offer: %v", res)
		}
		res = do(t, m, "answer", ng.Dict{"call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"})
		if res.Str("result") != "ok" {
			t.Fatalf("answer: %v", res)
		}
		return res.Str("sdp")
	}
	// covers: the certificate the leg of id was set up with at setUp is
	// the one its SDP names, and valid at least half the lifetime on.
	covers := func(id string, body string, setUp time.Time) {
		t.Helper()
		q := webrtcSRTP(t, m, id, "browser")
		fp := fingerprintOf(body)
		if q.Str("DTLS fingerprint") != fp.Hash+" "+fp.Value {
			t.Fatalf("%s: query's fingerprint %q, SDP's %v", id, q.Str("DTLS fingerprint"), fp)
		}
		if exp, _ := q.Int("DTLS certificate expires"); exp < setUp.Add(lifetime/2).Unix() {
			t.Fatalf("%s: certificate expires at %d, before %v (set up at %v + half its lifetime)", id, exp, setUp.Add(lifetime/2), setUp)
		}
	}

	t0 := clock.Now()
	oldBody := browserCall("old")
	covers("old", oldBody, t0)
	fpOld := fingerprintOf(oldBody)

	clock.advance(59 * time.Minute) // not yet half the lifetime
	if fp := fingerprintOf(browserCall("before")); fp != fpOld {
		t.Fatalf("a leg before the renewal got %v, want the first certificate's %v", fp, fpOld)
	}
	covers("before", oldBody, clock.Now())

	clock.advance(2 * time.Minute) // past half: renewed for new legs
	newBody := browserCall("new")
	fpNew := fingerprintOf(newBody)
	if fpNew == fpOld || fpNew.Value == "" {
		t.Fatalf("the leg after the renewal got %v, the first certificate's was %v", fpNew, fpOld)
	}
	covers("new", newBody, clock.Now())
	if exp, _ := webrtcSRTP(t, m, "new", "browser").Int("DTLS certificate expires"); exp != clock.Now().Add(lifetime).Unix() {
		t.Fatalf("the new certificate expires at %d, want %v (made now, for the lifetime)", exp, clock.Now().Add(lifetime))
	}

	// The old leg's re-offers keep its fingerprint: from the browser (its
	// answer names it), and from the phone toward the browser.
	res := do(t, m, "offer", ng.Dict{"call-id": "old", "from-tag": "browser", "to-tag": "phone", "sdp": withFingerprint(t, bcert, "actpass"), "ICE": "remove", "transport-protocol": "RTP/AVP"})
	if res.Str("result") != "ok" {
		t.Fatalf("re-offer: %v", res)
	}
	res = do(t, m, "answer", ng.Dict{"call-id": "old", "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"})
	if res.Str("result") != "ok" || fingerprintOf(res.Str("sdp")) != fpOld {
		t.Fatalf("the re-offer's answer to the old leg: %v (fingerprint %v, want %v)", res, fingerprintOf(res.Str("sdp")), fpOld)
	}
	res = do(t, m, "offer", ng.Dict{"call-id": "old", "from-tag": "phone", "to-tag": "browser", "sdp": phoneSDP(phone.addr()), "ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF"})
	if res.Str("result") != "ok" || fingerprintOf(res.Str("sdp")) != fpOld {
		t.Fatalf("the phone's re-offer to the old leg: %v (fingerprint %v, want %v)", res, fingerprintOf(res.Str("sdp")), fpOld)
	}
	res = do(t, m, "answer", ng.Dict{"call-id": "old", "from-tag": "phone", "to-tag": "browser", "sdp": withFingerprint(t, bcert, "active"), "ICE": "remove"})
	if res.Str("result") != "ok" {
		t.Fatalf("the browser's answer to the phone's re-offer: %v", res)
	}

	// Both legs' handshakes succeed, each against its own certificate
	// (the browser checks the anchor's against the fingerprint it was
	// given), after the renewal.
	for _, tt := range []struct{ id, body string }{{"old", oldBody}, {"new", newBody}} {
		b := newBrowser(t, tt.body)
		b.check()
		if err := b.keyed(b.startDTLS(ctx, bcert, dtlssrtp.Client)); err != nil {
			t.Fatalf("%s leg's handshake: %v", tt.id, err)
		}
		// The browser is keyed once the anchor's Finished came: the
		// anchor's own keys follow.
		waitFor(t, tt.id+" leg keyed on the anchor", func() bool { return webrtcSRTP(t, m, tt.id, "browser").Str("suite") != "" })
		if q := webrtcSRTP(t, m, tt.id, "browser"); q.Str("DTLS failure") != "" {
			t.Fatalf("%s: %v", tt.id, q)
		}
	}

	// A section the old leg's re-offer adds, after the renewal, gets the
	// leg's certificate too: one leg, one fingerprint.
	two := withFingerprint(t, bcert, "actpass")
	i := strings.Index(two, "m=audio")
	second := strings.Replace(strings.Replace(two[i:], "a=mid:0", "a=mid:1", 1), "m=audio 54321", "m=audio 54322", 1)
	res = do(t, m, "offer", ng.Dict{"call-id": "old", "from-tag": "browser", "to-tag": "phone", "sdp": two + second, "ICE": "remove", "transport-protocol": "RTP/AVP"})
	if res.Str("result") != "ok" {
		t.Fatalf("re-offer with a second section: %v", res)
	}
	res = do(t, m, "answer", ng.Dict{"call-id": "old", "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()) + strings.Join(strings.SplitAfter(phoneSDP(phone.addr()), "\r\n")[5:], ""), "ICE": "force"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer with a second section: %v", res)
	}
	if s, err := sdp.Parse([]byte(res.Str("sdp"))); err != nil || len(s.Media) != 2 {
		t.Fatalf("answer to the browser: %v\n%s", err, res.Str("sdp"))
	} else {
		for k := range s.Media {
			if w, _ := s.WebRTC(k); w.Fingerprint != fpOld {
				t.Fatalf("section %d of the old leg has fingerprint %v, want its leg's %v", k, w.Fingerprint, fpOld)
			}
		}
	}
}
