package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/siptest"
)

// Two nodes with sip.node_transport tls, on 127.0.0.1 and 127.0.0.2, each
// with its own certificate from a CA the test makes (node a's is its
// sip.tls; node b has its own sip.node_cert, and a sip.tls certificate
// of another CA's for its phones, which a phone connecting over TLS
// without a certificate gets, and registers). bob registers over
// TCP on node b; alice, on node a over UDP, calls him: node a has no tcp
// listener at all, so the INVITE, ACK and BYE can only reach node b over
// the TLS connection node a opened, verifying b's certificate, and b
// relays them unauthenticated only because a's client certificate names
// node a (mutual TLS). A client on node a's address that sends node b
// what node a would (bob's flow token in its Route) is not taken for node
// a without that certificate: no certificate, or the nodes' CA's for
// another address, gets 407 (out of a dialog) and 403 Not From A Node (in
// one), and bob gets nothing. A client whose certificate another CA
// signed is refused at the handshake.
func TestNodesOverTLS(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	ca := newTestCA(t, dir, "nodes-ca")
	phones := newTestCA(t, dir, "phones-ca") // node b's sip.tls, for its phones
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	udp := []int{freeSIPPort(t), freeSIPPort(t), freeSIPPort(t)}
	tlsPorts := []int{freeSIPPort(t), freeSIPPort(t), freeSIPPort(t)}
	ab := nodeAddrs("tls", ips[:2], tlsPorts[:2])
	// start runs node id on ips[i], trusting the nodes' certificates to
	// caFile; with phones, its sip.tls certificate is that CA's and its
	// node certificate (sip.node_cert) issuer's, else issuer's serves both.
	start := func(i int, id, listen string, nodes []string, caFile string, issuer, phones *testCA) *sipNode {
		n := nodeSpec{id: id, ip: ips[i], port: udp[i], listen: []string{listen}, nodes: nodes, store: rs.URL(), nodeCA: caFile}
		n.tlsCert, n.tlsKey = issuer.issue(t, id, ips[i])
		if phones != nil {
			n.nodeCert, n.nodeKey = n.tlsCert, n.tlsKey
			n.tlsCert, n.tlsKey = phones.issue(t, id+"-for-phones", ips[i])
		}
		return n.start(t)
	}
	a := start(0, "a", fmt.Sprintf(`"udp:127.0.0.1:%d", "tls:127.0.0.1:%d"`, udp[0], tlsPorts[0]), ab, ca.certFile, ca, nil)
	b := start(1, "b", fmt.Sprintf(`"udp:127.0.0.2:%[1]d", "tcp:127.0.0.2:%[1]d", "tls:127.0.0.2:%[2]d"`, udp[1], tlsPorts[1]), ab, ca.certFile, ca, phones)
	if v, err := redistest.Command(rs.Addr, "GET", "sori:node:b"); err != nil || v != fmt.Sprintf("tls:127.0.0.2:%d", tlsPorts[1]) {
		t.Fatalf("node b's heartbeat: %q %v", v, err)
	}

	const contact = "sip:bob@192.168.1.20:5060;transport=tcp"
	bob := &ua{sipConn: dialFrom(t, "tcp", "127.0.0.11", b.sipAddr()), user: "bob", password: "bob-secret"}
	if res := bob.registerAuth("bob", "bob-secret", "bob-tls-nodes", 1, "Contact: <"+contact+">", "Expires: 600"); res.StatusCode != 200 {
		t.Fatalf("bob's REGISTER on node b: %d", res.StatusCode)
	}
	alice := &ua{sipConn: dialFrom(t, "udp", "127.0.0.10", a.sipAddr()), user: "alice", password: "alice-secret"}
	var token string // bob's flow token on node b, from b's Record-Route
	callAndHangUp(t, alice, bob, contact, func(inv *sip.Request) {
		vias := inv.GetHeaders("Via")
		aVia := fmt.Sprintf("SIP/2.0/TLS 127.0.0.1:%d", tlsPorts[0])
		if len(vias) != 3 || !strings.HasPrefix(vias[1].Value(), aVia) {
			t.Fatalf("the INVITE did not come from node a over TLS: Via %v, want the second %s", siptest.Values(vias), aVia)
		}
		for _, h := range inv.GetHeaders("Record-Route") {
			var u sip.Uri
			if err := sip.ParseUri(strings.Trim(h.Value(), "<>"), &u); err == nil && u.Host == "127.0.0.2" && u.User != "" {
				token = u.User
			}
		}
	})
	if token == "" {
		t.Fatal("no Record-Route of node b's with a flow token")
	}
	// And a MESSAGE, which node b relays without a dialog.
	alice.authenticated("MESSAGE", "sip:bob@sori.test", "Content-Type: text/plain")
	if msg := bob.readRequest(); msg.Method != sip.MESSAGE || msg.From().Address.User != "alice" || msg.Recipient.String() != contact {
		t.Fatalf("bob got %s %s from %s, want alice's MESSAGE", msg.Method, msg.Recipient.String(), msg.From().Address.String())
	} else {
		bob.respond(msg, 200, "OK")
	}
	if res := alice.final(); res.StatusCode != 200 {
		t.Fatalf("alice's MESSAGE through node b: %d %s", res.StatusCode, res.Reason)
	}
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

	// A phone connecting to node b over TLS is not asked for a
	// certificate in a way that fails it, and gets b's sip.tls
	// certificate (the phones' CA's), not its node certificate.
	phone, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.13")}}, "tcp",
		fmt.Sprintf("127.0.0.2:%d", tlsPorts[1]), &tls.Config{RootCAs: phones.pool, ServerName: "127.0.0.2", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("a phone without a certificate, trusting the phones' CA: %v", err)
	}
	phoneUA := &ua{sipConn: &sipConn{t: t, transport: "tls", conn: phone, reader: bufio.NewReader(phone), local: phone.LocalAddr().String()}, user: "bob", password: "bob-secret"}
	if res := phoneUA.registerAuth("bob", "bob-secret", "bob-tls-phone", 1, "Contact: <sip:bob@192.168.1.21:5061;transport=tls>", "Expires: 600"); res.StatusCode != 200 {
		t.Fatalf("bob's REGISTER over TLS on node b: %d %s", res.StatusCode, res.Reason)
	}
	phone.Close()
	impostors(t, ca, fmt.Sprintf("127.0.0.2:%d", tlsPorts[1]), token, contact, bob)
	// None of them failed a handshake: not giving a certificate (as a
	// phone does not) is no failure.
	if v := metricValue(t, b.node, `sori_sip_tls_handshake_failures_total{direction="in"}`); v != 0 {
		t.Fatalf("node b: %v failed TLS handshakes in", v)
	}

	// Node c trusts another CA: it cannot verify node b's certificate, so
	// nothing it has for bob leaves it (b is never reached in the clear).
	stranger := newTestCA(t, dir, "stranger-ca")
	c := start(2, "c", fmt.Sprintf(`"udp:127.0.0.3:%d", "tls:127.0.0.3:%d"`, udp[2], tlsPorts[2]), nodeAddrs("tls", ips, tlsPorts), stranger.certFile, stranger, nil)
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

// impostors connects to node b (at bAddr) from node a's address,
// 127.0.0.1, as node a would, and sends what node a would: MESSAGEs for
// bob down his flow, by the flow token in their Route, one out of a
// dialog (which a node does not authenticate again) and one inside one
// (which reaches the flow token's check). Without a client certificate,
// or with one of the nodes' CA's naming another node's address, it is a
// stranger: 407 and 403 Not From A Node, and bob (callee, registered at
// contact) gets neither; with node a's certificate both reach bob.
func impostors(t *testing.T, ca *testCA, bAddr, token, contact string, callee *ua) {
	t.Helper()
	other, otherKey := ca.issue(t, "other-node", "127.0.0.3")
	aCert, aKey := ca.issue(t, "node-a-again", "127.0.0.1")
	dial := func(certFile, keyFile string) *sipConn {
		t.Helper()
		cert := &tls.Certificate{} // none
		if certFile != "" {
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			cert = &pair
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}, "tcp", bAddr,
			&tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.2", MinVersion: tls.VersionTLS12,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return &sipConn{t: t, transport: "tls", conn: conn, reader: bufio.NewReader(conn), local: conn.LocalAddr().String()}
	}
	n := 0
	message := func(c *sipConn, inDialog bool) (raw, callID string) {
		n++
		toTag := ""
		if inDialog {
			toTag = ";tag=bob-dialog"
		}
		callID = fmt.Sprintf("impostor-%d", n)
		return fmt.Sprintf(`MESSAGE %[1]s SIP/2.0
Via: SIP/2.0/TLS %[2]s;branch=z9hG4bK-impostor-%[3]d;rport
Route: <sip:%[4]s@%[5]s;transport=tls;lr;ob>
Max-Forwards: 69
From: <sip:alice@sori.test>;tag=impostor-%[3]d
To: <sip:bob@sori.test>%[6]s
Call-ID: %[7]s
CSeq: 1 MESSAGE
Content-Type: text/plain
Content-Length: 2

hi`, contact, c.local, n, token, bAddr, toTag, callID), callID
	}
	for _, who := range []struct{ name, cert, key string }{
		{"no client certificate", "", ""},
		{"the nodes' CA's certificate for 127.0.0.3", other, otherKey},
	} {
		c := dial(who.cert, who.key)
		raw, _ := message(c, false)
		if res := c.do(raw); res.StatusCode != 407 {
			t.Fatalf("from node a's address, %s, out of a dialog: %d %s, want 407 (authenticated as any phone)", who.name, res.StatusCode, res.Reason)
		}
		raw, _ = message(c, true)
		if res := c.do(raw); res.StatusCode != 403 || res.Reason != "Forbidden: Not From A Node" {
			t.Fatalf("from node a's address, %s, in a dialog: %d %s, want 403 Not From A Node", who.name, res.StatusCode, res.Reason)
		}
	}
	// Node a's certificate: both reach bob, and they are the first
	// requests he gets since the refused ones (which never reached him).
	c := dial(aCert, aKey)
	for _, inDialog := range []bool{false, true} {
		raw, callID := message(c, inDialog)
		c.send(raw)
		msg := callee.readRequest()
		if msg.Method != sip.MESSAGE || msg.CallID().Value() != callID {
			t.Fatalf("with node a's certificate (in a dialog: %v): bob got %s %s, want the MESSAGE %s", inDialog, msg.Method, msg.CallID().Value(), callID)
		}
		callee.respond(msg, 200, "OK")
		res := c.read()
		for res.StatusCode < 200 {
			res = c.read()
		}
		if res.StatusCode != 200 {
			t.Fatalf("with node a's certificate (in a dialog: %v): %d %s", inDialog, res.StatusCode, res.Reason)
		}
	}
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
	cert, key := sign(t, certSpec{name: name, ca: true}, nil, nil)
	ca := &testCA{dir: dir, name: name, certFile: filepath.Join(dir, name+".pem"), cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	writePEM(t, ca.certFile, "CERTIFICATE", cert.Raw)
	return ca
}

// issue writes a certificate for ip (server and client use) signed by the
// CA, and its key; it returns both files.
func (ca *testCA) issue(t *testing.T, name, ip string) (certFile, keyFile string) {
	t.Helper()
	cert, key := sign(t, certSpec{name: name, ips: []string{ip}}, ca.cert, ca.key)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, ca.name+"-"+name+".crt"), filepath.Join(ca.dir, ca.name+"-"+name+".key")
	writePEM(t, certFile, "CERTIFICATE", cert.Raw)
	writePEM(t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sip.node_ca and this node's certificate are read again on SIGHUP for
// the connections it dials, not only for those it accepts. Node a trusts
// an old CA and has a certificate of its; node b has a certificate of
// the old CA's, node c one of a new CA's, and both trust either CA (so
// what decides is node a's verifying them). Before the rotation node a
// cannot reach node c. Then the new CA and a new certificate of its for
// node a are written over node a's files, and node a gets SIGHUP: it
// reaches node c (which takes its new certificate for node a's: carol
// gets alice's MESSAGE without a challenge), and no longer node b.
func TestNodesReloadNodeCA(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	oldCA, newCA := newTestCA(t, dir, "old-ca"), newTestCA(t, dir, "new-ca")
	phones := newTestCA(t, dir, "phones-ca")
	both := filepath.Join(dir, "both-cas.pem")
	writeFile := func(path string, from ...string) {
		t.Helper()
		var b []byte
		for _, f := range from {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, data...)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(both, oldCA.certFile, newCA.certFile)
	// Node a's files, rewritten in place by the rotation.
	aCA, aCert, aKey := filepath.Join(dir, "a-node-ca.pem"), filepath.Join(dir, "a-node.crt"), filepath.Join(dir, "a-node.key")
	writeFile(aCA, oldCA.certFile)
	c, k := oldCA.issue(t, "a", "127.0.0.1")
	writeFile(aCert, c)
	writeFile(aKey, k)

	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	udp := []int{freeSIPPort(t), freeSIPPort(t), freeSIPPort(t)}
	tlsPorts := []int{freeSIPPort(t), freeSIPPort(t), freeSIPPort(t)}
	spec := func(i int, id, cert, key, caFile string) nodeSpec {
		return nodeSpec{id: id, ip: ips[i], port: udp[i], nodes: nodeAddrs("tls", ips, tlsPorts), store: rs.URL(),
			listen:  []string{fmt.Sprintf(`"udp:%[1]s:%[2]d", "tcp:%[1]s:%[2]d", "tls:%[1]s:%[3]d"`, ips[i], udp[i], tlsPorts[i])},
			tlsCert: cert, tlsKey: key, nodeCA: caFile, users: []string{"carol"}}
	}
	forPhones, forPhonesKey := phones.issue(t, "a-for-phones", "127.0.0.1")
	as := spec(0, "a", forPhones, forPhonesKey, aCA)
	as.nodeCert, as.nodeKey = aCert, aKey
	a := as.start(t)
	bCert, bKey := oldCA.issue(t, "b", "127.0.0.2")
	b := spec(1, "b", bCert, bKey, both).start(t)
	cCert, cKey := newCA.issue(t, "c", "127.0.0.3")
	cn := spec(2, "c", cCert, cKey, both).start(t)

	register := func(n *sipNode, user, from, contact string) *ua {
		t.Helper()
		u := &ua{sipConn: dialFrom(t, "tcp", from, n.sipAddr()), user: user, password: user + "-secret"}
		if res := u.registerAuth(user, user+"-secret", user+"-reload", 1, "Contact: <"+contact+">", "Expires: 600"); res.StatusCode != 200 {
			t.Fatalf("%s's REGISTER on node %s: %d", user, n.id, res.StatusCode)
		}
		return u
	}
	const bobContact, carolContact = "sip:bob@192.168.1.20:5060;transport=tcp", "sip:carol@192.168.1.30:5060;transport=tcp"
	register(b, "bob", "127.0.0.11", bobContact) // its connection stays open
	carol := register(cn, "carol", "127.0.0.12", carolContact)
	alice := &ua{sipConn: dialFrom(t, "udp", "127.0.0.10", a.sipAddr()), user: "alice", password: "alice-secret"}
	failedOut := `sori_sip_tls_handshake_failures_total{direction="out"}`
	unreachable := func(to string, failures float64) {
		t.Helper()
		alice.authenticated("MESSAGE", "sip:"+to+"@sori.test", "Content-Type: text/plain")
		if res := alice.final(); res.StatusCode < 300 {
			t.Fatalf("a MESSAGE to %s: %d %s, want it failed (node a cannot verify that node)", to, res.StatusCode, res.Reason)
		}
		waitMetric(t, a.node, failedOut, failures)
	}
	reached := func(to string, callee *ua, contact string) {
		t.Helper()
		alice.authenticated("MESSAGE", "sip:"+to+"@sori.test", "Content-Type: text/plain")
		msg := callee.readRequest()
		if msg.Method != sip.MESSAGE || msg.From().Address.User != "alice" || msg.Recipient.String() != contact {
			t.Fatalf("%s got %s %s from %s, want alice's MESSAGE", to, msg.Method, msg.Recipient.String(), msg.From().Address.String())
		}
		callee.respond(msg, 200, "OK")
		if res := alice.final(); res.StatusCode != 200 {
			t.Fatalf("alice's MESSAGE to %s: %d %s", to, res.StatusCode, res.Reason)
		}
	}

	// Before: node c's certificate is the new CA's, which node a does not
	// trust yet.
	unreachable("carol", 1)

	// The rotation, then SIGHUP.
	writeFile(aCA, newCA.certFile)
	c, k = newCA.issue(t, "a-rotated", "127.0.0.1")
	writeFile(aCert, c)
	writeFile(aKey, k)
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(a.log(), "TLS certificate reloaded"); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(a.log(), "TLS certificate not reloaded") || time.Now().After(deadline) {
			t.Fatalf("node a did not reload its certificates on SIGHUP:\n%s", tail(a.log(), 2000))
		}
	}

	// After: node c (new CA) is reached, node b (old CA) is not.
	reached("carol", carol, carolContact)
	unreachable("bob", 2)
	if v := metricValue(t, a.node, `sori_sip_connections{transport="TLS"}`); v != 1 {
		t.Fatalf("node a: %v TLS connections, want the one to node c", v)
	}
}
