// Package nexthop is where a SIP URI says a request goes (RFC 3263 §4
// without DNS: sori resolves no names): the transport from its transport
// parameter, else TLS for sips: and UDP for sip:, and its host and port,
// 5061 for TLS and 5060 otherwise when the URI gives none.
package nexthop

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Transport is the transport u asks for: "UDP", "TCP", "TLS", ...
func Transport(u sip.Uri) string {
	if v, ok := u.UriParams.Get("transport"); ok && v != "" {
		return strings.ToUpper(v)
	}
	if strings.EqualFold(u.Scheme, "sips") {
		return "TLS"
	}
	return "UDP"
}

// Dest is u's host and port as "host:port" for transport (a name is kept
// as it is: the transport refuses it).
func Dest(u sip.Uri, transport string) string {
	host := u.Host
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		host = ip.String()
	}
	port := u.Port
	if port == 0 {
		port = DefaultPort(transport)
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// DefaultPort is 5061 for TLS, 5060 for the rest (RFC 3261 §19.1.2).
func DefaultPort(transport string) int {
	if strings.EqualFold(transport, "TLS") {
		return 5061
	}
	return 5060
}
