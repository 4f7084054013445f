// Package alias marks a Contact behind NAT with where its messages really
// came from, as Kamailio's add_contact_alias does, and reads it back.
package alias

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Phones behind NAT put private addresses in Contact. The proxy marks such a
// Contact with the address the message really came from, as Kamailio's
// add_contact_alias does: ";alias=IP~PORT~T" (T: 1 UDP, 2 TCP, 3 TLS, 5 WS, 6 WSS). A request in
// the dialog then carries the alias in its Request-URI; the proxy sends it
// there and strips the alias (handle_ruri_alias), so the phone gets its own
// Contact back. Over TCP the alias is the phone's connection, which the
// transport reuses while it is open.

// Alias is where a Contact is really reached.
type Alias struct {
	Addr      string // ip:port
	Transport string // UDP, TCP or TLS
}

// SealParam carries the proxy's MAC of the alias (sip/proxy): an alias
// is followed only if sori wrote it, for that dialog.
const SealParam = "as"

// Add marks c with src when the Contact is not where the message came
// from. An alias the sender wrote itself is removed first: where sori
// sends is never the sender's to choose.
func Add(c *sip.ContactHeader, src, transport string) {
	if c.Address.Wildcard {
		return
	}
	strip(&c.Address)
	if c.Address.Host == "" {
		// A URI without a host (an opaque one of another scheme) names
		// nowhere sori sends to: an alias on it could never be followed,
		// and sipgo wrote it as a Contact no parser reads back
		// ("aa:;alias=...", FuzzAlias).
		return
	}
	host, port, err := net.SplitHostPort(src)
	if err != nil {
		return
	}
	transport = strings.ToUpper(transport)
	cport := c.Address.Port
	if cport == 0 {
		cport = 5060
	}
	if transport == "UDP" && strings.Trim(c.Address.Host, "[]") == host && strconv.Itoa(cport) == port {
		return // reachable as it says
	}
	t := "1"
	switch transport {
	case "TCP":
		t = "2"
	case "TLS":
		t = "3"
	case "WS":
		t = "5"
	case "WSS":
		t = "6"
	}
	if c.Address.UriParams == nil {
		c.Address.UriParams = sip.NewParams()
	}
	c.Address.UriParams.Add("alias", host+"~"+port+"~"+t)
}

// Has reports whether u carries an alias.
func Has(u sip.Uri) bool { return u.UriParams != nil && u.UriParams.Has("alias") }

// Value is u's alias parameter and its seal, as written.
func Value(u sip.Uri) (alias, seal string, ok bool) {
	if u.UriParams == nil {
		return "", "", false
	}
	alias, ok = u.UriParams.Get("alias")
	seal, _ = u.UriParams.Get(SealParam)
	return alias, seal, ok
}

func strip(u *sip.Uri) {
	if u.UriParams != nil {
		u.UriParams.Remove("alias")
		u.UriParams.Remove(SealParam)
	}
}

// Take removes the alias from u and returns where it points.
func Take(u *sip.Uri) (Alias, bool) {
	v, _, ok := Value(*u)
	if !ok {
		return Alias{}, false
	}
	strip(u)
	parts := strings.Split(v, "~")
	if len(parts) != 3 {
		return Alias{}, false
	}
	ip := net.ParseIP(parts[0])
	port, err := strconv.Atoi(parts[1])
	if ip == nil || err != nil || port <= 0 || port > 65535 {
		return Alias{}, false
	}
	a := Alias{Addr: net.JoinHostPort(ip.String(), parts[1]), Transport: "UDP"}
	switch parts[2] {
	case "2":
		a.Transport = "TCP"
	case "3":
		a.Transport = "TLS"
	case "5":
		a.Transport = "WS"
	case "6":
		a.Transport = "WSS"
	}
	return a, true
}
