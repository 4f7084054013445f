package nodes

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"strings"
)

// A flow token names one flow on the node that holds it (RFC 5626 §5.2):
// the transport and the phone's address as that node's socket sees it. It
// is opaque to everyone else and integrity-protected by an HMAC over the
// holding node's id and the flow, keyed from sip.auth_secret (which every
// node shares): nobody can forge one, point one at another address, or
// move one to another node. It travels as the user part of a Route URI
// naming the holding node, as RFC 5626's edge proxies put it.

// Flow is one flow a node holds: a phone's connection, or for UDP the
// address its NAT maps it to, which only that node's socket may use.
type Flow struct {
	Transport string // UDP, TCP, TLS, WS or WSS
	Addr      string // the phone's ip:port, as the node sees it
}

// Tokens mints and opens flow tokens.
type Tokens struct{ key []byte }

// tokenPrefix tells a flow token from any other user part in a Route.
const tokenPrefix = "f1"

// macLen: 96 bits of HMAC-SHA256, as RFC 5626's example token.
const macLen = 12

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewTokens returns Tokens keyed from secret; every node needs the same.
func NewTokens(secret []byte) Tokens {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("sori flow token"))
	return Tokens{key: m.Sum(nil)}
}

// Mint is the token of flow f held by node.
func (t Tokens) Mint(node string, f Flow) string {
	payload := []byte(strings.ToUpper(f.Transport) + " " + f.Addr)
	raw := append(t.mac(node, payload), payload...)
	// Lower case: the token survives a peer that folds a URI's case.
	return tokenPrefix + strings.ToLower(b32.EncodeToString(raw))
}

// Open returns the flow a token minted for node names; false when token is
// not one, or not node's, or was altered.
func (t Tokens) Open(node, token string) (Flow, bool) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return Flow{}, false
	}
	raw, err := b32.DecodeString(strings.ToUpper(rest))
	if err != nil || len(raw) <= macLen {
		return Flow{}, false
	}
	mac, payload := raw[:macLen], raw[macLen:]
	if !hmac.Equal(mac, t.mac(node, payload)) {
		return Flow{}, false
	}
	tr, addr, ok := strings.Cut(string(payload), " ")
	if !ok || !servedTransport(tr) {
		return Flow{}, false
	}
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return Flow{}, false
	}
	return Flow{Transport: tr, Addr: addr}, true
}

func (t Tokens) mac(node string, payload []byte) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(node))
	m.Write([]byte{0})
	m.Write(payload)
	return m.Sum(nil)[:macLen]
}

func servedTransport(tr string) bool {
	switch tr {
	case "UDP", "TCP", "TLS", "WS", "WSS":
		return true
	}
	return false
}
