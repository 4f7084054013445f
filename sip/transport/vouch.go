package transport

import (
	"crypto/tls"
	"net/netip"
	"strings"
)

// A TLS connection's peer certificate can vouch for who is at the far end
// (sori uses it for the other nodes: sip.node_ca, the node's IP). The
// transport asks Options.Vouch once per connection, when its handshake is
// done, and remembers the answer; Vouched reports it for the address a
// message came from.
//
// More than one open connection may have the same far end (a peer using
// one source port towards two of sori's addresses), and a message carries
// only that address: Vouched is true only while every open TLS connection
// from there was vouched for, so a second connection without the
// certificate never borrows the first one's.

// vouchCount is how many open TLS connections have one far end, and how
// many of them were vouched for.
type vouchCount struct{ open, vouched int }

// vouchOpened counts a new TLS connection (addStream, under t.mu).
func (t *Transport) vouchOpened(s *stream) {
	if s.transport != "TLS" {
		return
	}
	c := t.vouches[s.key()]
	c.open++
	t.vouches[s.key()] = c
}

// vouchHandshake asks Options.Vouch about s, whose handshake is done.
func (t *Transport) vouchHandshake(s *stream, cs tls.ConnectionState) {
	if t.opts.Vouch == nil || !t.opts.Vouch(cs, s.remote) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.gone {
		return
	}
	s.vouched.Store(true)
	c := t.vouches[s.key()]
	c.vouched++
	t.vouches[s.key()] = c
}

// vouchClosed forgets a closed TLS connection (under t.mu).
func (t *Transport) vouchClosed(s *stream) {
	if s.transport != "TLS" || s.gone {
		return
	}
	s.gone = true
	c := t.vouches[s.key()]
	c.open--
	if s.vouched.Load() {
		c.vouched--
	}
	if c.open <= 0 {
		delete(t.vouches, s.key())
		return
	}
	t.vouches[s.key()] = c
}

// Vouched reports whether the peer certificate of the TLS connection
// from remote ("ip:port") was vouched for by Options.Vouch, and that of
// every other open TLS connection from there. False for every other
// transport, for a closed connection, and without Options.Vouch.
func (t *Transport) Vouched(transport, remote string) bool {
	if !strings.EqualFold(transport, "TLS") || t.opts.Vouch == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.vouches[streamKey{"TLS", unmap(ap)}]
	return c.open > 0 && c.vouched == c.open
}
