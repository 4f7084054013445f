package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/alias"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/nexthop"
)

// Where a request inside a dialog goes is written by its sender: the
// Request-URI is the other side's Contact as the sender learned it, and
// the Route set the Record-Routes. Followed blindly, a party to a call
// could make sori send anywhere (a BYE to an internal address). So:
//
//   - the NAT alias sori puts in a Contact is sealed with a MAC over the
//     dialog's Call-ID (alias.SealParam); an alias without a valid seal
//     is refused (403), with or without call state, on any node;
//   - when sori holds the call (sip/call), the Request-URI must be the
//     other side's Contact as sori last saw it (target refreshes
//     included), and a Route the first hop sori recorded for that side.

// markContact aliases a dialog's Contact with where its message m came
// from and seals the alias for the dialog callID.
func (p *Proxy) markContact(c *sip.ContactHeader, m sip.Message, callID string) {
	if p.fromNode(m) {
		return // the node it came through marked it, for the flow it holds
	}
	alias.Add(c, m.Source(), m.Transport())
	if v, _, ok := alias.Value(c.Address); ok {
		c.Address.UriParams.Add(alias.SealParam, p.aliasSeal(callID, v))
	}
}

func (p *Proxy) aliasSeal(callID, value string) string {
	m := hmac.New(sha256.New, p.secret)
	m.Write([]byte("alias\x00"))
	m.Write([]byte(callID))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return strings.ToLower(b32.EncodeToString(m.Sum(nil)[:10]))
}

// aliasSealed reports whether u's alias, if it has one, is one sori
// wrote for the dialog callID.
func (p *Proxy) aliasSealed(u sip.Uri, callID string) bool {
	v, seal, ok := alias.Value(u)
	if !ok {
		return true
	}
	return seal != "" && hmac.Equal([]byte(seal), []byte(p.aliasSeal(callID, v)))
}

// dialogTarget checks an in-dialog request from the side with fromTag
// against the call sori holds: its Request-URI must be the other side's
// Contact, and its next Route, if it has one, that side's first recorded
// hop (without one it goes to the Contact itself). ok is true
// when there is nothing to check against (no call, or not yet answered).
func dialogTarget(c *call.Call, fromTag string, req *sip.Request) bool {
	if c == nil {
		return true
	}
	peer, ok := c.Peer(fromTag)
	if !ok {
		return true
	}
	if !sameTarget(req.Recipient, peer.Target) {
		return false
	}
	if r := req.Route(); r != nil {
		return len(peer.Route) > 0 && sameTarget(r.Address, strings.Trim(peer.Route[0], "<>"))
	}
	return true
}

// sameTarget reports whether u names the same place as the URI target:
// scheme, user, host, port and transport, sori's alias and other
// parameters aside.
func sameTarget(u sip.Uri, target string) bool {
	var t sip.Uri
	if err := sip.ParseUri(target, &t); err != nil {
		return false
	}
	tr := nexthop.Transport(u)
	return strings.EqualFold(u.Scheme, t.Scheme) && u.User == t.User && strings.EqualFold(u.Host, t.Host) &&
		portOr(u, tr) == portOr(t, nexthop.Transport(t)) && tr == nexthop.Transport(t)
}

func portOr(u sip.Uri, transport string) int {
	if u.Port != 0 {
		return u.Port
	}
	return nexthop.DefaultPort(transport)
}
