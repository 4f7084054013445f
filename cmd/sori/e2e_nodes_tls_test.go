package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

// Two nodes with sip.node_transport tls, on 127.0.0.1 and 127.0.0.2, each
// with its own certificate from a CA the test makes. bob registers over
// TCP on node b; alice, on node a over UDP, calls him: node a has no tcp
// listener at all, so the INVITE, ACK and BYE can only reach node b over
// the TLS connection node a opened, verifying b's certificate (and b
// verifying a's). A client whose certificate another CA signed is
// refused at the handshake.
func TestNodesOverTLS(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	ca := newTestCA(t, dir, "nodes-ca")
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	udp := []int{freeSIPPort(t), freeSIPPort(t), freeSIPPort(t)}
	tlsPorts := []int{freeSIPPort(t), freeSIPPort(t), freeSIPPort(t)}
	var addrs []string
	for i, ip := range ips {
		addrs = append(addrs, fmt.Sprintf("%q", fmt.Sprintf("tls:%s:%d", ip, tlsPorts[i])))
	}
	ab := strings.Join(addrs[:2], ", ")
	// start runs node id on ips[i], trusting the nodes' certificates to caFile.
	start := func(i int, id, listen, nodes, caFile string, issuer *testCA) *sipNode {
		cert, key := issuer.issue(t, id, ips[i])
		httpAddr := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
		cfg := fmt.Sprintf(`sip:
  domain: sori.test
  listen: [%[1]s]
  auth_secret: e2e-shared-secret-0123456789
  tls: {cert: %[2]q, key: %[3]q}
  node_id: %[4]s
  node_transport: tls
  node_ca: %[5]q
  nodes: [%[6]s]
registrar:
  store: %[7]q
  store_timeout: 300ms
http:
  listen: %[8]s
log:
  level: debug
users:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
`, listen, cert, key, id, caFile, nodes, rs.URL(), httpAddr)
		return &sipNode{node: runNode(t, cfg, udp[i], httpAddr), id: id, ip: ips[i]}
	}
	a := start(0, "a", fmt.Sprintf(`"udp:127.0.0.1:%d", "tls:127.0.0.1:%d"`, udp[0], tlsPorts[0]), ab, ca.certFile, ca)
	b := start(1, "b", fmt.Sprintf(`"udp:127.0.0.2:%[1]d", "tcp:127.0.0.2:%[1]d", "tls:127.0.0.2:%[2]d"`, udp[1], tlsPorts[1]), ab, ca.certFile, ca)
	if v, err := redistest.Command(rs.Addr, "GET", "sori:node:b"); err != nil || v != fmt.Sprintf("tls:127.0.0.2:%d", tlsPorts[1]) {
		t.Fatalf("node b's heartbeat: %q %v", v, err)
	}

	const contact = "sip:bob@192.168.1.20:5060;transport=tcp"
	bob := &ua{sipConn: dialFrom(t, "tcp", "127.0.0.11", b.sipAddr()), user: "bob", password: "bob-secret"}
	if res := bob.registerAuth("bob", "bob-secret", "bob-tls-nodes", 1, "Contact: <"+contact+">", "Expires: 600"); res.StatusCode != 200 {
		t.Fatalf("bob's REGISTER on node b: %d", res.StatusCode)
	}
	alice := &ua{sipConn: dialFrom(t, "udp", "127.0.0.10", a.sipAddr()), user: "alice", password: "alice-secret"}
	callAndHangUp(t, alice, bob, contact, func(inv *sip.Request) {
		vias := inv.GetHeaders("Via")
		aVia := fmt.Sprintf("SIP/2.0/TLS 127.0.0.1:%d", tlsPorts[0])
		if len(vias) != 3 || !strings.HasPrefix(vias[1].Value(), aVia) {
			t.Fatalf("the INVITE did not come from node a over TLS: Via %v, want the second %s", values(vias), aVia)
		}
	})
	// The connection between them is TLS, dialled by a and accepted by b,
	// with no failed handshake; a has no tcp listener to be reached on.
	for _, n := range []*sipNode{a, b} {
		if v := metricValue(t, n.node, `sori_sip_connections{transport="TLS"}`); v != 1 {
			t.Fatalf("node %s: %v TLS connections, want the one between the nodes", n.id, v)
		}
		if v := metricValue(t, n.node, `sori_sip_connections{transport="TCP"}`); n == a && v != 0 {
			t.Fatalf("node a: %v TCP connections", v)
		}
		for _, dir := range []string{"in", "out"} {
			if v := metricValue(t, n.node, `sori_sip_tls_handshake_failures_total{direction="`+dir+`"}`); v != 0 {
				t.Fatalf("node %s: %v failed TLS handshakes (%s)", n.id, v, dir)
			}
		}
	}

	// Node c trusts another CA: it cannot verify node b's certificate, so
	// nothing it has for bob leaves it (b is never reached in the clear).
	stranger := newTestCA(t, dir, "stranger-ca")
	c := start(2, "c", fmt.Sprintf(`"udp:127.0.0.3:%d", "tls:127.0.0.3:%d"`, udp[2], tlsPorts[2]), strings.Join(addrs, ", "), stranger.certFile, stranger)
	carol := &ua{sipConn: dialFrom(t, "udp", "127.0.0.12", c.sipAddr()), user: "alice", password: "alice-secret"}
	carol.authenticated("MESSAGE", "sip:bob@sori.test", "Content-Type: text/plain")
	res := carol.final()
	if res.StatusCode < 300 {
		t.Fatalf("a MESSAGE through a node that cannot verify node b: %d %s", res.StatusCode, res.Reason)
	}
	t.Logf("through node c, which cannot verify node b: %d %s", res.StatusCode, res.Reason)
	if v := metricValue(t, c.node, `sori_sip_tls_handshake_failures_total{direction="out"}`); v < 1 {
		t.Fatalf("node c: %v failed TLS handshakes out, want node b's refused", v)
	}
	if v := metricValue(t, c.node, `sori_sip_connections{transport="TCP"}`); v != 0 {
		t.Fatalf("node c: %v TCP connections", v)
	}

	// Node b checks a client's certificate against the nodes' CA: one from
	// another CA does not get through the handshake.
	cert, key := stranger.issue(t, "impostor", "127.0.0.1")
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.2:%d", tlsPorts[1]),
		&tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.2", MinVersion: tls.VersionTLS12,
			// Sent whatever CAs node b names (Certificates would send none
			// that does not match them).
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }})
	if err == nil {
		// TLS 1.3: the client's certificate is checked after the client's
		// handshake ends; the refusal arrives on the first read.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client certificate from another CA: %v, want it refused", err)
	}
	waitMetric(t, b.node, `sori_sip_tls_handshake_failures_total{direction="in"}`, 1)
}

// testCA is a certificate authority made for one test.
type testCA struct {
	dir, name, certFile string
	cert                *x509.Certificate
	key                 *ecdsa.PrivateKey
	pool                *x509.CertPool
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{dir: dir, name: name, certFile: filepath.Join(dir, name+".pem"), cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	writePEM(t, ca.certFile, "CERTIFICATE", der)
	return ca
}

// issue writes a certificate for ip (server and client use) signed by the
// CA, and its key; it returns both files.
func (ca *testCA) issue(t *testing.T, name, ip string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP(ip)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, ca.name+"-"+name+".crt"), filepath.Join(ca.dir, ca.name+"-"+name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
