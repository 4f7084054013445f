package transport

import (
	"bytes"
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// When the nodes talk in the clear (UDP or TCP), their messages are
// vouched for by a signature in a header (Options.Signer, sip/nodes): the
// transport signs every message it writes to another node's address, and
// checks every message it reads from one. The check needs the parsed
// message, so a message from a node's address is parsed before the Gate
// is asked about it (Admit's vouched); every other source is screened
// first, as before.
//
// The header never leaves for anyone but a node, and never arrives from
// anyone but one: a message from elsewhere, or with a signature that does
// not hold, loses it when it is read, and a message written to a phone
// loses the one it came in with. So a message still carrying it after
// ingest was signed by a node, which the upper layers check again
// (nodes.Set.Trusted).

// Signer signs and checks the nodes' messages (sip/nodes' Signer).
type Signer interface {
	// Header is the header the signature travels in.
	Header() string
	// Peer reports whether ip is another node's address.
	Peer(ip netip.Addr) bool
	// Sign is the value of Header for a message about to be written as
	// head (the start line and the other header lines), the signature's
	// line, then rest (the CRLF ending the header section, and the body).
	Sign(head, rest []byte) string
	// Verify reports whether msg, a message as read (its bytes before they
	// were parsed), carries a valid signature not seen before; the
	// signature is then taken, so the same bytes again are a replay.
	Verify(msg []byte) bool
}

// signedPeer reports whether messages from c come from another node's
// address in the clear: they are read before they are screened.
func (t *Transport) signedPeer(c Conn) bool {
	return t.opts.Signer != nil && t.opts.Signer.Peer(c.Remote().Addr().Unmap())
}

// unseal checks the signature of m, parsed from raw as read from c (a
// signed peer's when peer): true when it holds, over raw, and was not seen
// before; otherwise the header is removed, so nothing after this mistakes
// m for a node's (a replay included).
func (t *Transport) unseal(raw []byte, m sip.Message, peer bool) bool {
	sg := t.opts.Signer
	if sg == nil {
		return false
	}
	hs := m.GetHeaders(sg.Header())
	if len(hs) == 0 {
		return false
	}
	if peer && len(hs) == 1 && sg.Verify(raw) {
		return true
	}
	r, ok := m.(interface{ RemoveHeader(string) bool })
	if !ok {
		return false
	}
	for _, h := range hs {
		r.RemoveHeader(h.Name())
	}
	return false
}

// seal makes buf, m as written for dest, carry this node's signature when
// dest is another node's, and no other signature (one m came in with).
// It is called on every write, retransmissions too: each gets its own
// signature (a fresh nonce), so the receiving node takes each as the
// node's, and a copy of any of them as a replay.
func (t *Transport) seal(buf *bytes.Buffer, m sip.Message, dest netip.AddrPort) {
	sg := t.opts.Signer
	if sg == nil {
		return
	}
	peer := sg.Peer(dest.Addr().Unmap())
	old := len(m.GetHeaders(sg.Header())) > 0
	if !peer && !old {
		return
	}
	b := buf.Bytes()
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return
	}
	out := make([]byte, 0, len(b)+96)
	head, rest := b[:end+2], b[end+2:] // head: through the last header's CRLF
	for len(head) > 0 {
		line := head
		if i := bytes.Index(head, []byte("\r\n")); i >= 0 {
			line = head[:i+2]
		}
		head = head[len(line):]
		if old {
			if name, _, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(strings.TrimSpace(string(name)), sg.Header()) {
				continue
			}
		}
		out = append(out, line...)
	}
	if peer {
		// Last, over every other byte as written (nodes.Signer).
		out = append(out, sg.Header()+": "+sg.Sign(out, rest)+"\r\n"...)
	}
	out = append(out, rest...)
	buf.Reset()
	buf.Write(out)
}

// connVouched reports whether c is a TLS connection whose peer
// certificate Options.Vouch vouched for.
func (t *Transport) connVouched(c Conn) bool {
	s, ok := c.(*stream)
	return ok && t.opts.Vouch != nil && s.vouched.Load()
}
