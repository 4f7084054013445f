package webrtctest

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// CutProxy stands between a browser and an anchor's port, on loopback:
// the browser is told its port for the anchor's (ViaProxy), the anchor
// sees its other socket as the browser. While cut, the anchor's DTLS
// datagrams beyond the first pass are dropped, as an anchor killed
// before they went out would never have sent them; STUN and SRTP always
// pass. It closes when the test ends.
type CutProxy struct {
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

// NewCutProxy proxies to anchor, cut, letting pass of the anchor's DTLS
// datagrams through.
func NewCutProxy(t testing.TB, anchor netip.AddrPort, pass int) *CutProxy {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	p := &CutProxy{browserSide: listen(), anchorSide: listen(), anchor: anchor, cut: true, pass: pass}
	go p.run(p.browserSide, true)
	go p.run(p.anchorSide, false)
	return p
}

func (p *CutProxy) run(c *net.UDPConn, fromBrowser bool) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		dtls := n > 0 && buf[0] >= 20 && buf[0] <= 63 // RFC 7983
		p.mu.Lock()
		if fromBrowser {
			p.browser = from
			if dtls {
				p.fromBr++
				kept := p.waiters[:0]
				for _, w := range p.waiters {
					if p.fromBr >= w.n {
						close(w.ch)
					} else {
						kept = append(kept, w)
					}
				}
				p.waiters = kept
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

// BrowserDTLS is closed once n of the browser's DTLS datagrams went on
// to the anchor.
func (p *CutProxy) BrowserDTLS(n int) <-chan struct{} {
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

// Open lets every datagram through from now on.
func (p *CutProxy) Open() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// ViaProxy is the anchor's SDP with the proxy's port for the anchor's
// (m= line, candidates, a=rtcp).
func (p *CutProxy) ViaProxy(body string) string {
	from, to := strconv.Itoa(int(p.anchor.Port())), strconv.Itoa(p.browserSide.LocalAddr().(*net.UDPAddr).Port)
	return strings.NewReplacer(" "+from+" ", " "+to+" ", ":"+from+"\r\n", ":"+to+"\r\n").Replace(body)
}

// WaitClosed waits for ch, failing the test after within.
func WaitClosed(t testing.TB, what string, ch <-chan struct{}, within time.Duration) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("no %s after %s", what, within)
	}
}
