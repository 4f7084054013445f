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
	"encoding/pem"
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
// fingerprint in the SDP, not through a CA. The anchor shares one among
// its legs (each leg's handshake has fresh keys anyway) and makes a new
// one for new legs as it ages (media/anchor: Config.CertLifetime); a leg
// keeps the one its SDP named until it ends.
type Certificate struct {
	tls         tls.Certificate
	fingerprint Fingerprint
	issued      time.Time
	notAfter    time.Time
}

// DefaultLifetime is how long NewCertificate's certificates are valid:
// 30 days, as rtpengine's (its CERT_EXPIRY_TIME) and a browser's own
// RTCCertificate by default.
const DefaultLifetime = 30 * 24 * time.Hour

// NewCertificate makes an ECDSA P-256 certificate valid from now for
// DefaultLifetime.
func NewCertificate() (*Certificate, error) { return NewCertificateAt(time.Now(), DefaultLifetime) }

// NewCertificateAt makes an ECDSA P-256 certificate issued at now and
// valid until now+lifetime (and from an hour before now, for a peer whose
// clock is behind).
func NewCertificateAt(now time.Time, lifetime time.Duration) (*Certificate, error) {
	if lifetime <= 0 {
		return nil, fmt.Errorf("dtlssrtp: certificate lifetime %s", lifetime)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("dtlssrtp: certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, fmt.Errorf("dtlssrtp: certificate serial: %w", err)
	}
	// X.509 times have whole seconds: NotAfter rounded down must still
	// be at least the lifetime after issued, so issued is rounded down too.
	now = now.Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "sori-anchor"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(lifetime),
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
	return &Certificate{tls: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, fingerprint: fp,
		issued: now, notAfter: tmpl.NotAfter}, nil
}

// Issued is when the certificate was made (its NotBefore is an hour
// earlier).
func (c *Certificate) Issued() time.Time { return c.issued }

// NotAfter is the end of the certificate's validity.
func (c *Certificate) NotAfter() time.Time { return c.notAfter }

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

// PEM is the certificate and its private key PEM-encoded ("CERTIFICATE",
// and "PRIVATE KEY" as PKCS #8), for an anchor that keeps its WebRTC legs
// across a restart (media/anchorstate): the key is the leg's DTLS
// identity, as secret as the SRTP keys it protects.
func (c *Certificate) PEM() (cert, key []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.tls.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("dtlssrtp: certificate key: %w", err)
	}
	cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.tls.Certificate[0]})
	return cert, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertificatePEM reads what PEM wrote: the same certificate, so the
// same fingerprint. Its Issued is an hour after its NotBefore, as
// NewCertificateAt made it.
func ParseCertificatePEM(cert, key []byte) (*Certificate, error) {
	tc, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("dtlssrtp: certificate: %w", err)
	}
	x, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("dtlssrtp: certificate: %w", err)
	}
	fp, err := FingerprintOf("sha-256", tc.Certificate[0])
	if err != nil {
		return nil, err
	}
	return &Certificate{tls: tc, fingerprint: fp, issued: x.NotBefore.Add(time.Hour), notAfter: x.NotAfter}, nil
}
