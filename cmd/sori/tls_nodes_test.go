package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sori-voice/sori/config"
)

// certSpec is a certificate the trust tests make.
type certSpec struct {
	name    string // its subject's common name; "" is "test"
	ips     []string
	dns     []string
	usages  []x509.ExtKeyUsage // nil: server and client
	ca      bool
	expired bool
}

// sign makes a certificate for spec signed by parent (with parentKey);
// parent nil: self-signed. It returns the certificate and its key.
func sign(t *testing.T, spec certSpec, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if spec.name == "" {
		spec.name = "test"
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: spec.name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: spec.dns,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: spec.usages}
	if spec.usages == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	if spec.expired {
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	}
	if spec.ca {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = nil
	}
	for _, ip := range spec.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// The trust decision of a TLS connection from a node's address: only a
// certificate chaining to sip.node_ca, for client use, naming the address
// the connection comes from, makes it a node's.
func TestNodeVouches(t *testing.T) {
	root, rootKey := sign(t, certSpec{ca: true}, nil, nil)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	other, otherKey := sign(t, certSpec{ca: true}, nil, nil)
	inter, interKey := sign(t, certSpec{ca: true}, root, rootKey)
	leaf := func(spec certSpec) *x509.Certificate { c, _ := sign(t, spec, root, rootKey); return c }
	nodeB := leaf(certSpec{ips: []string{"10.0.0.2"}})
	viaInter, _ := sign(t, certSpec{ips: []string{"10.0.0.2"}}, inter, interKey)
	stranger, _ := sign(t, certSpec{ips: []string{"10.0.0.2"}}, other, otherKey)
	nodes := map[netip.Addr]bool{netip.MustParseAddr("10.0.0.2"): true, netip.MustParseAddr("10.0.0.3"): true}
	for _, c := range []struct {
		name string
		pool *x509.CertPool
		peer []*x509.Certificate
		from string
		want bool
	}{
		{"node b's certificate, from node b", pool, []*x509.Certificate{nodeB}, "10.0.0.2", true},
		{"the same, from an IPv4-mapped address", pool, []*x509.Certificate{nodeB}, "::ffff:10.0.0.2", true},
		{"through an intermediate sent along", pool, []*x509.Certificate{viaInter, inter}, "10.0.0.2", true},
		{"through an intermediate not sent", pool, []*x509.Certificate{viaInter}, "10.0.0.2", false},
		{"no certificate (a phone, or a client on a node's address)", pool, nil, "10.0.0.2", false},
		{"another CA's certificate for node b", pool, []*x509.Certificate{stranger}, "10.0.0.2", false},
		{"node b's certificate, from node c", pool, []*x509.Certificate{nodeB}, "10.0.0.3", false},
		{"a certificate for an address that is no node's", pool, []*x509.Certificate{leaf(certSpec{ips: []string{"10.0.0.9"}})}, "10.0.0.9", false},
		{"a name, no IP SAN", pool, []*x509.Certificate{leaf(certSpec{dns: []string{"10.0.0.2", "node-b"}})}, "10.0.0.2", false},
		{"server use only", pool, []*x509.Certificate{leaf(certSpec{ips: []string{"10.0.0.2"}, usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})}, "10.0.0.2", false},
		{"expired", pool, []*x509.Certificate{leaf(certSpec{ips: []string{"10.0.0.2"}, expired: true})}, "10.0.0.2", false},
		{"the CA itself", pool, []*x509.Certificate{root}, "10.0.0.2", false},
		{"no sip.node_ca read", nil, []*x509.Certificate{nodeB}, "10.0.0.2", false},
	} {
		if got := nodeVouches(c.pool, nodes, c.peer, netip.MustParseAddr(c.from)); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// A node's own certificate is checked at start (and on SIGHUP) as the
// others will check it; the error names the key.
func TestNodeCertChecked(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "nodes-ca")
	stranger := newTestCA(t, dir, "stranger-ca")
	good, goodKey := ca.issue(t, "b", "10.0.0.2")
	other, otherKey := stranger.issue(t, "b2", "10.0.0.2")
	for _, c := range []struct {
		name, cert, key, ip, err string
	}{
		{"node b's", good, goodKey, "10.0.0.2", ""},
		{"for another address", good, goodKey, "10.0.0.3", "sip.node_address"},
		{"from another CA", other, otherKey, "10.0.0.2", "not verified against sip.node_ca"},
	} {
		_, err := newCerts(config.TLS{Cert: c.cert, Key: c.key}, nodeCerts{CA: ca.certFile, IP: netip.MustParseAddr(c.ip)}, []string{"sori.test"}, nil)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err != "" && (err == nil || !strings.HasPrefix(err.Error(), "sip.tls.cert: ") || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %v, want sip.tls.cert: ... %s", c.name, err, c.err)
		}
	}
	// Without a tls.ca, phones are not required to give a certificate;
	// with one, a certificate of sip.node_ca's is taken too.
	s, err := newCerts(config.TLS{Cert: good, Key: goodKey}, nodeCerts{CA: ca.certFile, IP: netip.MustParseAddr("10.0.0.2")}, []string{"sori.test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.cur.Load().ClientAuth; got != tls.VerifyClientCertIfGiven {
		t.Fatalf("ClientAuth %v, want VerifyClientCertIfGiven", got)
	}
	phones := newTestCA(t, dir, "phones-ca")
	s, err = newCerts(config.TLS{Cert: good, Key: goodKey, CA: phones.certFile}, nodeCerts{CA: ca.certFile, IP: netip.MustParseAddr("10.0.0.2")}, []string{"sori.test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.cur.Load()
	nodeCert, _ := sign(t, certSpec{ips: []string{"10.0.0.3"}}, ca.cert, ca.key)
	if _, err := nodeCert.Verify(x509.VerifyOptions{Roots: cfg.ClientCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("with sip.tls.ca: a node's certificate %v, ClientAuth %v", err, cfg.ClientAuth)
	}
}

// fromAddr is a connection from addr, as a ClientHelloInfo shows it.
type fromAddr struct {
	net.Conn
	addr net.Addr
}

func (c fromAddr) RemoteAddr() net.Addr { return c.addr }

// With sip.node_cert, the node's own pair is checked instead of sip.tls's
// (which may be any CA's, for the phones), presented to the nodes it
// dials, and served to clients on the nodes' addresses only.
func TestNodeCertPair(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "nodes-ca")
	phones := newTestCA(t, dir, "phones-ca")
	forPhones, forPhonesKey := phones.issue(t, "sori", "10.0.0.2")
	nodeB, nodeBKey := ca.issue(t, "b", "10.0.0.2")
	wrong, wrongKey := ca.issue(t, "b-elsewhere", "10.0.0.7")
	node := nodeCerts{CA: ca.certFile, Cert: nodeB, Key: nodeBKey, IP: netip.MustParseAddr("10.0.0.2"),
		Peers: map[netip.Addr]bool{netip.MustParseAddr("10.0.0.1"): true, netip.MustParseAddr("10.0.0.2"): true}}
	phoneTLS := config.TLS{Cert: forPhones, Key: forPhonesKey}
	s, err := newCerts(phoneTLS, node, []string{"sori.test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(c *tls.Certificate) string {
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x.Subject.CommonName
	}
	for _, c := range []struct{ from, want string }{
		{"10.0.0.1:40000", "b"},          // node a
		{"[::ffff:10.0.0.1]:40000", "b"}, // node a, IPv4-mapped
		{"192.0.2.10:40000", "sori"},     // a phone
		{"10.0.0.9:40000", "sori"},       // no node's address
	} {
		h := &tls.ClientHelloInfo{Conn: fromAddr{addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(c.from))}}
		cfg := s.forClient(h)
		if got := leaf(&cfg.Certificates[0]); got != c.want {
			t.Errorf("a client from %s is served %q, want %q", c.from, got, c.want)
		}
		if cfg.ClientAuth != tls.VerifyClientCertIfGiven {
			t.Errorf("a client from %s: ClientAuth %v", c.from, cfg.ClientAuth)
		}
	}
	if c, _ := s.clientCert(nil); leaf(c) != "b" {
		t.Fatalf("presented to the nodes: %q", leaf(c))
	}
	// A node pair that does not name the node's address is refused, by
	// its key; sip.tls alone (the phones' CA's) would be too.
	node.Cert, node.Key = wrong, wrongKey
	if _, err := newCerts(phoneTLS, node, []string{"sori.test"}, nil); err == nil || !strings.HasPrefix(err.Error(), "sip.node_cert: ") {
		t.Fatalf("a node pair for another address: %v", err)
	}
	node.Cert, node.Key = "", ""
	if _, err := newCerts(phoneTLS, node, []string{"sori.test"}, nil); err == nil || !strings.HasPrefix(err.Error(), "sip.tls.cert: ") {
		t.Fatalf("no node pair, sip.tls from the phones' CA: %v", err)
	}
}

// How this node dials the other nodes follows certs.Reload (SIGHUP): the
// CA their certificates are verified against and the certificate it
// presents are the ones last read, for each connection dialled.
func TestNodeTLSReloaded(t *testing.T) {
	dir := t.TempDir()
	oldCA, newCA := newTestCA(t, dir, "old-ca"), newTestCA(t, dir, "new-ca")
	caFile, certFile, keyFile := dir+"/node-ca.pem", dir+"/node.crt", dir+"/node.key"
	copyFile := func(dst, src string) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	install := func(ca *testCA, name string) {
		c, k := ca.issue(t, name, "10.0.0.1")
		copyFile(caFile, ca.certFile)
		copyFile(certFile, c)
		copyFile(keyFile, k)
	}
	install(oldCA, "a")
	cfg := &config.Config{}
	cfg.SIP.NodeTransport, cfg.SIP.NodeCA = "tls", caFile
	cfg.SIP.Nodes = []string{"tls:10.0.0.1:5061", "tls:10.0.0.2:5061"}
	own, err := newCerts(config.TLS{Cert: certFile, Key: keyFile}, nodeCerts{CA: caFile, IP: netip.MustParseAddr("10.0.0.1")}, []string{"sori.test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dial, err := nodeTLS(cfg, own)
	if err != nil {
		t.Fatal(err)
	}
	b := netip.MustParseAddrPort("10.0.0.2:5061")
	if dial(netip.MustParseAddrPort("10.0.0.9:5061")) != nil {
		t.Fatal("a TLS configuration for an address that is no node's")
	}
	oldB, _ := sign(t, certSpec{ips: []string{"10.0.0.2"}}, oldCA.cert, oldCA.key)
	newB, _ := sign(t, certSpec{ips: []string{"10.0.0.2"}}, newCA.cert, newCA.key)
	check := func(when string, wantCA *testCA) {
		t.Helper()
		c := dial(b)
		if c == nil || c.ServerName != "10.0.0.2" {
			t.Fatalf("%s: %+v", when, c)
		}
		for _, peer := range []struct {
			cert *x509.Certificate
			ca   *testCA
		}{{oldB, oldCA}, {newB, newCA}} {
			_, err := peer.cert.Verify(x509.VerifyOptions{Roots: c.RootCAs, DNSName: c.ServerName})
			if (err == nil) != (peer.ca == wantCA) {
				t.Errorf("%s: node b's certificate of the %s: %v", when, peer.ca.name, err)
			}
		}
		cert, err := c.GetClientCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: wantCA.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: the certificate presented is not the %s's: %v", when, wantCA.name, err)
		}
	}
	check("at start", oldCA)
	install(newCA, "a-rotated")
	if err := own.Reload(); err != nil {
		t.Fatal(err)
	}
	check("after the reload", newCA)
}
