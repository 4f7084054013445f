// Package nodes makes several sori processes one service. Each node holds
// the flows of the phones that registered on it: their TCP, TLS or
// WebSocket connection, or the UDP NAT mapping that only its own socket
// can use. A binding names the node holding its flow and a flow token for
// it (token.go). A node that finds a binding another node holds sends the
// request there with a Route carrying the token, as RFC 3327 Path and RFC
// 5626 §5.3 edge proxies do; the holder recognises its own token and sends
// the request down the flow. Nodes announce themselves with heartbeats in
// Redis (liveness.go): a binding on a node whose heartbeat stopped is
// skipped at once. A node's heartbeat is also its lease on the calls it
// saved (fence.go): one that could not renew it for GoneAfter less a
// BeatTTL steps back from them, before any other node can adopt them.
//
// Trust: requests from other nodes are relayed without authenticating the
// caller again (the node they entered at did), and are exempt from the
// rate limits (cmd/sori), so a node's address alone is never enough: a
// message is another node's only when it comes from one of the configured
// node addresses (sip.nodes) and is vouched for. With TLS between the
// nodes (Config.Vouched), it came on a TLS connection whose certificate
// names that node; in the clear, it carries that node's signature
// (sign.go). A node address read from Redis is used only if it is one of
// sip.nodes.
package nodes

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/registrar/store"
)

// Address is where the other nodes reach a node.
type Address struct {
	Transport string // UDP, TCP or TLS (sip.node_transport tls)
	Addr      netip.AddrPort
}

// ParseAddress parses "tcp:IP:PORT" (sip.listen's form; udp: and tls: too).
func ParseAddress(s string) (Address, error) {
	tr, hostport, ok := strings.Cut(s, ":")
	if !ok {
		return Address{}, fmt.Errorf("%q is not TRANSPORT:IP:PORT", s)
	}
	tr = strings.ToUpper(tr)
	switch tr {
	case "UDP", "TCP", "TLS":
	default:
		return Address{}, fmt.Errorf("%q: transport %q is not udp, tcp or tls", s, strings.ToLower(tr))
	}
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil || ap.Addr().IsUnspecified() || ap.Port() == 0 {
		return Address{}, fmt.Errorf("%q: %q is not an IP address and port another node can reach", s, hostport)
	}
	return Address{Transport: tr, Addr: ap}, nil
}

func (a Address) String() string { return strings.ToLower(a.Transport) + ":" + a.Addr.String() }

// Route is the loose Route to node a carrying a flow token (RFC 5626 §5.3:
// "ob" marks it as an outbound flow's).
func (a Address) Route(token string) sip.Uri {
	u := sip.Uri{Scheme: "sip", User: token, Host: a.Addr.Addr().String(), Port: int(a.Addr.Port()), UriParams: sip.NewParams()}
	if a.Transport != "UDP" {
		u.UriParams.Add("transport", strings.ToLower(a.Transport))
	}
	u.UriParams.Add("lr", "")
	u.UriParams.Add("ob", "")
	return u
}

// Conns tells whether a flow a phone opened to this node is still open
// (sip/transport; a UDP flow always is).
type Conns interface {
	Open(transport, remote string) bool
}

// Config configures a Set.
type Config struct {
	ID    string    // this node's sip.node_id
	Self  Address   // this node's sip.node_address
	Peers []Address // sip.nodes: every node's address (this one's too)
	// Secret keys the flow tokens: sip.auth_secret, the same on every node.
	Secret []byte
	Beats  Beats // heartbeats (Redis); nil: every node counts as up
	Conns  Conns // this node's open flows; nil: every flow counts as open
	// Vouched, with TLS between the nodes (sip.node_transport tls),
	// reports whether the message from src ("ip:port") over transport came
	// on a TLS connection whose certificate chains to sip.node_ca and
	// names src's IP; only then is a node's address trusted. Nil: the
	// nodes talk in the clear, and a message from a node's address must
	// carry that node's signature instead (Signer).
	Vouched func(transport, src string) bool
	// Signer checks the nodes' signatures when they talk in the clear (no
	// Vouched): the transport's, whose replay cache says which signatures
	// it took; nil: one keyed from Secret (that no transport verifies
	// with, so nothing is a node's: tests).
	Signer *Signer
	Log    *slog.Logger
	// GoneAfter is how long a node's heartbeat must have been gone before
	// its calls are adopted (Set.Gone), and what this node's Lease is
	// timed by; zero: the GoneAfter constant (tests shorten it; every node
	// of a service must have the same).
	GoneAfter time.Duration
	// Registerer takes sori_node_routes_total; nil: no metrics.
	Registerer prometheus.Registerer
}

// Set is this node and what it knows of the others.
type Set struct {
	cfg     Config
	tokens  Tokens
	signer  *Signer // nil with Vouched
	trusted map[netip.Addr]bool
	peers   map[netip.AddrPort]string // the configured transport of each node address
	now     func() time.Time
	routes  *prometheus.CounterVec
	lease   *Lease // this node's hold on its saved calls (fence.go)

	mu    sync.Mutex
	cache map[string]peerState // by node id (liveness.go)
}

// New returns the Set for this node.
func New(c Config) *Set {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.GoneAfter <= 0 {
		c.GoneAfter = GoneAfter
	}
	s := &Set{cfg: c, tokens: NewTokens(c.Secret), trusted: map[netip.Addr]bool{}, peers: map[netip.AddrPort]string{},
		now: time.Now, cache: map[string]peerState{},
		routes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_node_routes_total",
			Help: "Bindings held by another node, by outcome: forwarded to that node (remote) or skipped because it is down or unknown (down).",
		}, []string{"result"}),
	}
	s.lease = NewLease(c.GoneAfter, func() time.Time { return s.now() })
	if c.Vouched == nil {
		if s.signer = c.Signer; s.signer == nil {
			s.signer = NewSigner(c.Secret, c.Self, c.Peers)
		}
	}
	for _, p := range c.Peers {
		s.peers[p.Addr] = p.Transport
		if p.Addr != c.Self.Addr {
			s.trusted[p.Addr.Addr().Unmap()] = true
		}
	}
	if c.Registerer != nil {
		c.Registerer.MustRegister(s.routes)
	}
	return s
}

// Lease is this node's hold on the calls it saved, renewed by its
// heartbeat (Run): sip/call acts on them only while it is the Owner.
// Without heartbeats (no Redis) no node adopts another's calls, and the
// lease is never renewed: nil then.
func (s *Set) Lease() *Lease {
	if s.cfg.Beats == nil {
		return nil
	}
	return s.lease
}

// ID is this node's id.
func (s *Set) ID() string { return s.cfg.ID }

// Holder is what a binding registered on this node from source over
// transport records: this node, and the token of the flow.
func (s *Set) Holder(transport, source string) (node, token string) {
	return s.cfg.ID, s.tokens.Mint(s.cfg.ID, Flow{Transport: strings.ToUpper(transport), Addr: source})
}

// Decision is how a binding is reached from this node.
type Decision int

const (
	// Local: from here, as on a single node (its flow is this node's, or
	// it needs none).
	Local Decision = iota
	// Remote: through the node holding its flow, at the Route returned.
	Remote
	// Down: the node holding its flow is down (or unknown): skip it.
	Down
)

func (d Decision) String() string {
	return [...]string{"local", "remote", "down"}[d]
}

// Route decides how b is reached. Only a flow needs its holder: a UDP
// binding reached at its Contact (not behind NAT), or one behind an edge
// proxy in its Path, is reached from any node; a connection is the
// holder's alone.
func (s *Set) Route(ctx context.Context, b store.Binding) (sip.Uri, Decision) {
	flow := b.NAT || !strings.EqualFold(b.Transport, "udp")
	if b.Node == "" || b.Node == s.cfg.ID || b.Flow == "" || !flow || len(b.Path) > 0 {
		return sip.Uri{}, Local
	}
	a, up := s.address(ctx, b.Node)
	if !up {
		s.routes.WithLabelValues("down").Inc()
		return sip.Uri{}, Down
	}
	s.routes.WithLabelValues("remote").Inc()
	return a.Route(b.Flow), Remote
}

// Reach is where node id is reached from here: Local for this node,
// Remote (at its address) when its heartbeat is there and names one of
// sip.nodes, Down otherwise (gone, unknown, no heartbeats). A call still
// ringing lives on the node that took its INVITE alone: a request of its
// early dialog reaching another node goes there (sip/proxy holder.go).
func (s *Set) Reach(ctx context.Context, id string) (Address, Decision) {
	if id == s.cfg.ID {
		return s.cfg.Self, Local
	}
	a, up := s.address(ctx, id)
	if !up {
		return Address{}, Down
	}
	return a, Remote
}

// Flow is the flow of this node's that u, a Route sori was reached by,
// names in its token; false when u carries none of this node's tokens.
func (s *Set) Flow(u sip.Uri) (Flow, bool) {
	if u.User == "" {
		return Flow{}, false
	}
	return s.tokens.Open(s.cfg.ID, u.User)
}

// Open reports whether flow f is still there.
func (s *Set) Open(f Flow) bool { return s.cfg.Conns == nil || s.cfg.Conns.Open(f.Transport, f.Addr) }

// Trusted reports whether m came from another node: from a node's
// address and vouched for, with TLS between the nodes on a connection
// whose certificate names that node (see Config.Vouched), else by that
// node's signature, which the transport checked and took (Signer.Verify,
// Signer.Vouched: a replayed signature is a phone's). Such a request was authenticated where it
// entered the service; a node's address alone is a phone's like any other.
func (s *Set) Trusted(m sip.Message) bool {
	ap, err := netip.ParseAddrPort(m.Source())
	if err != nil || !s.trusted[ap.Addr().Unmap()] {
		return false
	}
	if s.cfg.Vouched != nil {
		return s.cfg.Vouched(m.Transport(), m.Source())
	}
	return s.signer.Vouched(m)
}

// IsNode reports whether u names another node (a Route or Record-Route
// of one): a request going there keeps what that node wrote for itself.
func (s *Set) IsNode(u sip.Uri) bool {
	ip, err := netip.ParseAddr(strings.Trim(u.Host, "[]"))
	if err != nil || !s.trusted[ip.Unmap()] {
		return false
	}
	port := u.Port
	if port == 0 {
		port = 5060
		if strings.EqualFold(u.UriParams.GetOr("transport", ""), "tls") || u.Scheme == "sips" {
			port = 5061
		}
	}
	return s.peers[netip.AddrPortFrom(ip.Unmap(), uint16(port))] != ""
}

// Forwarded reports whether req is a request another node sends down one
// of this node's flows: from a node (Trusted), its top Route one of this
// node's flow tokens. It is not authenticated again.
func (s *Set) Forwarded(req *sip.Request) bool {
	r := req.Route()
	if r == nil || !s.Trusted(req) {
		return false
	}
	_, ok := s.Flow(r.Address)
	return ok
}
