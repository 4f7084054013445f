package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// tlsNode is sori with a udp and a tls listener and a self-signed
// certificate it creates itself in dir.
type tlsNode struct {
	*node
	tlsPort   int
	cert, key string
}

func startTLSNode(t *testing.T) *tlsNode {
	t.Helper()
	dir := t.TempDir()
	port, tlsPort := freeSIPPort(t), freeSIPPort(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
	cert, key := filepath.Join(dir, "tls", "cert.pem"), filepath.Join(dir, "tls", "key.pem")
	cfg := fmt.Sprintf(`sip:
  domain: sori.test
  listen: ["udp:127.0.0.1:%d", "tls:127.0.0.1:%d"]
  auth_secret: e2e-shared-secret-0123456789
  tls: {cert: %q, key: %q, self_signed: true}
registrar: {store: memory}
http: {listen: %s}
users:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
`, port, tlsPort, cert, key, httpAddr)
	return &tlsNode{node: runNode(t, cfg, port, httpAddr), tlsPort: tlsPort, cert: cert, key: key}
}

// trusting is a client TLS configuration for sori.test that trusts only
// the certificates in caFile.
func trusting(t *testing.T, caFile string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s: no certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: "sori.test", MinVersion: tls.VersionTLS12}
}

// dialTLS connects to sori's tls listener trusting only the certificate in
// caFile, and returns the connection and what sori presented.
func dialTLS(t *testing.T, addr, caFile string) (*sipConn, *x509.Certificate) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, trusting(t, caFile))
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &sipConn{t: t, transport: "tls", conn: c, reader: bufio.NewReader(c), local: c.LocalAddr().String()},
		c.ConnectionState().PeerCertificates[0]
}

// A phone over TLS: sori presents the self-signed certificate it made for
// its domain, the phone registers over the connection, a CRLF ping on it
// gets its pong, a call from a UDP phone reaches it on that same
// connection with sori's Record-Route for TLS, and a SIGHUP after the
// certificate changed serves the new one to new connections while the
// old connection stays up.
func TestTLSPhone(t *testing.T) {
	n := startTLSNode(t)
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", n.tlsPort)
	bobConn, presented := dialTLS(t, tlsAddr, n.cert)
	if presented.Subject.CommonName != "sori.test" || presented.NotAfter.Before(time.Now().Add(365*24*time.Hour)) {
		t.Fatalf("certificate %s until %s", presented.Subject.CommonName, presented.NotAfter)
	}
	if fi, err := os.Stat(n.key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v", fi, err)
	}
	bob := &ua{sipConn: bobConn, user: "bob", password: "bob-secret"}
	contact := fmt.Sprintf("Contact: <sip:bob@%s;transport=tls>", bob.local)
	if res := bob.registerAuth("bob", "bob-secret", "tls-reg@test", 1, contact); res.StatusCode != 200 {
		t.Fatalf("REGISTER over TLS: %d %s", res.StatusCode, res.Reason)
	}

	// RFC 5626 §4.4.1: a double CRLF is answered with a CRLF.
	if _, err := bob.conn.Write([]byte("\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = bob.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if pong, err := bob.reader.ReadString('\n'); err != nil || pong != "\r\n" {
		t.Fatalf("pong %q %v", pong, err)
	}

	alice := newUA(t, n.node, "udp", "alice")
	// sips: (RFC 5630): only to contacts reached over TLS. Alice is on UDP
	// only, bob's binding is his TLS connection.
	if res := alice.registerAuth("alice", "alice-secret", "alice-udp@test", 1, fmt.Sprintf("Contact: <sip:alice@%s>", alice.local)); res.StatusCode != 200 {
		t.Fatalf("alice REGISTER over UDP: %d", res.StatusCode)
	}
	bob.authenticated("INVITE", "sips:alice@sori.test")
	if res := bob.final(); res.StatusCode != 480 || !strings.Contains(res.Reason, "Secure") {
		t.Fatalf("sips: INVITE to a UDP-only user: %d %s, want 480", res.StatusCode, res.Reason)
	}
	alice.authenticated("INVITE", "sips:bob@sori.test")
	inv := bob.readRequest()
	if inv.Method != sip.INVITE || !strings.EqualFold(inv.Via().Transport, "TLS") {
		t.Fatalf("bob got %s over %s", inv.Method, inv.Via().Transport)
	}
	var rrs []string
	for _, h := range inv.GetHeaders("Record-Route") {
		rrs = append(rrs, h.Value())
	}
	if len(rrs) != 2 || !strings.Contains(rrs[0], fmt.Sprintf(":%d;transport=tls", n.tlsPort)) || strings.Contains(rrs[1], "transport=") {
		t.Fatalf("Record-Route %v: want sori's TLS side first, then its UDP side", rrs)
	}
	bob.respond(inv, 200, "OK", contact)
	res := alice.final()
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", res.StatusCode)
	}
	sendACK(t, alice, bob, 2, res)
	alice.send(alice.inDialog("BYE", 3, res))
	bye := bob.readRequest()
	if bye.Method != sip.BYE {
		t.Fatalf("bob got %s, want BYE", bye.Method)
	}
	bob.respond(bye, 200, "OK")
	if r := alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}

	// A new certificate, read on SIGHUP: new connections get it, the open
	// one carries on.
	other := filepath.Join(t.TempDir(), "new")
	if err := selfSigned(other+".crt", other+".key", []string{"sori.test"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]string{{other + ".crt", n.cert}, {other + ".key", n.key}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(n.log(), "TLS certificate reloaded") {
		if time.Now().After(deadline) {
			t.Fatal("no reload in the log")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, fresh := dialTLS(t, tlsAddr, other+".crt")
	if fresh.SerialNumber.Cmp(presented.SerialNumber) == 0 {
		t.Fatal("the old certificate after SIGHUP")
	}
	if res := bob.registerAuth("bob", "bob-secret", "tls-reg@test", 3, contact); res.StatusCode != 200 {
		t.Fatalf("REGISTER on the connection opened before SIGHUP: %d", res.StatusCode)
	}
}

// A client that does not speak TLS on the tls port, or trusts another
// certificate, gets no SIP at all, and sori goes on serving.
func TestTLSHandshakeFailures(t *testing.T) {
	n := startTLSNode(t)
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", n.tlsPort)
	plain := dialSIP(t, "tcp", tlsAddr)
	plain.send(plain.register("bob", "plain@test", 1))
	_ = plain.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if b, err := plain.reader.ReadString('\n'); err == nil && strings.HasPrefix(b, "SIP/2.0") {
		t.Fatalf("plain TCP on the TLS port answered %q", b)
	}
	stranger := filepath.Join(t.TempDir(), "stranger")
	if err := selfSigned(stranger+".crt", stranger+".key", []string{"sori.test"}, nil); err != nil {
		t.Fatal(err)
	}
	if c, err := tls.Dial("tcp", tlsAddr, trusting(t, stranger+".crt")); err == nil {
		c.Close()
		t.Fatal("a client trusting another certificate got through")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := httpGet(t, "http://"+n.http+"/metrics")
		if v, ok := sampleIn(body, `sori_sip_tls_handshake_failures_total{direction="in"}`); ok && v >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handshake failures not counted:\n%s", grepLines(body, "tls"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	good, _ := dialTLS(t, tlsAddr, n.cert)
	if res := good.registerAuth("bob", "bob-secret", "after@test", 1, "Contact: <sip:bob@"+good.local+";transport=tls>"); res.StatusCode != 200 {
		t.Fatalf("REGISTER after the failures: %d", res.StatusCode)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
