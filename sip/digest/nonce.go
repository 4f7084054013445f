package digest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash"
	"sync"
	"sync/atomic"
	"time"
)

// A nonce is base64url(issued-at ms | sequence | HMAC-SHA256(secret, those 16 bytes | realm)[:16]).
// Any node with the secret verifies it without shared state; the sequence makes
// every nonce unique so nonce-counts can be tracked per nonce.
const (
	nonceRaw  = 8 + 8 + 16
	nonceText = (nonceRaw*8 + 5) / 6 // unpadded base64
	// clockSkew is how far in the future a peer node's clock may put a nonce.
	clockSkew = 5 * time.Second
)

type nonceSource struct {
	secret []byte
	realm  string
	ttl    time.Duration
	seq    atomic.Uint64
	macs   sync.Pool // hash.Hash (HMAC-SHA256), reused to keep challenges allocation-light
}

// nonce is a verified, decoded nonce.
type nonce struct {
	issued time.Time
	key    uint64 // first bytes of the MAC: unique per nonce, used by the replay guard
}

func newNonceSource(secret []byte, realm string, ttl time.Duration) *nonceSource {
	s := &nonceSource{secret: append([]byte(nil), secret...), realm: realm, ttl: ttl}
	var seed [8]byte
	_, _ = rand.Read(seed[:]) // crypto/rand.Read never fails on Linux; a zero seed only loses cross-node uniqueness of the sequence
	s.seq.Store(binary.BigEndian.Uint64(seed[:]))
	s.macs.New = func() any { return hmac.New(sha256.New, s.secret) }
	return s
}

func (s *nonceSource) mac(dst, payload []byte) {
	h := s.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(payload)
	h.Write([]byte(s.realm))
	var sum [sha256.Size]byte
	copy(dst, h.Sum(sum[:0]))
	s.macs.Put(h)
}

func (s *nonceSource) issue(now time.Time) string {
	var raw [nonceRaw]byte
	binary.BigEndian.PutUint64(raw[0:8], uint64(now.UnixMilli()))
	binary.BigEndian.PutUint64(raw[8:16], s.seq.Add(1))
	s.mac(raw[16:], raw[:16])
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// check verifies the MAC; it does not look at the age (see expired).
func (s *nonceSource) check(text string) (nonce, bool) {
	if len(text) != nonceText {
		return nonce{}, false
	}
	var raw [nonceRaw]byte
	// Strict: a nonce has exactly one spelling, so replay tracking cannot be
	// sidestepped by changing unused bits.
	if n, err := base64.RawURLEncoding.Strict().Decode(raw[:], []byte(text)); err != nil || n != nonceRaw {
		return nonce{}, false
	}
	var want [16]byte
	s.mac(want[:], raw[:16])
	if !hmac.Equal(want[:], raw[16:]) {
		return nonce{}, false
	}
	return nonce{
		issued: time.UnixMilli(int64(binary.BigEndian.Uint64(raw[0:8]))),
		key:    binary.BigEndian.Uint64(raw[16:24]),
	}, true
}

func (s *nonceSource) expired(n nonce, now time.Time) bool {
	return now.Sub(n.issued) > s.ttl || n.issued.Sub(now) > clockSkew
}
