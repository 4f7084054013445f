package nodes

import (
	"crypto/hmac"
	"crypto/sha256"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// When the nodes talk in the clear (UDP or TCP, not sip.node_transport
// tls), a source address proves nothing: a datagram's is spoofed at will,
// and any other process on a node's host sends from its IP. So every
// message a node sends to another node is signed: the transport adds a
// Header, an HMAC keyed from sip.auth_secret (which every node shares and
// no phone knows) over the message's identifying fields and the time it
// was sent, and the node receiving it checks it. Only a message from a
// node's address whose signature holds is another node's; without one it
// is a phone's like any other (rate limits, bans, authentication).
//
// A valid signature is taken for 30 s (Skew): a replay within that time
// is a retransmission of the same transaction (the same Via branch,
// Call-ID and CSeq), which the transaction layer absorbs.

// Header carries a node's signature: "t=UNIX;mac=BASE32".
const Header = "X-Sori-Node"

// Skew is how far a signature's time may be from this node's clock.
const Skew = 30 * time.Second

// Signer signs the messages this node sends to the other nodes and checks
// those it gets from them.
type Signer struct {
	key   []byte
	peers map[netip.Addr]bool // the other nodes' IP addresses
	now   func() time.Time
}

// NewSigner returns the Signer of the node at self among peers (sip.nodes),
// keyed from secret (sip.auth_secret, the same on every node).
func NewSigner(secret []byte, self Address, peers []Address) *Signer {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("sori node message"))
	s := &Signer{key: m.Sum(nil), peers: map[netip.Addr]bool{}, now: time.Now}
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

// Sign is the value of Header for m sent now.
func (s *Signer) Sign(m sip.Message) string {
	t := strconv.FormatInt(s.now().Unix(), 10)
	return "t=" + t + ";mac=" + strings.ToLower(b32.EncodeToString(s.mac(m, t)))
}

// Verify reports whether m carries exactly one Header, whose signature is
// this service's for m and was made within Skew of now.
func (s *Signer) Verify(m sip.Message) bool {
	hs := m.GetHeaders(Header)
	if len(hs) != 1 {
		return false
	}
	var t, mac string
	for _, p := range strings.Split(hs[0].Value(), ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch k {
		case "t":
			t = v
		case "mac":
			mac = v
		}
	}
	sec, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return false
	}
	if d := s.now().Sub(time.Unix(sec, 0)); d > Skew || d < -Skew {
		return false
	}
	got, err := b32.DecodeString(strings.ToUpper(mac))
	return err == nil && hmac.Equal(got, s.mac(m, t))
}

// mac is the HMAC over what identifies m, its transaction and its dialog:
// the method or status, Call-ID, CSeq, the top Via's branch and sent-by,
// the From and To tags, a digest of the body, and the time t.
func (s *Signer) mac(m sip.Message, t string) []byte {
	h := hmac.New(sha256.New, s.key)
	field := func(v string) {
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	switch m := m.(type) {
	case *sip.Request:
		field("request " + string(m.Method))
	case *sip.Response:
		field("response " + strconv.Itoa(m.StatusCode))
	}
	field(t)
	if c := m.CallID(); c != nil {
		field(c.Value())
	} else {
		field("")
	}
	if c := m.CSeq(); c != nil {
		field(strconv.FormatUint(uint64(c.SeqNo), 10) + " " + string(c.MethodName))
	} else {
		field("")
	}
	if v := m.Via(); v != nil {
		field(v.Params.GetOr("branch", ""))
		field(v.Host + ":" + strconv.Itoa(v.Port))
	} else {
		field("")
		field("")
	}
	if f := m.From(); f != nil {
		field(f.Params.GetOr("tag", ""))
	} else {
		field("")
	}
	if to := m.To(); to != nil {
		field(to.Params.GetOr("tag", ""))
	} else {
		field("")
	}
	body := sha256.Sum256(m.Body())
	h.Write(body[:])
	return h.Sum(nil)[:16]
}
