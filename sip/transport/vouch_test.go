package transport

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

func testPair(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Vouched is asked about the address a message came from: true only while
// every open TLS connection from there has a certificate Vouch vouched
// for. A second connection from the same address and port (to another of
// sori's addresses) without one does not borrow the first one's; closed,
// a connection vouches for nothing.
func TestVouched(t *testing.T) {
	pair := testPair(t)
	var asked []netip.AddrPort
	f := start(t, func(o *Options) {
		o.Listeners = []Listener{
			{Transport: "tls", Addr: netip.MustParseAddrPort("127.0.0.1:0")},
			{Transport: "tls", Addr: netip.MustParseAddrPort("127.0.0.2:0")},
		}
		o.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert}
		o.Vouch = func(cs tls.ConnectionState, remote netip.AddrPort) bool {
			asked = append(asked, remote) // handshakes are one at a time here
			return len(cs.PeerCertificates) > 0
		}
	})
	addrs := f.tp.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("listening on %v", addrs)
	}
	// dial connects from local (port 0: any) to the tls listener i, with
	// or without a client certificate, and sends one request, answered.
	dial := func(i int, local netip.AddrPort, withCert bool) (*tls.Conn, string) {
		t.Helper()
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(local), Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) }); err != nil {
				return err
			}
			return serr
		}}
		cfg := &tls.Config{InsecureSkipVerify: true} // the test's own listener
		if withCert {
			cfg.Certificates = []tls.Certificate{pair}
		}
		c, err := tls.DialWithDialer(&d, "tcp", addrs[i][len("tls:"):], cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte(request("vouch"+local.String(), "192.0.2.1:5061"))); err != nil {
			t.Fatal(err)
		}
		readResponses(t, bufio.NewReader(c), 1) // handshake done, request read
		<-f.h.got
		return c, c.LocalAddr().String()
	}
	first, src := dial(0, netip.MustParseAddrPort("127.0.0.1:0"), true)
	if !f.tp.Vouched("TLS", src) || !f.tp.Vouched("tls", src) {
		t.Fatalf("a connection with a certificate from %s: not vouched for", src)
	}
	for _, c := range []struct{ transport, src string }{{"TCP", src}, {"UDP", src}, {"WSS", src}, {"TLS", "127.0.0.1:1"}, {"TLS", "not an address"}} {
		if f.tp.Vouched(c.transport, c.src) {
			t.Errorf("Vouched(%s, %s)", c.transport, c.src)
		}
	}
	f.h.mu.Lock()
	got := f.h.requests[0].Source()
	f.h.mu.Unlock()
	if got != src {
		t.Fatalf("the request's source %s, the connection's %s", got, src)
	}

	// A second connection from the same address and port, to the other
	// listener, without a certificate: neither is vouched for any more.
	second, _ := dial(1, netip.MustParseAddrPort(src), false)
	if f.tp.Vouched("TLS", src) {
		t.Fatal("a connection without a certificate from the address of one with: vouched for")
	}
	if len(asked) != 2 || asked[0].String() != src || asked[1].String() != src {
		t.Fatalf("Vouch asked about %v", asked)
	}
	second.Close()
	waitVouched(t, f.tp, src, true)
	first.Close()
	waitVouched(t, f.tp, src, false)
}

// waitVouched waits for the transport to see a connection close.
func waitVouched(t *testing.T, tp *Transport, src string, want bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); tp.Vouched("TLS", src) != want; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Vouched(TLS, %s) stayed %v", src, !want)
		}
	}
}

// The Gate is told a message is vouched for when its TLS connection's
// certificate was (a node's, with sip.node_transport tls), and is not for
// the same address on a connection without one: that one is screened as
// anyone's (here rejected, 503).
func TestVouchedToGate(t *testing.T) {
	pair := testPair(t)
	g := &vouchGate{}
	f := start(t, func(o *Options) {
		o.Listeners = []Listener{{Transport: "tls", Addr: netip.MustParseAddrPort("127.0.0.1:0")}}
		o.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert}
		o.Vouch = func(cs tls.ConnectionState, _ netip.AddrPort) bool { return len(cs.PeerCertificates) > 0 }
		o.Gate = g
	})
	for _, c := range []struct {
		withCert bool
		answer   int
		asked    string
	}{{true, 200, "127.0.0.2 vouched"}, {false, 503, "127.0.0.2 not"}} {
		cfg := &tls.Config{InsecureSkipVerify: true} // the test's own listener
		if c.withCert {
			cfg.Certificates = []tls.Certificate{pair}
		}
		conn, err := tls.DialWithDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}, "tcp", f.tp.Addrs()[0][len("tls:"):], cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write([]byte(request("gate-tls", "127.0.0.2:5061"))); err != nil {
			t.Fatal(err)
		}
		if res := readResponses(t, bufio.NewReader(conn), 1)[0]; res.StatusCode != c.answer {
			t.Errorf("with a certificate %v: %d %s, want %d", c.withCert, res.StatusCode, res.Reason, c.answer)
		}
		if got := g.take(); len(got) != 1 || got[0] != c.asked {
			t.Errorf("with a certificate %v: gate asked %v, want %s", c.withCert, got, c.asked)
		}
		conn.Close()
	}
}
