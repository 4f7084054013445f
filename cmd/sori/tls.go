package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/sori-voice/sori/config"
)

// certs is the certificate (and client CA) of the tls listeners. Reload
// reads the files again: new connections get the new certificate, open
// ones keep theirs.
type certs struct {
	c    config.TLS
	node nodeCerts // zero without sip.node_transport tls
	cur  atomic.Pointer[tls.Config]
	// nodeCur is what connections from the nodes' addresses are served
	// with when sip.node_cert is set; nil: cur.
	nodeCur atomic.Pointer[tls.Config]
	nodes   atomic.Pointer[x509.CertPool] // sip.node_ca as last read
}

// nodeCerts is how this node is one of the nodes over TLS (sip.node_transport tls).
type nodeCerts struct {
	// CA (sip.node_ca) verifies the certificate another node presents.
	CA string
	// Cert and Key (sip.node_cert, sip.node_key) are this node's
	// certificate among the nodes; "": sip.tls's.
	Cert, Key string
	// IP is sip.node_address's, which this node's certificate must name
	// for the others to take it for this node.
	IP netip.Addr
	// Peers are the IP addresses of sip.nodes.
	Peers map[netip.Addr]bool
}

// newNodeCerts is cfg's nodeCerts; zero without sip.node_transport tls.
func newNodeCerts(cfg *config.Config) nodeCerts {
	s := &cfg.SIP
	if s.NodeTransport != "tls" {
		return nodeCerts{}
	}
	n := nodeCerts{CA: s.NodeCA, Cert: s.NodeCert, Key: s.NodeKey, Peers: map[netip.Addr]bool{}}
	if l, err := config.ParseListener(s.NodeAddress); err == nil { // validated by config
		n.IP = l.Addr.Addr().Unmap()
	}
	for _, a := range s.Nodes {
		if l, err := config.ParseListener(a); err == nil {
			n.Peers[l.Addr.Addr().Unmap()] = true
		}
	}
	return n
}

// newCerts loads sip.tls, first creating a self-signed pair for names and
// ips when sip.tls.self_signed asks and neither file exists.
func newCerts(c config.TLS, node nodeCerts, names []string, ips []net.IP) (*certs, error) {
	if c.SelfSigned {
		_, certErr := os.Stat(c.Cert)
		_, keyErr := os.Stat(c.Key)
		if errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist) {
			if err := selfSigned(c.Cert, c.Key, names, ips); err != nil {
				return nil, fmt.Errorf("sip.tls.cert: creating a self-signed certificate: %w", err)
			}
		}
	}
	s := &certs{c: c, node: node}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the certificates, keys and CA files again. With
// sip.node_ca, this node's certificate (sip.node_cert, else sip.tls's)
// must be one the other nodes take for this node (see nodeCertUsable):
// otherwise the old ones stay.
func (s *certs) Reload() error {
	pair, err := tls.LoadX509KeyPair(s.c.Cert, s.c.Key)
	if err != nil {
		return fmt.Errorf("sip.tls.cert: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	var nodePool *x509.CertPool
	var nodeCfg *tls.Config
	if s.node.CA != "" {
		if nodePool, err = loadPool("sip.node_ca", s.node.CA); err != nil {
			return err
		}
		own, key, file := pair, "sip.tls.cert", s.c.Cert
		if s.node.Cert != "" {
			if own, err = tls.LoadX509KeyPair(s.node.Cert, s.node.Key); err != nil {
				return fmt.Errorf("sip.node_cert: %w", err)
			}
			key, file = "sip.node_cert", s.node.Cert
			nodeCfg = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{own}}
		}
		if err := nodeCertUsable(own, nodePool, s.node.IP); err != nil {
			return fmt.Errorf("%s: %s cannot be this node's certificate (sip.node_transport tls): %w", key, file, err)
		}
	}
	switch {
	case s.c.CA != "":
		pool, err := loadPool("sip.tls.ca", s.c.CA)
		if err != nil {
			return err
		}
		if nodePool != nil {
			// The other nodes connect with certificates of sip.node_ca's.
			if err := appendPool(pool, "sip.node_ca", s.node.CA); err != nil {
				return err
			}
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	case nodePool != nil:
		// Phones have no certificate and are not asked for one in a way
		// that fails them; a node has one, and one that does not chain to
		// the nodes' CA is refused at the handshake.
		cfg.ClientCAs, cfg.ClientAuth = nodePool, tls.VerifyClientCertIfGiven
	}
	if nodeCfg != nil {
		nodeCfg.ClientCAs, nodeCfg.ClientAuth = cfg.ClientCAs, cfg.ClientAuth
	}
	s.cur.Store(cfg)
	s.nodeCur.Store(nodeCfg)
	if nodePool != nil {
		s.nodes.Store(nodePool)
	}
	return nil
}

// nodeCertUsable reports why pair is no certificate for the node at ip
// among nodes trusting pool: it must chain to pool for both client and
// server use (it is presented both ways) and name ip as an IP SAN.
func nodeCertUsable(pair tls.Certificate, pool *x509.CertPool, ip netip.Addr) error {
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		inter.AddCert(c)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			return fmt.Errorf("not verified against sip.node_ca: %w", err)
		}
	}
	if ip.IsValid() {
		if err := leaf.VerifyHostname(ip.String()); err != nil {
			return fmt.Errorf("it does not name the node address %s (sip.node_address) as an IP SAN: %w", ip, err)
		}
	}
	return nil
}

// nodeVouch is the transport's Vouch with sip.node_transport tls: a TLS
// connection (accepted or dialled) is another node's when its peer
// certificate vouches for one of sip.nodes (nodeVouches), against
// sip.node_ca as last read.
func (s *certs) nodeVouch() func(tls.ConnectionState, netip.AddrPort) bool {
	if s == nil || s.node.CA == "" {
		return nil
	}
	return func(cs tls.ConnectionState, remote netip.AddrPort) bool {
		return nodeVouches(s.nodes.Load(), s.node.Peers, cs.PeerCertificates, remote.Addr())
	}
}

// nodeVouches is the trust decision: peer (the leaf, then its chain) is
// the certificate of the node at ip when ip is a node's address, the
// certificate chains to pool for client use, and it names ip as an IP SAN.
// No certificate, another CA's, or another node's is no node's.
func nodeVouches(pool *x509.CertPool, nodes map[netip.Addr]bool, peer []*x509.Certificate, ip netip.Addr) bool {
	ip = ip.Unmap()
	if pool == nil || len(peer) == 0 || !nodes[ip] {
		return false
	}
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	if _, err := peer[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return false
	}
	return peer[0].VerifyHostname(ip.String()) == nil
}

func loadPool(key, path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", key, path)
	}
	return pool, nil
}

// appendPool adds the certificates of the PEM file path (config key) to pool.
func appendPool(pool *x509.CertPool, key, path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s: %s holds no PEM certificate", key, path)
	}
	return nil
}

// clientCert is this node's certificate (sip.node_cert, else sip.tls's),
// as it is now (reloaded on SIGHUP), for the connections it opens to
// other nodes.
func (s *certs) clientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if nc := s.nodeCur.Load(); nc != nil {
		return &nc.Certificates[0], nil
	}
	return &s.cur.Load().Certificates[0], nil
}

// nodeTLS is how this node opens TLS to the other nodes (sip.node_transport
// tls): it presents its own certificate (sip.node_cert, else sip.tls's)
// and verifies theirs against sip.node_ca, for the node's IP address.
// Both are as last read (certs.Reload, on SIGHUP): each connection dialled
// gets the configuration of that moment, so after a rotation a node whose
// certificate is under the new CA is reached and one under the old is
// not; open connections keep what they were made with. nil when the
// nodes talk in the clear.
func nodeTLS(cfg *config.Config, own *certs) (func(netip.AddrPort) *tls.Config, error) {
	if cfg.SIP.NodeTransport != "tls" || own == nil {
		return nil, nil
	}
	if own.nodes.Load() == nil {
		return nil, errors.New("sip.node_ca: not loaded (sip.node_transport tls)")
	}
	names := map[netip.AddrPort]string{}
	for _, a := range cfg.SIP.Nodes {
		l, err := config.ParseListener(a)
		if err != nil || l.Transport != "tls" { // validated by config
			continue
		}
		names[l.Addr] = l.Addr.Addr().String()
	}
	return func(dest netip.AddrPort) *tls.Config {
		name, ok := names[dest]
		if !ok {
			return nil
		}
		return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: own.nodes.Load(), ServerName: name,
			GetClientCertificate: own.clientCert}
	}, nil
}

// eitherTLS asks each of fs in turn how to open TLS to dest.
func eitherTLS(fs ...func(netip.AddrPort) *tls.Config) func(netip.AddrPort) *tls.Config {
	var set []func(netip.AddrPort) *tls.Config
	for _, f := range fs {
		if f != nil {
			set = append(set, f)
		}
	}
	if len(set) == 0 {
		return nil
	}
	return func(dest netip.AddrPort) *tls.Config {
		for _, f := range set {
			if c := f(dest); c != nil {
				return c
			}
		}
		return nil
	}
}

// Config is what the listeners serve with: each handshake takes the
// configuration current at that moment (forClient).
func (s *certs) Config() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { return s.forClient(h), nil },
	}
}

// forClient is the configuration a handshake gets: with sip.node_cert,
// a client on one of the nodes' addresses gets the node's certificate;
// everyone else (phones, browsers) sip.tls's.
func (s *certs) forClient(h *tls.ClientHelloInfo) *tls.Config {
	if nc := s.nodeCur.Load(); nc != nil && h != nil && h.Conn != nil {
		if ap, err := netip.ParseAddrPort(h.Conn.RemoteAddr().String()); err == nil && s.node.Peers[ap.Addr().Unmap()] {
			return nc
		}
	}
	return s.cur.Load()
}

// selfSigned writes a new ECDSA P-256 key and a certificate for names and
// ips signed by itself (so a phone can be told to trust it as its own CA).
func selfSigned(certPath, keyPath string, names []string, ips []net.IP) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"Sori (self-signed)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(825 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              names,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	for _, p := range []string{certPath, keyPath} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// carrierTLS is how sori opens TLS to each trunk's tls gateways: the
// carrier's CA, the name to verify (server_name, else the gateway's IP),
// and sori's client certificate when given (validated by config).
func carrierTLS(cfg *config.Config) (func(netip.AddrPort) *tls.Config, error) {
	byAddr := map[netip.AddrPort]*tls.Config{}
	for _, t := range cfg.Trunks {
		if t.TLS == nil {
			continue
		}
		pem, err := os.ReadFile(t.TLS.CA)
		if err != nil {
			return nil, fmt.Errorf("trunks %s tls.ca: %w", t.Name, err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		var certs []tls.Certificate
		if t.TLS.Cert != "" {
			pair, err := tls.LoadX509KeyPair(t.TLS.Cert, t.TLS.Key)
			if err != nil {
				return nil, fmt.Errorf("trunks %s tls.cert: %w", t.Name, err)
			}
			certs = []tls.Certificate{pair}
		}
		for _, g := range t.Gateways {
			l, err := config.ParseListener(g.Address)
			if err != nil || l.Transport != "tls" {
				continue
			}
			name := t.TLS.ServerName
			if name == "" {
				name = l.Addr.Addr().String()
			}
			byAddr[l.Addr] = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: name, Certificates: certs}
		}
	}
	if len(byAddr) == 0 {
		return nil, nil
	}
	return func(dest netip.AddrPort) *tls.Config { return byAddr[dest] }, nil
}
