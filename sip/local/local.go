// Package local answers "is this URI us?": the served domain and every
// address sori listens on or advertises.
package local

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Identity is what sori answers for.
type Identity struct {
	Domain string
	hosts  map[string]bool
	ports  map[int]bool
}

// New returns an Identity for a domain and the host[:port] addresses sori uses.
func New(domain string, addrs ...string) *Identity {
	id := &Identity{Domain: strings.ToLower(domain), hosts: map[string]bool{}, ports: map[int]bool{}}
	id.hosts[id.Domain] = true
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		} else if n, err := strconv.Atoi(port); err == nil {
			id.ports[n] = true
		}
		id.hosts[normalizeHost(host)] = true
		if ip := net.ParseIP(normalizeHost(host)); ip != nil && ip.IsUnspecified() {
			id.addInterfaces() // listening on 0.0.0.0 / :: means every local address is us
		}
	}
	return id
}

func (id *Identity) addInterfaces() {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			id.hosts[n.IP.String()] = true
		}
	}
}

// IsLocalHost reports whether host (a domain or IP, IPv6 with or without brackets) is us.
func (id *Identity) IsLocalHost(host string) bool {
	if id.hosts[host] { // the common case: exactly as configured, no allocation
		return true
	}
	return id.hosts[normalizeHost(host)]
}

// IsLocalURI reports whether u's host and port are ours: a phone on the
// same host as sori (a different port) is not sori.
func (id *Identity) IsLocalURI(u sip.Uri) bool {
	if !id.IsLocalHost(u.Host) {
		return false
	}
	return u.Port == 0 || len(id.ports) == 0 || id.ports[u.Port]
}

// IsDomain reports whether host is the served domain (or one of our addresses,
// which phones configured with the server's IP use as their domain).
func (id *Identity) IsDomain(host string) bool { return id.IsLocalHost(host) }

// AddressedToServer reports whether a request URI names sori itself rather
// than a user: a local host and port with no user part.
func (id *Identity) AddressedToServer(u sip.Uri) bool {
	return u.User == "" && id.IsLocalURI(u)
}

func normalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
	// Only IP literals need canonical form (::1 vs 0:0::1); parsing a domain
	// name as an IP builds an error on every call, so skip it.
	if looksLikeIP(h) {
		if ip := net.ParseIP(h); ip != nil {
			return ip.String()
		}
	}
	return h
}

func looksLikeIP(h string) bool {
	return strings.IndexByte(h, ':') >= 0 || (h != "" && h[0] >= '0' && h[0] <= '9' && strings.Trim(h, "0123456789.") == "")
}
