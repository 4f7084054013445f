package dtlssrtp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

type outcome struct {
	keys Keys
	err  error
}

// pair runs a server and a client endpoint over in-memory pipes: each one's
// Send is the other's Handle. drop, when set, loses a datagram on its way.
func pair(t *testing.T, serverCfg, clientCfg Config, drop func(fromClient bool, n int) bool) (server, client outcome) {
	t.Helper()
	sc, cc := mustCert(t), mustCert(t)
	serverCfg.Role, clientCfg.Role = Server, Client
	serverCfg.Certificate, clientCfg.Certificate = sc, cc
	if serverCfg.Remote == (Fingerprint{}) {
		serverCfg.Remote = cc.Fingerprint()
	}
	if clientCfg.Remote == (Fingerprint{}) {
		clientCfg.Remote = sc.Fingerprint()
	}
	var s, c *Endpoint
	var ready = make(chan struct{})
	var sent [2]atomic.Int64
	serverCfg.Send = func(b []byte) error {
		<-ready
		if drop != nil && drop(false, int(sent[0].Add(1))) {
			return nil
		}
		c.Handle(b)
		return nil
	}
	clientCfg.Send = func(b []byte) error {
		<-ready
		if drop != nil && drop(true, int(sent[1].Add(1))) {
			return nil
		}
		s.Handle(b)
		return nil
	}
	sdone, cdone := make(chan outcome, 1), make(chan outcome, 1)
	serverCfg.Done = func(k Keys, err error) { sdone <- outcome{k, err} }
	clientCfg.Done = func(k Keys, err error) { cdone <- outcome{k, err} }
	ctx := t.Context()
	var err error
	if s, err = Start(ctx, serverCfg); err != nil {
		t.Fatal(err)
	}
	if c, err = Start(ctx, clientCfg); err != nil {
		t.Fatal(err)
	}
	close(ready)
	t.Cleanup(func() {
		_ = c.Close()
		_ = s.Close()
	})
	wait := func(ch chan outcome) outcome {
		select {
		case o := <-ch:
			return o
		case <-time.After(20 * time.Second):
			t.Fatal("no handshake outcome")
			return outcome{}
		}
	}
	return wait(sdone), wait(cdone)
}

func mustCert(t *testing.T) *Certificate {
	t.Helper()
	c, err := NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHandshakeExportsMirroredKeys(t *testing.T) {
	tests := []struct {
		name           string
		server, client []Profile
		want           Profile
		drop           func(bool, int) bool
	}{
		{name: "defaults", want: AES128CMHMACSHA180},
		{name: "client offers GCM only", client: []Profile{AEADAES128GCM}, want: AEADAES128GCM},
		{name: "AES-256-GCM", server: []Profile{AEADAES256GCM}, client: []Profile{AEADAES128GCM, AEADAES256GCM}, want: AEADAES256GCM},
		{name: "HMAC-SHA1-32", server: []Profile{AES128CMHMACSHA132}, want: AES128CMHMACSHA132},
		// The first ClientHello and the server's first flight are lost:
		// pion/dtls retransmits and the handshake still completes.
		{name: "lost flights", want: AES128CMHMACSHA180, drop: func(fromClient bool, n int) bool { return n == 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := pair(t, Config{Profiles: tt.server}, Config{Profiles: tt.client}, tt.drop)
			if s.err != nil || c.err != nil {
				t.Fatalf("server %v, client %v", s.err, c.err)
			}
			for _, k := range []Keys{s.keys, c.keys} {
				if k.Profile != tt.want {
					t.Errorf("profile %v, want %v", k.Profile, tt.want)
				}
				if len(k.LocalKey) != tt.want.KeyLen() || len(k.RemoteKey) != tt.want.KeyLen() || len(k.LocalSalt) != tt.want.SaltLen() || len(k.RemoteSalt) != tt.want.SaltLen() {
					t.Errorf("lengths %d/%d %d/%d", len(k.LocalKey), len(k.LocalSalt), len(k.RemoteKey), len(k.RemoteSalt))
				}
			}
			if !bytes.Equal(s.keys.LocalKey, c.keys.RemoteKey) || !bytes.Equal(s.keys.LocalSalt, c.keys.RemoteSalt) ||
				!bytes.Equal(c.keys.LocalKey, s.keys.RemoteKey) || !bytes.Equal(c.keys.LocalSalt, s.keys.RemoteSalt) {
				t.Errorf("keys do not mirror:\nserver %+v\nclient %+v", s.keys, c.keys)
			}
			if bytes.Equal(s.keys.LocalKey, s.keys.RemoteKey) {
				t.Error("both directions have the same key")
			}
		})
	}
}

func TestFingerprintMismatchFails(t *testing.T) {
	other := mustCert(t)
	s, c := pair(t, Config{Timeout: 5 * time.Second}, Config{Remote: other.Fingerprint(), Timeout: 5 * time.Second}, nil)
	if !errors.Is(c.err, errFingerprint) {
		t.Errorf("client: %v, want a fingerprint mismatch", c.err)
	}
	if s.err == nil {
		t.Error("server completed a handshake its peer refused")
	}
	if c.keys.LocalKey != nil || s.keys.LocalKey != nil {
		t.Error("keys despite the failure")
	}
}

func TestServerChecksClientFingerprint(t *testing.T) {
	other := mustCert(t)
	s, _ := pair(t, Config{Remote: other.Fingerprint(), Timeout: 5 * time.Second}, Config{Timeout: 5 * time.Second}, nil)
	if !errors.Is(s.err, errFingerprint) {
		t.Errorf("server: %v, want a fingerprint mismatch", s.err)
	}
}

func TestStartRefusesBadConfig(t *testing.T) {
	cert := mustCert(t)
	send := func([]byte) error { return nil }
	done := func(Keys, error) {}
	for name, cfg := range map[string]Config{
		"no certificate":  {Remote: cert.Fingerprint(), Send: send, Done: done},
		"no send":         {Certificate: cert, Remote: cert.Fingerprint(), Done: done},
		"no done":         {Certificate: cert, Remote: cert.Fingerprint(), Send: send},
		"unknown hash":    {Certificate: cert, Remote: Fingerprint{Hash: "md5", Value: "AA"}, Send: send, Done: done},
		"no fingerprint":  {Certificate: cert, Send: send, Done: done},
		"empty value":     {Certificate: cert, Remote: Fingerprint{Hash: "sha-256"}, Send: send, Done: done},
		"no hash at all":  {Certificate: cert, Remote: Fingerprint{Value: "AA"}, Send: send, Done: done},
		"client, unknown": {Role: Client, Certificate: cert, Remote: Fingerprint{Hash: "sha-3", Value: "AA"}, Send: send, Done: done},
	} {
		if _, err := Start(context.Background(), cfg); err == nil {
			t.Errorf("%s: started", name)
		}
	}
}

func TestCloseBeforeHandshake(t *testing.T) {
	cert := mustCert(t)
	done := make(chan error, 1)
	e, err := Start(t.Context(), Config{Certificate: cert, Remote: cert.Fingerprint(), Send: func([]byte) error { return nil }, Done: func(_ Keys, err error) { done <- err }})
	if err != nil {
		t.Fatal(err)
	}
	e.Handle([]byte{22, 254, 253, 0}) // garbage: ignored
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a handshake nobody ran succeeded")
		}
	default:
		t.Fatal("Close returned before Done was called")
	}
}

func TestFingerprintOf(t *testing.T) {
	// SHA-256 and SHA-1 of "abc" (FIPS 180-2 appendix B).
	for _, tt := range []struct{ hash, want string }{
		{"sha-256", "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"},
		{"SHA-1", "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D"},
	} {
		f, err := FingerprintOf(tt.hash, []byte("abc"))
		if err != nil || f.Value != tt.want {
			t.Errorf("%s: %v %v, want %s", tt.hash, f, err, tt.want)
		}
	}
	if err := verify(Fingerprint{Hash: "sha-256", Value: "ba:78:16:bf:8f:01:cf:ea:41:41:40:de:5d:ae:22:23:b0:03:61:a3:96:17:7a:9c:b4:10:ff:61:f2:00:15:ad"}, [][]byte{[]byte("abc")}); err != nil {
		t.Errorf("lower-case fingerprint: %v", err)
	}
	if err := verify(Fingerprint{Hash: "sha-256", Value: "AA"}, nil); err == nil {
		t.Error("no certificate verified")
	}
}

func TestCertificateAtCoversItsLifetime(t *testing.T) {
	t0 := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	c, err := NewCertificateAt(t0.Add(300*time.Millisecond), 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	x, err := x509.ParseCertificate(c.tls.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !c.Issued().Equal(t0) || !x.NotBefore.Equal(t0.Add(-time.Hour)) || !x.NotAfter.Equal(t0.Add(2*time.Hour)) || !c.NotAfter().Equal(x.NotAfter) {
		t.Fatalf("issued %v, NotBefore %v, NotAfter %v (reported %v)", c.Issued(), x.NotBefore, x.NotAfter, c.NotAfter())
	}
	if k, ok := x.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() || x.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Fatalf("key %T, signature %v: want ECDSA P-256 with SHA-256", x.PublicKey, x.SignatureAlgorithm)
	}
	if fp, _ := FingerprintOf("sha-256", x.Raw); fp != c.Fingerprint() {
		t.Fatalf("fingerprint %v, certificate's %v", c.Fingerprint(), fp)
	}
	if _, err := NewCertificateAt(t0, 0); err == nil {
		t.Fatal("a certificate with no lifetime made")
	}
}

// A certificate read back from its PEM is the same identity: fingerprint,
// validity, and a handshake its peer verifies against the old fingerprint.
func TestCertificatePEMRoundTrip(t *testing.T) {
	c, err := NewCertificateAt(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := c.PEM()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cert), "BEGIN CERTIFICATE") || !strings.Contains(string(key), "BEGIN PRIVATE KEY") {
		t.Fatalf("PEM:\n%s%s", cert, key)
	}
	k, err := ParseCertificatePEM(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if k.Fingerprint() != c.Fingerprint() || !k.NotAfter().Equal(c.NotAfter()) || !k.Issued().Equal(c.Issued()) {
		t.Fatalf("read back %v %v %v, was %v %v %v", k.Fingerprint(), k.Issued(), k.NotAfter(), c.Fingerprint(), c.Issued(), c.NotAfter())
	}
	if _, err := ParseCertificatePEM(cert, []byte("not a key")); err == nil {
		t.Fatal("a certificate without its key read")
	}
	other := mustCert(t)
	s, cl, ready := make(chan outcome, 1), make(chan outcome, 1), make(chan struct{})
	var se, ce *Endpoint
	se, err = Start(t.Context(), Config{Role: Server, Certificate: k, Remote: other.Fingerprint(),
		Send: func(b []byte) error { <-ready; ce.Handle(b); return nil }, Done: func(ks Keys, err error) { s <- outcome{ks, err} }})
	if err != nil {
		t.Fatal(err)
	}
	ce, err = Start(t.Context(), Config{Role: Client, Certificate: other, Remote: c.Fingerprint(),
		Send: func(b []byte) error { <-ready; se.Handle(b); return nil }, Done: func(ks Keys, err error) { cl <- outcome{ks, err} }})
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	t.Cleanup(func() { _ = ce.Close(); _ = se.Close() })
	for _, ch := range []chan outcome{s, cl} {
		select {
		case o := <-ch:
			if o.err != nil {
				t.Fatal(o.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no handshake")
		}
	}
}
