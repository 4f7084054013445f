package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNodes(t *testing.T) {
	base := `sip:
  listen: ["udp:10.0.0.1:5060", "tcp:10.0.0.1:5060"]
  auth_secret: shared-secret-0123456789
%s
registrar:
  store: redis-cluster://10.0.0.9:7000
`
	parse := func(sip string) (*Config, error) {
		return Parse("n.yaml", []byte(strings.Replace(base, "%s", sip, 1)))
	}
	c, err := parse(`  node_id: sori-a
  nodes: ["tcp:10.0.0.1:5060", "tcp:10.0.0.2:5060"]`)
	if err != nil {
		t.Fatal(err)
	}
	if c.SIP.NodeAddress != "tcp:10.0.0.1:5060" || c.SIP.NodeID != "sori-a" {
		t.Fatalf("node %q at %q: want the first tcp listener", c.SIP.NodeID, c.SIP.NodeAddress)
	}
	if c, err := parse(`  nodes: ["tcp:10.0.0.1:5060"]`); err != nil || c.SIP.NodeID == "" {
		t.Fatalf("node id from the host name: %q %v", c.SIP.NodeID, err)
	}
	for _, tt := range []struct {
		name, sip, want string
	}{
		{"address not listened on", `  node_address: tcp:10.0.0.1:5070
  nodes: ["tcp:10.0.0.1:5070"]`, "n.yaml:4: sip.node_address: tcp:10.0.0.1:5070 is not one of sip.listen"},
		{"not in the list", `  node_address: tcp:10.0.0.1:5060
  nodes: ["tcp:10.0.0.2:5060"]`, "sip.node_address: tcp:10.0.0.1:5060 is not in sip.nodes"},
		{"a bad entry", `  nodes: ["tcp:10.0.0.1:5060", "tls:10.0.0.2:5061"]`, "n.yaml:4: sip.nodes.1: \"tls:10.0.0.2:5061\": nodes talk over tcp or udp (or tls: see sip.node_transport)"},
		{"node_ca without tls", `  node_ca: /etc/ca.pem
  nodes: ["tcp:10.0.0.1:5060"]`, "n.yaml:4: sip.node_ca: is only used with sip.node_transport tls"},
		{"node_transport tcp", `  node_transport: tcp
  nodes: ["tcp:10.0.0.1:5060"]`, "n.yaml:4: sip.node_transport: \"tcp\": give tls, or leave it out"},
		{"listed twice", `  nodes: ["tcp:10.0.0.1:5060", "tcp:10.0.0.1:5060"]`, "sip.nodes.1: 10.0.0.1:5060 is listed twice"},
		{"a bad id", `  node_id: "a b"
  nodes: ["tcp:10.0.0.1:5060"]`, "n.yaml:4: sip.node_id: \"a b\""},
		{"node_id alone", `  node_id: sori-a`, "sip.node_id: is only used with sip.nodes"},
		{"edge proxy not a prefix", `  edge_proxies: [10.0.0.300/32]`, "n.yaml:4: sip.edge_proxies.0: \"10.0.0.300/32\" is not a CIDR prefix"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(tt.sip)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct{ name, yaml, want string }{
		{"memory store", "sip:\n  auth_secret: shared-secret-0123456789\n  nodes: [\"tcp:127.0.0.1:5060\"]\n", "sip.nodes: needs a Redis registrar.store"},
		{"no secret", "sip:\n  nodes: [\"tcp:127.0.0.1:5060\"]\nregistrar:\n  store: redis://127.0.0.1:6379/0\n", "sip.nodes: needs sip.auth_secret"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("n.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// sip.node_transport tls: every node address is a tls listener, the
// default node_address is the first one, and the nodes' CA is required.
func TestNodesOverTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key, ca := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	writeTestCert(t, cert, key)
	if err := os.WriteFile(ca, mustRead(t, cert), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("no certificate here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := `sip:
  listen: ["udp:10.0.0.1:5060", "tcp:10.0.0.1:5060", "tls:10.0.0.1:5061"]
  auth_secret: shared-secret-0123456789
  tls: {cert: ` + cert + `, key: ` + key + `}
%s
registrar:
  store: redis-cluster://10.0.0.9:7000
`
	parse := func(sip string) (*Config, error) {
		return Parse("n.yaml", []byte(strings.Replace(base, "%s", sip, 1)))
	}
	c, err := parse(`  node_id: sori-a
  node_transport: tls
  node_ca: ` + ca + `
  nodes: ["tls:10.0.0.1:5061", "tls:10.0.0.2:5061"]`)
	if err != nil {
		t.Fatal(err)
	}
	if c.SIP.NodeAddress != "tls:10.0.0.1:5061" || c.SIP.NodeTransport != "tls" || c.SIP.NodeCA != ca {
		t.Fatalf("node at %q over %q with CA %q: want the first tls listener", c.SIP.NodeAddress, c.SIP.NodeTransport, c.SIP.NodeCA)
	}
	c, err = parse(`  node_transport: tls
  node_ca: ` + ca + `
  node_cert: ` + cert + `
  node_key: ` + key + `
  nodes: ["tls:10.0.0.1:5061", "tls:10.0.0.2:5061"]`)
	if err != nil || c.SIP.NodeCert != cert || c.SIP.NodeKey != key {
		t.Fatalf("a node pair: %v", err)
	}
	for _, tt := range []struct{ name, sip, want string }{
		{"a tcp node", `  node_transport: tls
  node_ca: ` + ca + `
  nodes: ["tls:10.0.0.1:5061", "tcp:10.0.0.2:5060"]`, "n.yaml:7: sip.nodes.1: \"tcp:10.0.0.2:5060\": with sip.node_transport tls, nodes talk over tls"},
		{"a tcp node_address", `  node_transport: tls
  node_ca: ` + ca + `
  node_address: tcp:10.0.0.1:5060
  nodes: ["tls:10.0.0.1:5061"]`, "n.yaml:7: sip.node_address: \"tcp:10.0.0.1:5060\": with sip.node_transport tls, nodes talk over tls"},
		{"no CA", `  node_transport: tls
  nodes: ["tls:10.0.0.1:5061"]`, "sip.node_ca: required with sip.node_transport tls"},
		{"a CA file without certificates", `  node_transport: tls
  node_ca: ` + empty + `
  nodes: ["tls:10.0.0.1:5061"]`, "n.yaml:6: sip.node_ca: " + empty + " holds no PEM certificate"},
		{"a missing CA file", `  node_transport: tls
  node_ca: ` + filepath.Join(dir, "none.pem") + `
  nodes: ["tls:10.0.0.1:5061"]`, "n.yaml:6: sip.node_ca: open " + filepath.Join(dir, "none.pem")},
		{"tls without nodes", `  node_transport: tls
  node_ca: ` + ca, "n.yaml:5: sip.node_transport: is only used with sip.nodes"},
		{"a node_cert without node_key", `  node_transport: tls
  node_ca: ` + ca + `
  node_cert: ` + cert + `
  nodes: ["tls:10.0.0.1:5061"]`, "sip.node_key: required with sip.node_cert"},
		{"a node_key without node_cert", `  node_transport: tls
  node_ca: ` + ca + `
  node_key: ` + key + `
  nodes: ["tls:10.0.0.1:5061"]`, "sip.node_cert: required with sip.node_key"},
		{"a node_cert that is no certificate", `  node_transport: tls
  node_ca: ` + ca + `
  node_cert: ` + empty + `
  node_key: ` + key + `
  nodes: ["tls:10.0.0.1:5061"]`, "n.yaml:7: sip.node_cert: tls: failed to find any PEM data in certificate input"},
		{"a node_cert in the clear", `  node_cert: ` + cert + `
  node_key: ` + key + `
  nodes: ["tcp:10.0.0.1:5060"]`, "n.yaml:5: sip.node_cert: is only used with sip.node_transport tls"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(tt.sip)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
	// No tls listener on a specific address: node_address must be given.
	if _, err := Parse("n.yaml", []byte(`sip:
  listen: ["tcp:10.0.0.1:5060"]
  auth_secret: shared-secret-0123456789
  node_transport: tls
  node_ca: `+ca+`
  nodes: ["tls:10.0.0.1:5061"]
registrar:
  store: redis://10.0.0.9:6379/0
`)); err == nil || !strings.Contains(err.Error(), "sip.node_address: required: no tls listener on a specific address") {
		t.Fatalf("no tls listener: %v", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeTestCert writes a self-signed ECDSA certificate and its key.
func writeTestCert(t *testing.T, certPath, keyPath string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}
