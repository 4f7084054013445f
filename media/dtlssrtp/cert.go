package dtlssrtp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 8122 names sha-1; a peer may still send it
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"strings"
	"time"
)

// Fingerprint is an SDP a=fingerprint (RFC 8122 §5): a hash function's
// name and the certificate's digest as colon-separated hex bytes.
type Fingerprint struct {
	Hash  string // sha-256, sha-1, sha-384, sha-512
	Value string // "AB:CD:..."
}

func (f Fingerprint) String() string { return f.Hash + " " + f.Value }

// Certificate is the anchor's DTLS identity: self-signed, as WebRTC
// endpoints' are (RFC 8827 §6.5); the peer trusts it through the
// fingerprint in the SDP, not through a CA. One per process is enough:
// each leg's handshake has fresh keys anyway.
type Certificate struct {
	tls         tls.Certificate
	fingerprint Fingerprint
}

// NewCertificate makes an ECDSA P-256 certificate valid for 30 days
// (browsers do the same), so a process running longer needs a new one.
func NewCertificate() (*Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("dtlssrtp: certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, fmt.Errorf("dtlssrtp: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "sori-anchor"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("dtlssrtp: certificate: %w", err)
	}
	fp, err := FingerprintOf("sha-256", der)
	if err != nil {
		return nil, err
	}
	return &Certificate{tls: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, fingerprint: fp}, nil
}

// Fingerprint is the certificate's SHA-256 fingerprint, for a=fingerprint.
func (c *Certificate) Fingerprint() Fingerprint { return c.fingerprint }

// FingerprintOf hashes a DER certificate with the function RFC 8122 names.
func FingerprintOf(hashName string, der []byte) (Fingerprint, error) {
	h, err := newHash(hashName)
	if err != nil {
		return Fingerprint{}, err
	}
	h.Write(der)
	sum := strings.ToUpper(hex.EncodeToString(h.Sum(nil)))
	var b strings.Builder
	for i := 0; i < len(sum); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(sum[i : i+2])
	}
	return Fingerprint{Hash: strings.ToLower(hashName), Value: b.String()}, nil
}

func newHash(name string) (hash.Hash, error) {
	switch strings.ToLower(name) {
	case "sha-1":
		return sha1.New(), nil //nolint:gosec
	case "sha-224":
		return sha256.New224(), nil
	case "sha-256":
		return crypto.SHA256.New(), nil
	case "sha-384":
		return sha512.New384(), nil
	case "sha-512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("dtlssrtp: unsupported fingerprint hash %q", name)
}

var errFingerprint = errors.New("dtlssrtp: the peer's certificate does not match its SDP fingerprint")

// verify checks the peer's leaf certificate against want.
func verify(want Fingerprint, rawCerts [][]byte) error {
	if len(rawCerts) == 0 {
		return errors.New("dtlssrtp: the peer sent no certificate")
	}
	got, err := FingerprintOf(want.Hash, rawCerts[0])
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(got.Value), []byte(strings.ToUpper(want.Value))) != 1 {
		return fmt.Errorf("%w: %s, SDP has %s", errFingerprint, got, want)
	}
	return nil
}
