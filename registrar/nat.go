package registrar

import (
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// behindNAT tells whether a REGISTER's contact must be reached at the
// address the REGISTER came from rather than at the Contact URI, the test
// Kamailio's nat_uac_test("19") makes before fix_nated_register:
//   - the Contact host is a private, shared (CGN) or link-local address that
//     is not the source (flag 1);
//   - the top Via's sent-by is not the source address or port (flags 2, 16).
//
// A contact registered over a connection (TCP) that does not name the
// connection's far end is reached over that connection, as RFC 5626 §5.3
// asks: a phone rarely listens where its TCP Contact points.
// A third party registering a contact that is not its own (SIPp, a PBX
// registering its extensions) from an unNATed address keeps the Contact.
func behindNAT(req *sip.Request, contact sip.Uri) bool {
	src, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return false
	}
	srcIP := src.Addr().Unmap()
	if via := req.Via(); via != nil {
		ip, err := netip.ParseAddr(strings.Trim(via.Host, "[]"))
		if err != nil || ip.Unmap() != srcIP {
			return true
		}
		port := via.Port
		if port == 0 {
			port = 5060
		}
		if uint16(port) != src.Port() {
			return true
		}
	}
	host, err := netip.ParseAddr(strings.Trim(contact.Host, "[]"))
	if err != nil {
		// A host name: only a connection can tell where it is.
		return !strings.EqualFold(req.Transport(), "UDP")
	}
	host = host.Unmap()
	if host != srcIP && unroutable(host) {
		return true
	}
	if !strings.EqualFold(req.Transport(), "UDP") {
		port := contact.Port
		if port == 0 {
			port = 5060
		}
		return host != srcIP || uint16(port) != src.Port()
	}
	return false
}

var sharedSpace = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598 carrier-grade NAT

// unroutable tells whether ip cannot be reached from outside its own network.
func unroutable(ip netip.Addr) bool {
	return ip.IsPrivate() || ip.IsLinkLocalUnicast() || sharedSpace.Contains(ip) || ip.IsUnspecified()
}
