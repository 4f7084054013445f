package anchor

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/webrtc"
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
)

// cutProxy stands between a browser and the anchor's port, on loopback:
// the browser is told its port for the anchor's (viaProxy), the anchor
// sees its other socket as the browser. While cut, the anchor's DTLS
// datagrams beyond the first pass ones are dropped, as an anchor killed
// before they go out would never send them; STUN and SRTP always pass.
type cutProxy struct {
	t                       *testing.T
	browserSide, anchorSide *net.UDPConn
	anchor                  netip.AddrPort

	mu      sync.Mutex
	browser netip.AddrPort
	cut     bool
	pass    int // anchor DTLS datagrams still let through while cut
	fromBr  int // browser DTLS datagrams forwarded
	waiters []dtlsWaiter
}

type dtlsWaiter struct {
	n  int
	ch chan struct{}
}

func newCutProxy(t *testing.T, anchor netip.AddrPort, pass int) *cutProxy {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	p := &cutProxy{t: t, browserSide: listen(), anchorSide: listen(), anchor: anchor, cut: true, pass: pass}
	go p.run(p.browserSide, true)
	go p.run(p.anchorSide, false)
	return p
}

func (p *cutProxy) run(c *net.UDPConn, fromBrowser bool) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		dtls := n > 0 && webrtc.Classify(buf[0]) == webrtc.DTLS
		p.mu.Lock()
		if fromBrowser {
			p.browser = from
			if dtls {
				p.fromBr++
				for i := 0; i < len(p.waiters); i++ {
					if w := p.waiters[i]; p.fromBr >= w.n {
						close(w.ch)
						p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
						i--
					}
				}
			}
			p.mu.Unlock()
			_, _ = p.anchorSide.WriteToUDPAddrPort(buf[:n], p.anchor)
			continue
		}
		drop := false
		if dtls && p.cut {
			if p.pass > 0 {
				p.pass--
			} else {
				drop = true
			}
		}
		to := p.browser
		p.mu.Unlock()
		if !drop && to.IsValid() {
			_, _ = p.browserSide.WriteToUDPAddrPort(buf[:n], to)
		}
	}
}

// browserDTLS is closed once n of the browser's DTLS datagrams reached
// the anchor.
func (p *cutProxy) browserDTLS(n int) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := make(chan struct{})
	if p.fromBr >= n {
		close(ch)
	} else {
		p.waiters = append(p.waiters, dtlsWaiter{n, ch})
	}
	return ch
}

func (p *cutProxy) open() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// viaProxy is the anchor's SDP with the proxy's port for the anchor's.
func (p *cutProxy) viaProxy(body string) string {
	from, to := strconv.Itoa(int(p.anchor.Port())), strconv.Itoa(p.browserSide.LocalAddr().(*net.UDPAddr).Port)
	return strings.NewReplacer(" "+from+" ", " "+to+" ", ":"+from+"\r\n", ":"+to+"\r\n").Replace(body)
}

func waitClosed(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(15 * time.Second):
		t.Fatalf("no %s after 15 s", what)
	}
}

// An anchor killed in the middle of a WebRTC leg's DTLS handshake, the
// leg's state kept before its keys existed: the restarted anchor's leg is
// not dead.
//
//   - killed before its answer to the browser's ClientHello went out: the
//     browser's retransmitted ClientHello is answered by the restored leg,
//     the handshake completes with the certificate its SDP named, and
//     SRTP flows both ways.
//   - killed once the browser had its answer (past its ClientHello: its
//     last flight unanswered, a state no new process can finish): the
//     browser reconnects (a new peer connection with its certificate, a
//     re-offer with new ICE credentials), and its new ClientHello replaces
//     the restored leg's handshake, which had only the old one's tail.
func TestWebRTCHandshakeCutByARestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		pass int // the anchor's DTLS datagrams the browser gets before the kill
	}{{"before the anchor answered", 0}, {"after the anchor answered", 1}} {
		t.Run(tc.name, func(t *testing.T) { handshakeCut(t, tc.pass) })
	}
}

func handshakeCut(t *testing.T, pass int) {
	k := &memKeeper{calls: map[string]anchorstate.Call{}}
	manager := func() (*Manager, *ports.Allocator) {
		t.Helper()
		alloc, err := ports.New(loopback, 46600, 46699)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(alloc.Close)
		m := New(Config{Advertise: []netip.Addr{loopback}, Ports: alloc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Keep: k, KeepEvery: time.Hour})
		t.Cleanup(m.Close)
		return m, alloc
	}
	m1, alloc1 := manager()
	phone := newUDPPhone(t)
	fromBrowser := plainPhone(phone)
	cert := webrtctest.NewCertificate(t)
	b := webrtctest.NewPeerWith(t, cert)
	const id = "cut-handshake"
	res := do(t, m1, "offer", ng.Dict{"call-id": id, "from-tag": "browser", "sdp": b.MakeOffer(t), "ICE": "remove", "transport-protocol": "RTP/AVP"})
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	toPhoneLeg := netip.AddrPortFrom(loopback, uint16(checkToPhone(t, res.Str("sdp"), "RTP/AVP").Port))
	res = do(t, m1, "answer", ng.Dict{"call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"})
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	answer := res.Str("sdp")
	proxy := newCutProxy(t, netip.AddrPortFrom(loopback, uint16(mediaOf(t, answer).Port)), pass)
	b.Answer(t, proxy.viaProxy(answer))

	// ICE done, the browser's ClientHello at the anchor: the leg is kept
	// now, before any keys (as a latch's write would keep it).
	waitClosed(t, "ClientHello from the browser", proxy.browserDTLS(1))
	m1.keepAll(time.Now())
	kept := k.all()
	if len(kept) != 1 || kept[0].Legs[0].Medias[0].WebRTC == nil || kept[0].Legs[0].Medias[0].WebRTC.SRTP != nil ||
		len(kept[0].Legs[0].Medias[0].WebRTC.ICE.Valid) == 0 {
		t.Fatalf("kept %+v, want the WebRTC leg after ICE and before its keys", kept)
	}
	if pass > 0 {
		// The browser got the anchor's flight and answered it: its last
		// flight is at the anchor, whose answer never reaches it.
		waitClosed(t, "the browser's second flight", proxy.browserDTLS(2))
	}
	m1.Close()
	alloc1.Close()

	m2, _ := manager()
	if n, dropped := m2.Restore(kept); n != 1 || len(dropped) != 0 {
		t.Fatalf("restored %d, dropped %v", n, dropped)
	}
	proxy.open()
	if pass > 0 {
		// Its association cannot complete: the restored leg gets the
		// browser's retransmitted last flight, which no new process can
		// answer. The browser starts again with the certificate its SDP
		// names, on the same call.
		waitClosed(t, "the browser's retransmission at the restored leg", proxy.browserDTLS(3))
		nb := webrtctest.NewPeerWith(t, cert)
		_ = b.PC.Close()
		b = nb
		if res := do(t, m2, "offer", ng.Dict{"call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": b.MakeOffer(t), "ICE": "remove"}); res.Str("result") != "ok" {
			t.Fatalf("re-offer: %v", res)
		}
		res := do(t, m2, "answer", ng.Dict{"call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP(phone.addr()), "ICE": "force"})
		if res.Str("result") != "ok" {
			t.Fatalf("re-answer: %v", res)
		}
		if got, want := fingerprintOf(res.Str("sdp")), fingerprintOf(answer); got != want {
			t.Fatalf("the re-answer names %v, the leg's SDP said %v", got, want)
		}
		b.Answer(t, proxy.viaProxy(res.Str("sdp")))
	}
	waitClosed(t, "DTLS connection of the browser with the restored leg", b.Connected())
	talk(t, "after the restart", b, phone, fromBrowser, toPhoneLeg, 1)
	if q := webrtcSRTP(t, m2, id, "browser"); q.Str("DTLS failure") != "" {
		t.Fatalf("the restored leg reports a DTLS failure: %v", q)
	}
	// Keyed in this process: kept at once with its new keys.
	m2.keepChanged(time.Now())
	if kept := k.all(); len(kept) != 1 || kept[0].Legs[0].Medias[0].WebRTC.SRTP == nil {
		t.Fatalf("after the handshake, kept %+v", kept)
	}
}
