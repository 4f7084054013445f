package anchorstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cert is the anchor's DTLS certificate for new WebRTC legs as kept
// (PREFIX anchor:ID:cert), so that a restarted anchor offers new calls the
// fingerprint its restored legs were set up with until the certificate is
// due for renewal, as a process that never stopped would. It expires with
// the certificate (NotAfter). Key is secret, as a leg's is (WebRTC).
type Cert struct {
	Cert     string    `json:"cert"` // PEM
	Key      string    `json:"key"`  // PEM (PKCS #8): secret
	NotAfter time.Time `json:"not_after"`
}

// CertKey is the key of the anchor's certificate for new legs.
func (s *Store) CertKey() string { return s.prefix + "cert" }

// SaveCert keeps c as the anchor's certificate for new legs, until its
// NotAfter; a certificate past it is not written.
func (s *Store) SaveCert(ctx context.Context, c Cert) error {
	if c.Cert == "" || c.Key == "" {
		return errors.New("anchorstate: certificate without its PEM")
	}
	if !time.Now().Before(c.NotAfter) {
		return fmt.Errorf("anchorstate: certificate expired at %s", c.NotAfter)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("anchorstate: encode certificate: %w", err)
	}
	if err := s.rdb.SetArgs(ctx, s.CertKey(), b, redis.SetArgs{ExpireAt: c.NotAfter}).Err(); err != nil {
		return fmt.Errorf("anchorstate: write certificate: %w", err)
	}
	return nil
}

// LoadCert is the certificate SaveCert kept; ok false: none (never
// written, or expired).
func (s *Store) LoadCert(ctx context.Context) (c Cert, ok bool, err error) {
	b, err := s.rdb.Get(ctx, s.CertKey()).Bytes()
	if errors.Is(err, redis.Nil) {
		return Cert{}, false, nil
	}
	if err != nil {
		return Cert{}, false, fmt.Errorf("anchorstate: read certificate: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return Cert{}, false, fmt.Errorf("anchorstate: decode certificate: %w", err)
	}
	if c.Cert == "" || c.Key == "" {
		return Cert{}, false, errors.New("anchorstate: decode certificate: no PEM")
	}
	return c, true, nil
}
