package transport

import (
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/wire"
)

// ingest is every received message's way in: keepalives are absorbed, the
// Gate screens the source, wire checks the bytes, sipgo parses them once,
// and the handler gets the message. A message from another node's
// address in the clear is screened after it is parsed, with its signature
// checked (sign.go). What cannot be accepted is answered here when it is
// a request that can be answered, and counted.
func (t *Transport) ingest(data []byte, c Conn) {
	if keepalive(data) {
		return
	}
	peer := t.signedPeer(c)
	if !peer && !t.admit(data, c, t.connVouched(c)) {
		return
	}
	// refuse is as for any other source when what a node's address sent
	// cannot be read, so carries no signature: the Gate first.
	refuse := func(info wire.Info, code int, reason string) {
		if !peer || t.admit(data, c, false) {
			t.refuse(data, info, code, reason, c)
		}
	}
	info, fault := wire.Check(data)
	if fault != nil {
		refuse(info, fault.Code, fault.Reason)
		return
	}
	if info.Kind == wire.Garbage {
		refuse(info, 400, "Not A SIP Message")
		return
	}
	msg := data
	if info.Length > 0 && info.Length < len(data) {
		msg = data[:info.Length] // a datagram's bytes after the body are not part of it (RFC 3261 §18.3)
	}
	raw := msg // as read: what a node signed
	if info.Body > 0 && info.Body <= len(msg) {
		msg = withCRLF(msg, info.Body)
	}
	m, err := t.parser.ParseSIP(msg)
	if err != nil {
		refuse(info, 400, reasonPhrase(err.Error()))
		return
	}
	m.SetTransport(c.Transport())
	m.SetSource(c.Remote().String())
	if signed := t.unseal(raw, m, peer); peer && !t.admit(data, c, signed || t.connVouched(c)) {
		return
	}
	switch m := m.(type) {
	case *sip.Request:
		t.opts.Handler.Request(m, c)
	case *sip.Response:
		t.opts.Handler.Response(m, c)
	}
}

// admit asks the Gate about the message data from c (vouched: for as
// another node's); false when it is kept out, answered 503 on Reject.
func (t *Transport) admit(data []byte, c Conn, vouched bool) bool {
	g := t.opts.Gate
	if g == nil {
		return true
	}
	switch g.Admit(c.Remote().Addr(), vouched, time.Now()) {
	case Drop:
		return false // the gate counts what it keeps out
	case Reject:
		if reply := wire.Reply(data, 503, "Service Unavailable", t.opts.Server, "Retry-After: "+strconv.Itoa(t.opts.RetryAfter)); reply != nil {
			_ = c.Write(reply)
		}
		return false
	}
	return true
}

// refuse answers a request that cannot be accepted, when it can be
// answered at all, and counts and logs it.
func (t *Transport) refuse(data []byte, info wire.Info, code int, reason string, c Conn) {
	var reply []byte
	if info.Kind == wire.Request {
		reply = wire.Reply(data, code, reason, t.opts.Server)
	}
	// Counted before the answer leaves: whoever got the answer finds it counted.
	t.bad.refused(c, code, reason, data, reply != nil)
	if reply != nil {
		_ = c.Write(reply)
	}
}

// keepalive reports datagrams that are only line ends (RFC 5626 §3.5.1
// CRLF keepalives on UDP) or a few bytes of padding some phones send.
func keepalive(data []byte) bool {
	if len(data) > 4 {
		return false
	}
	for _, b := range data {
		if b != '\r' && b != '\n' && b != 0 && b != ' ' {
			return false
		}
	}
	return true
}

// reasonPhrase makes a parser error a reason phrase: printable ASCII, one
// line, short.
func reasonPhrase(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= 60 {
			break
		}
		if r >= 0x20 && r < 0x7f {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "Bad Request"
	}
	return b.String()
}
