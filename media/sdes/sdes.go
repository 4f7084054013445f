// Package sdes is SDP Security Descriptions for SRTP (RFC 4568): the
// a=crypto attribute (parse and format), the crypto suites the anchor
// speaks, fresh master keys, and rtpengine's ng SDES flags (which suites
// an offer carries, which session parameters, padding). It has no
// sockets: media/anchor turns its Crypto values into the SRTP keys of
// media/relay's streams.
package sdes

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/srtp/v3"
)

// Suite is an SRTP crypto suite (RFC 4568 §6.2, RFC 6188, RFC 7714).
type Suite struct {
	Name    string
	Profile srtp.ProtectionProfile
	KeyLen  int // master key, bytes
	SaltLen int // master salt, bytes
}

// Suites are the suites pion/srtp implements, in the order the anchor
// offers them (rtpengine's: strongest first). The NULL suites (no
// encryption) are accepted from a phone but offered only when an
// SDES-only- flag names them.
var Suites = []Suite{
	{"AEAD_AES_256_GCM", srtp.ProtectionProfileAeadAes256Gcm, 32, 12},
	{"AEAD_AES_128_GCM", srtp.ProtectionProfileAeadAes128Gcm, 16, 12},
	{"AES_256_CM_HMAC_SHA1_80", srtp.ProtectionProfileAes256CmHmacSha1_80, 32, 14},
	{"AES_256_CM_HMAC_SHA1_32", srtp.ProtectionProfileAes256CmHmacSha1_32, 32, 14},
	{"AES_CM_128_HMAC_SHA1_80", srtp.ProtectionProfileAes128CmHmacSha1_80, 16, 14},
	{"AES_CM_128_HMAC_SHA1_32", srtp.ProtectionProfileAes128CmHmacSha1_32, 16, 14},
	{"NULL_HMAC_SHA1_80", srtp.ProtectionProfileNullHmacSha1_80, 16, 14},
	{"NULL_HMAC_SHA1_32", srtp.ProtectionProfileNullHmacSha1_32, 16, 14},
}

// SuiteByName finds a suite (names are case-insensitive).
func SuiteByName(name string) (Suite, bool) {
	for _, s := range Suites {
		if strings.EqualFold(s.Name, name) {
			return s, true
		}
	}
	return Suite{}, false
}

func (s Suite) null() bool { return strings.HasPrefix(s.Name, "NULL_") }

// Params are the session parameters the anchor acts on (RFC 4568 §6.3).
type Params struct {
	UnencryptedSRTP     bool
	UnencryptedSRTCP    bool
	UnauthenticatedSRTP bool
}

// Crypto is one a=crypto attribute.
type Crypto struct {
	Tag       int
	Suite     Suite
	Key, Salt []byte
	Lifetime  string // as written ("2^31"), "" when absent
	MKI       []byte // the master key identifier as sent in packets; nil: none
	Params
	Other []string // session parameters kept as written (KDR, FEC_ORDER, ...)
}

// ErrUnknownSuite: the attribute names a suite the anchor cannot do
// (F8, AES_192, ...); such a line is skipped, not fatal.
var ErrUnknownSuite = errors.New("sdes: unsupported crypto suite")

// Parse reads an attribute's value: what follows "a=crypto:".
func Parse(value string) (Crypto, error) {
	f := strings.Fields(value)
	if len(f) < 3 {
		return Crypto{}, fmt.Errorf("sdes: %q: want TAG SUITE inline:KEY", value)
	}
	tag, err := strconv.Atoi(f[0])
	if err != nil || tag < 0 || tag > 999999999 {
		return Crypto{}, fmt.Errorf("sdes: %q: bad tag", value)
	}
	suite, ok := SuiteByName(f[1])
	if !ok {
		return Crypto{}, fmt.Errorf("%w: %s", ErrUnknownSuite, f[1])
	}
	c := Crypto{Tag: tag, Suite: suite}
	// key-params: inline:KEY[|LIFETIME][|MKI:LEN], several joined by ';'
	// (only one key per line is supported: the first).
	kp, _, _ := strings.Cut(f[2], ";")
	if len(kp) < 7 || !strings.EqualFold(kp[:7], "inline:") {
		return Crypto{}, fmt.Errorf("sdes: %q: key method is not inline", value)
	}
	parts := strings.Split(kp[7:], "|")
	raw, err := decodeKey(parts[0])
	if err != nil || len(raw) != suite.KeyLen+suite.SaltLen {
		return Crypto{}, fmt.Errorf("sdes: %q: key is not %d bytes of base64", value, suite.KeyLen+suite.SaltLen)
	}
	c.Key, c.Salt = raw[:suite.KeyLen], raw[suite.KeyLen:]
	for _, p := range parts[1:] {
		if v, n, ok := strings.Cut(p, ":"); ok {
			mki, err1 := strconv.ParseUint(v, 10, 64)
			size, err2 := strconv.Atoi(n)
			if err1 != nil || err2 != nil || size < 1 || size > 128 || (size < 8 && mki>>(8*size) != 0) {
				return Crypto{}, fmt.Errorf("sdes: %q: bad MKI %q", value, p)
			}
			c.MKI = make([]byte, size)
			for i := size - 1; i >= 0 && mki > 0; i-- {
				c.MKI[i] = byte(mki)
				mki >>= 8
			}
			continue
		}
		c.Lifetime = p
	}
	for _, p := range f[3:] {
		switch strings.ToUpper(p) {
		case "UNENCRYPTED_SRTP":
			c.UnencryptedSRTP = true
		case "UNENCRYPTED_SRTCP":
			c.UnencryptedSRTCP = true
		case "UNAUTHENTICATED_SRTP":
			c.UnauthenticatedSRTP = true
		default:
			c.Other = append(c.Other, p)
		}
	}
	return c, nil
}

// decodeKey takes base64 with or without its trailing '=' (RFC 4568 is
// ambiguous; rtpengine's SDES-pad).
func decodeKey(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// String formats the attribute's value (without "a=crypto:"); pad keeps
// the base64 padding.
func (c Crypto) String(pad bool) string {
	enc := base64.RawStdEncoding
	if pad {
		enc = base64.StdEncoding
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s inline:%s", c.Tag, c.Suite.Name, enc.EncodeToString(append(append([]byte{}, c.Key...), c.Salt...)))
	if c.Lifetime != "" {
		b.WriteString("|" + c.Lifetime)
	}
	if len(c.MKI) > 0 {
		// An MKI may be up to 128 bytes long (RFC 4568 §9.2), yet Parse
		// reads its value as 64 bits: the bytes before the last 8 are
		// zero. It is written with its full length, else a phone's long
		// MKI was lost wherever its crypto is written back (the state an
		// anchor restart restores, keep.go), and its SRTP no longer
		// decrypted after the restart.
		var v uint64
		for _, x := range c.MKI[max(0, len(c.MKI)-8):] {
			v = v<<8 | uint64(x)
		}
		fmt.Fprintf(&b, "|%d:%d", v, len(c.MKI))
	}
	for _, p := range []struct {
		on   bool
		name string
	}{{c.UnencryptedSRTP, "UNENCRYPTED_SRTP"}, {c.UnencryptedSRTCP, "UNENCRYPTED_SRTCP"}, {c.UnauthenticatedSRTP, "UNAUTHENTICATED_SRTP"}} {
		if p.on {
			b.WriteString(" " + p.name)
		}
	}
	for _, p := range c.Other {
		b.WriteString(" " + p)
	}
	return b.String()
}

// Generate makes a crypto with a fresh random master key and salt.
func Generate(tag int, s Suite, p Params) (Crypto, error) {
	raw := make([]byte, s.KeyLen+s.SaltLen)
	if _, err := rand.Read(raw); err != nil {
		return Crypto{}, fmt.Errorf("sdes: key: %w", err)
	}
	return Crypto{Tag: tag, Suite: s, Key: raw[:s.KeyLen], Salt: raw[s.KeyLen:], Params: p}, nil
}

// Options are the pion/srtp context options for the crypto's session
// parameters and MKI.
func (c Crypto) Options() []srtp.ContextOption {
	var o []srtp.ContextOption
	if c.UnencryptedSRTP {
		o = append(o, srtp.SRTPNoEncryption())
	}
	if c.UnencryptedSRTCP {
		o = append(o, srtp.SRTCPNoEncryption())
	}
	if c.UnauthenticatedSRTP {
		o = append(o, srtp.SRTPAuthenticationTagLength(0))
	}
	if len(c.MKI) > 0 {
		o = append(o, srtp.MasterKeyIndicator(c.MKI))
	}
	return o
}

// Context returns a pion/srtp context keyed with the crypto.
func (c Crypto) Context() (*srtp.Context, error) {
	ctx, err := srtp.CreateContext(c.Key, c.Salt, c.Suite.Profile, c.Options()...)
	if err != nil {
		return nil, fmt.Errorf("sdes: %s: %w", c.Suite.Name, err)
	}
	return ctx, nil
}

// ParseAll reads every a=crypto line of one media section (values
// without "a=crypto:"), skipping suites the anchor does not support; an
// error when a supported line is malformed.
func ParseAll(values []string) ([]Crypto, error) {
	var out []Crypto
	for _, v := range values {
		c, err := Parse(v)
		if errors.Is(err, ErrUnknownSuite) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
