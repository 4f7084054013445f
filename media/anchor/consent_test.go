package anchor

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/stun/v3"

	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/rtptest"
	"github.com/sori-voice/sori/media/sdp"
)

// consentBrowser plays a browser on a loopback socket: its ICE checks are
// built with pion/stun, its DTLS client is a dtlssrtp endpoint, its SRTP
// pion/srtp's. It records what the anchor sends it.
type consentBrowser struct {
	t      *testing.T
	conn   *net.UDPConn
	anchor netip.AddrPort // the leg's port
	ice    sdp.WebRTC     // the anchor's answer's ICE and DTLS

	answers   chan [stun.TransactionIDSize]byte // success responses to the checks
	heard     chan struct{}                     // an arrival of the phone's RTP, decrypted
	lastHeard atomic.Int64                      // when the latest one came (unix ns)
	plain     atomic.Int64                      // the phone's RTP arrived in clear: never allowed

	mu     sync.Mutex
	dtls   *dtlssrtp.Endpoint
	in     *srtp.Context // the anchor's SRTP to the browser
	out    *srtp.Context // the browser's own
	outSeq uint16
}

func (b *consentBrowser) read() {
	buf := make([]byte, 1500)
	var hdr rtp.Header
	for {
		n, _, err := b.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		p := buf[:n]
		switch {
		case stun.IsMessage(p):
			m := &stun.Message{Raw: bytes.Clone(p)}
			if m.Decode() == nil && m.Type == stun.BindingSuccess {
				select {
				case b.answers <- m.TransactionID:
				default: // the periodic checks' answers, which nobody waits for
				}
			}
		case p[0] >= 20 && p[0] <= 63:
			b.mu.Lock()
			e := b.dtls
			b.mu.Unlock()
			if e != nil {
				e.Handle(p)
			}
		case p[0] >= 128 && p[0] <= 191:
			if bytes.HasSuffix(p, []byte("phone")) {
				b.plain.Add(1) // SRTP would end in its tag
			}
			b.mu.Lock()
			in := b.in
			var plain []byte
			if in != nil {
				plain, err = in.DecryptRTP(nil, p, &hdr)
			}
			b.mu.Unlock()
			if in != nil && err == nil && bytes.HasSuffix(plain, []byte("phone")) {
				b.lastHeard.Store(time.Now().UnixNano())
				select {
				case b.heard <- struct{}{}:
				default:
				}
			}
		}
	}
}

// send sends one nominating Binding request, as a browser's consent
// check is.
func (b *consentBrowser) send() (*stun.Message, error) {
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername(b.ice.Ufrag+":Gw3R"),
		stun.RawAttribute{Type: stun.AttrICEControlling, Value: make([]byte, 8)}, stun.RawAttribute{Type: stun.AttrUseCandidate},
		stun.NewShortTermIntegrity(b.ice.Pwd), stun.Fingerprint)
	if err != nil {
		return nil, err
	}
	_, err = b.conn.WriteToUDPAddrPort(m.Raw, b.anchor)
	return m, err
}

// check sends a check and waits for its success; it returns when it was
// sent.
func (b *consentBrowser) check() time.Time {
	b.t.Helper()
	sent := time.Now()
	m, err := b.send()
	if err != nil {
		b.t.Fatal(err)
	}
	for {
		select {
		case id := <-b.answers:
			if id == m.TransactionID {
				return sent
			}
		case <-time.After(5 * time.Second):
			b.t.Fatal("a consent check was not answered")
		}
	}
}

// talk sends one SRTP packet of the browser's.
func (b *consentBrowser) talk() {
	b.mu.Lock()
	out := b.out
	b.outSeq++
	seq := b.outSeq
	var wire []byte
	if out != nil {
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 0xb0b}, Payload: []byte{0xfc, 'b', 'r', 'o', 'w'}}
		plain, _ := pkt.Marshal()
		wire, _ = out.EncryptRTP(nil, plain, nil)
	}
	b.mu.Unlock()
	if wire != nil {
		_, _ = b.conn.WriteToUDPAddrPort(wire, b.anchor)
	}
}

// consentOf is the browser leg's ICE consent in a query.
func consentOf(t *testing.T, m *Manager) string {
	t.Helper()
	return mediaDict(t, do(t, m, "query", ng.Dict{"call-id": "consent"}), "browser").Dict("SRTP").Str("ICE consent")
}

// TestConsentFreshness: a browser's checks on its nominated path keep the
// anchor sending it media; ConsentTimeout after the last one the anchor
// stops (RFC 7675 §5.1) while the browser's own media still reaches the
// phone, query says so, a new check resumes it, and once the browser is
// silent too the call ends as a media timeout, reported to the controller.
func TestConsentFreshness(t *testing.T) {
	const consent, mediaTimeout = 400 * time.Millisecond, time.Second
	notified := make(chan ng.Dict, 4)
	m, alloc := iceManager(t, 49000, Config{ConsentTimeout: consent, MediaTimeout: mediaTimeout, Notify: NotifierFunc(func(_ netip.AddrPort, d ng.Dict) error { notified <- d; return nil })})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go m.RunConsent(ctx)
	go m.RunTimeouts(ctx)

	bcert, err := dtlssrtp.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	offer := browserSDP(t)
	i := strings.Index(offer, "a=fingerprint:")
	j := i + strings.Index(offer[i:], "\r\n")
	offer = offer[:i] + "a=fingerprint:" + bcert.Fingerprint().String() + offer[j:]
	phone := newUDPPhone(t)
	res := do(t, m, "offer", ng.Dict{"call-id": "consent", "from-tag": "browser", "sdp": offer, "ICE": "remove", "transport-protocol": "RTP/AVP"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	anchorForPhone := netip.AddrPortFrom(loopback, uint16(mediaOf(t, res.Str("sdp")).Port))
	res = do(t, m, "answer", ng.Dict{"call-id": "consent", "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	toBrowser, err := sdp.Parse([]byte(res.Str("sdp")))
	if err != nil {
		t.Fatal(err)
	}
	w, _ := toBrowser.WebRTC(0)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	b := &consentBrowser{t: t, conn: conn, anchor: netip.AddrPortFrom(loopback, uint16(toBrowser.Media[0].Port)), ice: w,
		answers: make(chan [stun.TransactionIDSize]byte, 64), heard: make(chan struct{}, 1024)}
	go b.read()

	// ICE, then DTLS as the client (the anchor answered a=setup:passive).
	b.check()
	keyed := make(chan dtlssrtp.Keys, 1)
	e, err := dtlssrtp.Start(ctx, dtlssrtp.Config{Role: dtlssrtp.Client, Certificate: bcert, Remote: dtlssrtp.Fingerprint(w.Fingerprint),
		Send: func(p []byte) error { _, err := conn.WriteToUDPAddrPort(p, b.anchor); return err },
		Done: func(k dtlssrtp.Keys, err error) {
			if err != nil {
				t.Errorf("DTLS: %v", err)
			}
			keyed <- k
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	b.mu.Lock()
	b.dtls = e
	b.mu.Unlock()
	var k dtlssrtp.Keys
	select {
	case k = <-keyed:
	case <-time.After(10 * time.Second):
		t.Fatal("no DTLS handshake")
	}
	in, err := srtp.CreateContext(k.RemoteKey, k.RemoteSalt, srtp.ProtectionProfile(k.Profile))
	if err != nil {
		t.Fatal(err)
	}
	out, err := srtp.CreateContext(k.LocalKey, k.LocalSalt, srtp.ProtectionProfile(k.Profile))
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.in, b.out = in, out
	b.mu.Unlock()

	// The phone talks throughout; the browser while browserTalks, and
	// checks every 100 ms while checking (a browser's are 5 s apart;
	// consent lasts 400 ms here); the phone counts what reaches it of the
	// browser.
	var browserTalks, checking atomic.Bool
	browserTalks.Store(true)
	checking.Store(true)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if checking.Load() {
				_, _ = b.send()
			}
		}
	}()
	var phoneHeard atomic.Int64
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := phone.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if bytes.HasSuffix(buf[:n], []byte("brow")) {
				phoneHeard.Add(1)
			}
		}
	}()
	var seq uint16
	t.Cleanup(rtptest.Pace(func() {
		seq++
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 0x50710002}, Payload: []byte{0xfc, 'p', 'h', 'o', 'n', 'e'}}
		plain, _ := pkt.Marshal()
		_, _ = phone.conn.WriteToUDPAddrPort(plain, anchorForPhone)
		if browserTalks.Load() {
			b.talk()
		}
	}))
	heardWithin := func(d time.Duration) bool {
		select {
		case <-b.heard:
			return true
		case <-time.After(d):
			return false
		}
	}
	drain := func() {
		for {
			select {
			case <-b.heard:
			default:
				return
			}
		}
	}

	// 1. Consent: the phone's media reaches the browser.
	if !heardWithin(5 * time.Second) {
		t.Fatal("the phone's media never reached the browser")
	}
	if got := consentOf(t, m); got != "fresh" {
		t.Fatalf("ICE consent %q after a check, want fresh", got)
	}

	// 2. One last check, then none: media to the browser stops no sooner
	// than ConsentTimeout after it; the browser's own still reaches the
	// phone, and the call stays.
	checking.Store(false)
	last := b.check()
	deadline := time.Now().Add(5 * time.Second)
	for consentOf(t, m) != "expired" {
		if time.Now().After(deadline) {
			t.Fatal("consent never expired without checks")
		}
		heardWithin(20 * time.Millisecond) // paces the polling
	}
	if lastHeard := time.Unix(0, b.lastHeard.Load()); lastHeard.Sub(last) < consent-100*time.Millisecond {
		t.Fatalf("the browser's last packet came %s after its last check; consent lasts %s", lastHeard.Sub(last), consent)
	}
	drain()
	before := phoneHeard.Load()
	window := time.After(300 * time.Millisecond)
	n := 0
	for quiet := false; !quiet; {
		select {
		case <-b.heard:
			n++
		case <-window:
			quiet = true
		}
	}
	if n > 1 { // one may have been on its way
		t.Fatalf("%d packets sent in 300 ms to a browser whose consent expired (the phone sends every 20 ms)", n)
	}
	if got := phoneHeard.Load() - before; got < 5 {
		t.Fatalf("the phone heard %d of the browser's packets in 300 ms after its consent expired; its media must still be relayed", got)
	}
	q := mediaDict(t, do(t, m, "query", ng.Dict{"call-id": "consent"}), "browser").Dict("SRTP")
	if lost, ok := q.Int("ICE consent lost"); !ok || lost < last.Unix() {
		t.Fatalf("query: %v", q)
	}
	select {
	case d := <-notified:
		t.Fatalf("the call ended while the browser still talks: %v", d)
	default:
	}

	// 3. A fresh check gives consent back: media flows again at once.
	drain()
	b.check()
	checking.Store(true)
	if !heardWithin(2 * time.Second) {
		t.Fatal("media did not resume after a fresh check")
	}
	if got := consentOf(t, m); got != "fresh" {
		t.Fatalf("ICE consent %q after a new check, want fresh", got)
	}

	// 4. The browser goes away (no checks, no media) while the phone
	// talks on: the call ends as a media timeout, for consent.
	checking.Store(false)
	browserTalks.Store(false)
	select {
	case d := <-notified:
		if d.Str("command") != "media-timeout" || d.Str("call-id") != "consent" || d.Str("reason") != "ICE consent expired" {
			t.Fatalf("notification %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call with a browser gone was never ended")
	}
	if r := do(t, m, "query", ng.Dict{"call-id": "consent"}); r.Str("result") != "error" {
		t.Fatalf("the ended call is still held: %v", r)
	}
	// The ports go once the notification is out.
	for deadline := time.Now().Add(5 * time.Second); alloc.InUse() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d port pairs still in use after the media timeout", alloc.InUse())
		}
	}
}
