package nodes

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"hash"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// When the nodes talk in the clear (UDP or TCP, not sip.node_transport
// tls), a source address proves nothing: a datagram's is spoofed at will,
// and any other process on a node's host sends from its IP. So every
// message a node sends to another node is signed: the transport adds a
// Header as the last line of the header section, an HMAC keyed from
// sip.auth_secret (which every node shares and no phone knows), and the
// node receiving it checks it. Only a message from a node's address whose
// signature holds is another node's; without one it is a phone's like any
// other (rate limits, bans, authentication).
//
// What is signed is the message exactly as the transport writes it, every
// byte but the signature's own line: the start line (the method and
// Request-URI, or the status), every header (Via, Route, Record-Route,
// Path, Contact, From, To, Call-ID, CSeq, Max-Forwards, ...) and the body,
// with the signature's time and nonce. Nothing stands between two nodes
// (sip.nodes are their own addresses), so the node receiving it checks the
// bytes it read, before anything parsed them: no header is made canonical
// on either side, and none can be changed (a Request-URI or a Route that
// redirects a request, a Contact whose NAT alias a node keeps for a node's)
// without the signature failing. The line must be the header section's
// last and have exactly the form the transport writes, so it cannot be
// moved to change how the lines around it are read.
//
// A signature is taken within 30 s (Skew) of its time, and once: each
// carries a random nonce, and a nonce seen before within Skew is a replay
// (the message, captured, sent again: after its transaction ended, or on
// another transport), no longer the node's. The transport signs every
// message each time it writes it, retransmissions too (sipgo's
// transactions write each one again), so a node's retransmission carries
// a fresh nonce and is the node's like the first; a repeated nonce is
// always a copy (a replay, or a datagram the network duplicated, which
// the transaction layer absorbs as a phone's retransmission).

// Header carries a node's signature: "t=UNIX;n=NONCE;mac=MAC".
const Header = "X-Sori-Node"

// Skew is how far a signature's time may be from this node's clock.
const Skew = 30 * time.Second

// MaxNonces bounds the replay cache: at most this many signatures made in
// the same second are taken (perSlot in each of nonceShards, which the
// nonces spread over evenly); past it, more are not vouched for (no node
// sends the others this many messages a second).
const MaxNonces = nonceShards * perSlot

const (
	nonceLen = 12 // bytes of randomness in a nonce: 96 bits
	sigLen   = 16 // bytes of HMAC-SHA256 kept
	// The encoded lengths, lower-case base32 without padding.
	nonceChars = (nonceLen*8 + 4) / 5
	sigChars   = (sigLen*8 + 4) / 5
)

// lb32 is the signature's alphabet: lower-case base32, no padding.
var lb32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Signer signs the messages this node sends to the other nodes and checks
// those it gets from them. One Signer must do both for a node: the
// transport's (Verify) and nodes.Set's (Vouched) share its replay cache.
type Signer struct {
	key   []byte
	peers map[netip.Addr]bool // the other nodes' IP addresses
	now   func() time.Time
	macs  sync.Pool // of *hmacState: HMAC-SHA256 keyed with key
	seen  nonces
}

// NewSigner returns the Signer of the node at self among peers (sip.nodes),
// keyed from secret (sip.auth_secret, the same on every node).
func NewSigner(secret []byte, self Address, peers []Address) *Signer {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("sori node message"))
	s := &Signer{key: m.Sum(nil), peers: map[netip.Addr]bool{}, now: time.Now}
	s.macs.New = func() any { return &hmacState{h: hmac.New(sha256.New, s.key)} }
	for _, p := range peers {
		if p.Addr != self.Addr {
			s.peers[p.Addr.Addr().Unmap()] = true
		}
	}
	return s
}

// Header is the header a signature travels in (sip/transport's Signer).
func (s *Signer) Header() string { return Header }

// Peer reports whether ip is another node's address: messages to it are
// signed, and messages from it checked.
func (s *Signer) Peer(ip netip.Addr) bool { return s.peers[ip.Unmap()] }

// Sign is the value of Header for the message about to be written as
// head, the signature's line, then rest: head is the start line and every
// other header line, each with its CRLF; rest is the CRLF ending the
// header section and the body.
func (s *Signer) Sign(head, rest []byte) string {
	var n [nonceLen]byte
	_, _ = rand.Read(n[:]) // never fails (crypto/rand)
	b := make([]byte, 0, 2+20+3+nonceChars+5+sigChars)
	b = append(b, "t="...)
	b = strconv.AppendInt(b, s.now().Unix(), 10)
	t := b[2:]
	b = append(b, ";n="...)
	b = lb32.AppendEncode(b, n[:])
	nonce := b[len(b)-nonceChars:]
	sum := s.mac(t, nonce, head, rest)
	b = append(b, ";mac="...)
	b = lb32.AppendEncode(b, sum[:])
	return string(b)
}

// Verify reports whether msg, a message as read, before it is parsed,
// ends its header section with this service's signature for it, made
// within Skew of now, whose nonce this Signer has not taken before; the
// nonce is then taken (a second Verify of the same bytes is false: a
// replay). Only what another node's address sent is checked (Peer), and
// the message must carry exactly one Header once parsed (the caller's
// part: sip/transport).
func (s *Signer) Verify(msg []byte) bool {
	end := bytes.Index(msg, crlf2)
	if end < 0 {
		return false
	}
	head, rest := msg[:end+2], msg[end+2:]
	i := bytes.LastIndex(head[:end], crlf)
	if i < 0 {
		return false // no header after the start line
	}
	head, line := head[:i+2], head[i+2:end]
	value, ok := bytes.CutPrefix(line, linePrefix)
	if !ok {
		return false
	}
	sig, ok := parseSig(value)
	if !ok || !s.fresh(sig.sec) {
		return false
	}
	var got [sigLen]byte
	if n, err := lb32.Decode(got[:], sig.mac); err != nil || n != sigLen {
		return false
	}
	if want := s.mac(sig.t, sig.nonce, head, rest); !hmac.Equal(got[:], want[:]) {
		return false
	}
	return s.seen.take(sig.sec, sig.nonce)
}

// Vouched reports whether m, as handed up by the transport, carries
// exactly one Header whose signature Verify took (its time within Skew,
// its nonce taken): the transport removes the header from every message
// whose signature did not hold there, or was a replay, so a message
// carrying one was a node's. nodes.Set.Trusted asks this.
func (s *Signer) Vouched(m sip.Message) bool {
	hs := m.GetHeaders(Header)
	if len(hs) != 1 {
		return false
	}
	sig, ok := parseSig([]byte(hs[0].Value()))
	return ok && s.fresh(sig.sec) && s.seen.has(sig.sec, sig.nonce)
}

// fresh reports whether a signature made at sec is within Skew of now.
func (s *Signer) fresh(sec int64) bool {
	d := s.now().Sub(time.Unix(sec, 0))
	return d <= Skew && d >= -Skew
}

var (
	crlf       = []byte("\r\n")
	crlf2      = []byte("\r\n\r\n")
	linePrefix = []byte(Header + ": ") // the signature's line, as the transport writes it
	zero       = []byte{0}
)

// hmacState is a keyed HMAC and room for its sum, reused (Signer.macs).
type hmacState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// mac is the HMAC over the signature's time t and nonce and the
// message's bytes (head, then rest: all of it but the signature's line).
func (s *Signer) mac(t, nonce, head, rest []byte) [sigLen]byte {
	st := s.macs.Get().(*hmacState)
	st.h.Reset()
	st.h.Write(t)
	st.h.Write(zero)
	st.h.Write(nonce)
	st.h.Write(zero)
	st.h.Write(head)
	st.h.Write(rest)
	var out [sigLen]byte
	copy(out[:], st.h.Sum(st.sum[:0]))
	s.macs.Put(st)
	return out
}

// sig is a signature's line, parsed.
type sig struct {
	sec           int64
	t, nonce, mac []byte
}

// parseSig parses a signature, exactly as Sign writes it: anything else
// (another spacing, case, parameter or character) is no signature.
func parseSig(v []byte) (sig, bool) {
	rest, ok := bytes.CutPrefix(v, []byte("t="))
	if !ok {
		return sig{}, false
	}
	t, rest, ok := bytes.Cut(rest, []byte(";n="))
	if !ok || len(t) == 0 || len(t) > 18 {
		return sig{}, false
	}
	var sec int64
	for _, c := range t {
		if c < '0' || c > '9' {
			return sig{}, false
		}
		sec = sec*10 + int64(c-'0')
	}
	nonce, mac, ok := bytes.Cut(rest, []byte(";mac="))
	if !ok || len(nonce) != nonceChars || len(mac) != sigChars || !alphabet(nonce) || !alphabet(mac) {
		return sig{}, false
	}
	return sig{sec: sec, t: t, nonce: nonce, mac: mac}, true
}

// alphabet reports whether b is all lower-case base32.
func alphabet(b []byte) bool {
	for _, c := range b {
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// The replay cache: the nonces of the signatures taken, by the second
// they were made in. A signature is taken only within Skew of its time,
// so a second's nonces are needed for 2×Skew at most, and its slot in a
// ring of ringSlots seconds is cleared when a second that far later
// comes to use it. Only signatures that hold are recorded (nobody but a
// node can add one), at most perSlot a second in each shard; the shards
// (by the nonce's first byte, random) keep the nodes' readers apart.
const (
	nonceShards = 16
	perSlot     = 1 << 12
	ringSlots   = 64 // a power of two above 2×Skew+1 seconds
)

type nonceKey [nonceChars]byte

type nonces struct {
	shards [nonceShards]nonceShard
}

type nonceShard struct {
	mu    sync.Mutex
	slots [ringSlots]nonceSlot
	_     [64]byte // keep the shards' locks on their own cache lines
}

type nonceSlot struct {
	sec  int64 // the second whose nonces seen holds
	seen map[nonceKey]struct{}
}

func (c *nonces) slot(sec int64, nonce []byte) (*nonceShard, *nonceSlot, nonceKey) {
	var k nonceKey
	copy(k[:], nonce)
	v := k[0] - 'a' // the first character's 5 bits: random, so the shards fill alike
	if k[0] < 'a' {
		v = k[0] - '2' + 26
	}
	sh := &c.shards[v%nonceShards]
	return sh, &sh.slots[uint64(sec)%ringSlots], k
}

// take records nonce, of a signature made at sec: false when it was
// already there (a replay), or the second's slot is full.
func (c *nonces) take(sec int64, nonce []byte) bool {
	sh, sl, k := c.slot(sec, nonce)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	switch {
	case sl.seen == nil:
		sl.seen = make(map[nonceKey]struct{}, 64)
	case sec < sl.sec:
		// The slot holds a later second's (the clock went back): its
		// nonces may be needed again, so this signature is refused.
		return false
	case sec > sl.sec:
		// An earlier second's, ringSlots or more before: beyond Skew now.
		clear(sl.seen)
	}
	sl.sec = sec
	if _, ok := sl.seen[k]; ok || len(sl.seen) >= perSlot {
		return false
	}
	sl.seen[k] = struct{}{}
	return true
}

// has reports whether nonce, of a signature made at sec, was taken.
func (c *nonces) has(sec int64, nonce []byte) bool {
	sh, sl, k := c.slot(sec, nonce)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sl.sec != sec || sl.seen == nil {
		return false
	}
	_, ok := sl.seen[k]
	return ok
}
