// Package config loads and validates Sori's YAML configuration. Every validation
// error names the offending key and the line it is on, so an operator can fix a
// file without reading code.
package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sori-voice/sori/sip/abuse/scanner"
)

// Embedded is the default configuration, used when no file is given.
//
//go:embed sori.yaml
var Embedded []byte

// Config is the whole of sori's configuration.
type Config struct {
	SIP       SIP       `yaml:"sip"`
	Registrar Registrar `yaml:"registrar"`
	Users     []User    `yaml:"users"`
	CDR       CDR       `yaml:"cdr"`
	Media     Media     `yaml:"media"`
	Networks  []Network `yaml:"networks"`
	Trunks    []Trunk   `yaml:"trunks"`
	Routes    []Route   `yaml:"routes"`
	Numbering Numbering `yaml:"numbering"`
	Security  Security  `yaml:"security"`
	Push      Push      `yaml:"push"`
	Quality   Quality   `yaml:"quality"`
	HTTP      HTTP      `yaml:"http"`
	Log       Log       `yaml:"log"`
}

// SIP holds the transport and authentication settings.
type SIP struct {
	Domain    string   `yaml:"domain"`
	Listen    []string `yaml:"listen"`
	Advertise string   `yaml:"advertise"`
	// Aliases are more host[:port] names this server is known by (as
	// Kamailio's alias=): a load balancer or TLS terminator in front of it,
	// a DNS name phones use. Requests and digest-uris naming one are ours.
	Aliases []string `yaml:"aliases"`
	// RecordRoute is the host Record-Route names instead of this node's
	// address (as Kamailio's record_route_preset): the service's name,
	// whose DNS records (SRV or A) list every node, or an address that
	// moves to a live node. Phones send their requests inside a call to
	// it, so they reach a live node when the one that set the call up is
	// gone (with keep_dialogs, that node loads the call). It is one of
	// this server's names, as an alias. Empty: each node's own address.
	RecordRoute    string   `yaml:"record_route"`
	AuthAlgorithms []string `yaml:"auth_algorithms"`
	AuthSecret     string   `yaml:"auth_secret"`
	NonceTTL       Duration `yaml:"nonce_ttl"`
	// TimerJ keeps a finished non-INVITE server transaction to absorb request
	// retransmissions (RFC 3261 §17.2.2: 64*T1 = 32 s on UDP).
	TimerJ Duration `yaml:"timer_j"`
	// ShedAfter: a new UDP request that waited longer than this to be read
	// is answered 503 (sip/overload); 0: never.
	ShedAfter Duration `yaml:"shed_after"`
	// TimerC is the no-answer timeout of a forwarded INVITE (RFC 3261
	// §16.6 step 11 says more than 3 minutes; Kamailio's fr_inv_timer
	// default is 120 s, phones give up after about 60 s).
	TimerC Duration `yaml:"timer_c"`
	// DialogTimeout ends the record of an answered call that never saw a BYE
	// (a phone that lost its network), as Kamailio's dialog module does.
	DialogTimeout Duration `yaml:"dialog_timeout"`
	// KeepDialogs keeps answered calls in the registrar's Redis store, so
	// a restarted node, or another one, ends them (no effect with memory).
	// A node saves them under NodeID with Nodes, else under its host name
	// and first Listen address (one name per process on a host, the same
	// across its restarts); with Nodes, the calls of a node gone for good
	// are adopted by another.
	KeepDialogs bool `yaml:"keep_dialogs"`
	// TrunkPing is how often each carrier gateway gets an OPTIONS; one
	// that does not answer is skipped until it does.
	TrunkPing Duration `yaml:"trunk_ping"`
	// TLS is the certificate of the tls listeners.
	TLS TLS `yaml:"tls"`
	// NATPing keeps UDP phones behind NAT without SIP Outbound reachable.
	NATPing NATPing `yaml:"nat_ping"`
	// NodeID names this node among the nodes of one service (sip/nodes):
	// bindings record the node holding their flow by it. Every node needs
	// its own; empty: the host name.
	NodeID string `yaml:"node_id"`
	// NodeAddress is where the other nodes reach this one, "tcp:IP:PORT"
	// (or udp:; tls: with NodeTransport tls), one of sip.listen; empty:
	// the first tcp (tls) listener.
	NodeAddress string `yaml:"node_address"`
	// NodeTransport is how the nodes reach each other: "" (the transport
	// of their addresses, tcp or udp, in the clear) or "tls": every node
	// address is a tls listener, and a node dials the others over TLS
	// with sip.tls's certificate, verifying theirs against NodeCA.
	NodeTransport string `yaml:"node_transport"`
	// NodeCA is the PEM file of the authorities the nodes' certificates
	// chain to (NodeTransport tls).
	NodeCA string `yaml:"node_ca"`
	// NodeCert and NodeKey (NodeTransport tls, both or neither) are this
	// node's certificate among the nodes: presented when it dials
	// another node, and served to connections from the nodes' addresses,
	// while phones keep getting sip.tls's. Empty: sip.tls's serves both.
	NodeCert string `yaml:"node_cert"`
	NodeKey  string `yaml:"node_key"`
	// Nodes lists every node's node_address, this one's too. Set, phones'
	// flows are reached through the node they registered on, and only
	// these addresses are trusted as nodes. Empty: a single node.
	Nodes []string `yaml:"nodes"`
	// EdgeProxies are the CIDR prefixes of proxies in front of sori whose
	// Path (RFC 3327) a REGISTER may carry; from anywhere else, 403.
	EdgeProxies []string `yaml:"edge_proxies"`
}

// NATPing is the OPTIONS keepalive sori sends UDP phones behind NAT that
// do not keep their flow alive themselves (as Kamailio's nathelper).
type NATPing struct {
	// Method is options (answered: a binding whose pings go unanswered is
	// removed) or crlf (a double CRLF, lighter, unanswered: nothing removed).
	Method    string   `yaml:"method"`
	Interval  Duration `yaml:"interval"`   // 0: no pings
	MaxMisses int      `yaml:"max_misses"` // unanswered in a row: the binding is removed
}

// TLS is the certificate sori presents on its tls listeners, reloaded on
// SIGHUP.
type TLS struct {
	Cert string `yaml:"cert"` // PEM file: the certificate, then its chain
	Key  string `yaml:"key"`  // PEM file: its private key
	// CA, when set, is a PEM file of the authorities client certificates
	// must chain to; clients without one are refused.
	CA string `yaml:"ca"`
	// SelfSigned: when neither Cert nor Key exists, sori creates a
	// self-signed certificate for sip.domain and the listeners' addresses
	// there on first start (for trying it out; phones must be told to
	// trust it).
	SelfSigned bool `yaml:"self_signed"`
}

// Media is how sori anchors calls' media through sori-anchor (or
// rtpengine) over the ng protocol. No anchors: media flows end to end.
type Media struct {
	Anchors      []string `yaml:"anchors"`       // ng control addresses, IP:PORT
	Timeout      Duration `yaml:"timeout"`       // one ng command, retransmissions included
	PingInterval Duration `yaml:"ping_interval"` // health check of each anchor
	// FailoverAfter is how long an anchor fails its pings (or a call's
	// command times out there) before it is dead for good: its answered
	// calls move to a live anchor by re-INVITE to both phones. 0: never.
	FailoverAfter Duration `yaml:"failover_after"`
	// Encryption is what a call's callee side is offered when neither its
	// user nor its trunk says: pass (the caller's offer's profile, SRTP
	// or not), srtp (RTP/SAVP, SDES keys of the anchor's) or rtp (plain
	// RTP/AVP; the anchor decrypts an SRTP caller's media).
	Encryption string `yaml:"encryption"`
}

// EncryptionFor is the media encryption of a callee: its trunk's, else
// its user's, else media.encryption; "" for pass (sip/anchoring's values).
func (c *Config) EncryptionFor(user, trunk string) string { return c.Encryptions()(user, trunk) }

// Encryptions is EncryptionFor indexed once: every anchored INVITE asks,
// and a scan of users was 2.8 % of sori's CPU at 800 calls/s with 20 000
// users (profile of make load-calls MEDIA=1, 2026-12-03).
func (c *Config) Encryptions() func(user, trunk string) string {
	byTrunk, byUser := map[string]string{}, map[string]string{}
	for _, t := range c.Trunks {
		if t.Encryption != "" {
			byTrunk[t.Name] = t.Encryption
		}
	}
	for _, u := range c.Users {
		if u.Encryption != "" {
			byUser[u.Name] = u.Encryption
		}
	}
	def := c.Media.Encryption
	return func(user, trunk string) string {
		e := def
		if trunk != "" {
			if v, found := byTrunk[trunk]; found {
				e = v
			}
		} else if user != "" {
			if v, found := byUser[user]; found {
				e = v
			}
		}
		if e == "pass" {
			return ""
		}
		return e
	}
}

// Network names a carrier's (or any) network, so call quality can be
// compared network by network: a phone is in it when its media comes from
// one of the prefixes, or when the P-Access-Network-Info it sends (RFC
// 7315) names a cell of one of the PLMNs (MCC+MNC, e.g. "45005").
type Network struct {
	Name     string   `yaml:"name"`
	Prefixes []string `yaml:"prefixes"`
	PLMNs    []string `yaml:"plmns"`
}

// CDR is where call records go.
type CDR struct {
	File         string `yaml:"file"`          // JSON lines, appended; empty: none
	RedisStream  string `yaml:"redis_stream"`  // stream key when registrar.store is Redis; empty: none
	StreamMaxLen int64  `yaml:"stream_maxlen"` // approximate cap on the stream length
}

// Registrar holds the REGISTER policy and the binding store location.
type Registrar struct {
	Store          string   `yaml:"store"`
	MinExpires     int      `yaml:"min_expires"`
	MaxExpires     int      `yaml:"max_expires"`
	DefaultExpires int      `yaml:"default_expires"`
	MaxContacts    int      `yaml:"max_contacts"`
	StoreTimeout   Duration `yaml:"store_timeout"`
	RetryAfter     int      `yaml:"retry_after"`
	// FlowTimer is the Flow-Timer sori asks of a phone registering with
	// SIP Outbound (RFC 5626 §4.4.1): it keeps its flow alive at least
	// this often.
	FlowTimer Duration `yaml:"flow_timer"`
}

// User is a static subscriber. Either Password or both HA1 hashes are given.
type User struct {
	Name      string    `yaml:"name"`
	Password  string    `yaml:"password"`
	HA1MD5    string    `yaml:"ha1_md5"`
	HA1SHA256 string    `yaml:"ha1_sha256"`
	Numbers   []string  `yaml:"numbers"` // E.164 numbers the user owns, "+821011112222"
	Toll      *UserToll `yaml:"toll"`    // overrides security.toll for this user
	// Tags label the user for the quality map: its plan, its device.
	Tags map[string]string `yaml:"tags"`
	// Encryption of the media of calls to the user (media.encryption's
	// values); empty: media.encryption.
	Encryption string `yaml:"encryption"`
}

// UserToll overrides some of security.toll for one user (nil: the default).
type UserToll struct {
	MaxCalls     *int `yaml:"max_calls"`
	CallsPerHour *int `yaml:"calls_per_hour"`
}

// Security is the abuse protection (sip/abuse).
type Security struct {
	// Trusted sources are never limited, banned or checked (with the
	// trunks' inbound ACLs).
	Trusted []string `yaml:"trusted"`
	// Action for a banned source or one over its rate limit: drop (no
	// answer) or reject (503 with Retry-After).
	Action       string       `yaml:"action"`
	RateLimit    RateLimit    `yaml:"rate_limit"`
	AuthFailures AuthFailures `yaml:"auth_failures"`
	// Scanners are User-Agent substrings (case-insensitive) whose requests
	// are dropped unanswered.
	Scanners []string `yaml:"scanners"`
	Toll     Toll     `yaml:"toll"`
}

// RateLimit is the token bucket each source address gets.
type RateLimit struct {
	Rate       float64  `yaml:"rate"`  // requests per second, sustained; 0: no limit
	Burst      float64  `yaml:"burst"` // requests at once
	BanTime    Duration `yaml:"ban_time"`
	MaxSources int      `yaml:"max_sources"` // buckets held at most
}

// AuthFailures bans password guessers.
type AuthFailures struct {
	PerSource int      `yaml:"per_source"` // failed digests from one address; 0: off
	PerUser   int      `yaml:"per_user"`   // failed digests for one user, from anywhere; 0: off
	Window    Duration `yaml:"window"`
	BanTime   Duration `yaml:"ban_time"`
}

// Toll caps each user's trunk calls (0: no limit).
type Toll struct {
	MaxCalls     int `yaml:"max_calls"`      // at once
	CallsPerHour int `yaml:"calls_per_hour"` // per clock hour
}

// Trunk is a carrier peering over SIP.
type Trunk struct {
	Name       string    `yaml:"name"`
	Gateways   []Gateway `yaml:"gateways"`
	InboundACL []string  `yaml:"inbound_acl"` // CIDR prefixes trusted for calls from the carrier
	MaxCalls   int       `yaml:"max_calls"`   // concurrent calls; 0: no limit
	Auth       *struct {
		Username string `yaml:"username"`
		Password string `yaml:"password"`
	} `yaml:"auth"`
	Register bool `yaml:"register"`
	// TLS is how sori connects to the trunk's tls: gateways.
	TLS *TrunkTLS `yaml:"tls"`
	// Encryption of the media of calls to the carrier (media.encryption's
	// values; carriers mostly want rtp); empty: media.encryption.
	Encryption string `yaml:"encryption"`
}

// TrunkTLS is a carrier's TLS: the CA its gateways' certificates chain to
// (required: a carrier is always verified), the name to verify (default:
// the gateway's IP address), and sori's client certificate when the
// carrier asks for one.
type TrunkTLS struct {
	CA         string `yaml:"ca"`
	ServerName string `yaml:"server_name"`
	Cert       string `yaml:"cert"`
	Key        string `yaml:"key"`
}

// Gateway is one of a trunk's addresses, "udp:IP:PORT", "tcp:IP:PORT" or
// "tls:IP:PORT" (with the trunk's tls).
type Gateway struct {
	Address  string `yaml:"address"`
	Priority int    `yaml:"priority"` // lower first
	Weight   int    `yaml:"weight"`   // among equal priorities, higher first
}

// Route sends E.164 numbers by longest prefix to trunks, tried in order.
type Route struct {
	Prefix string   `yaml:"prefix"`
	Trunks []string `yaml:"trunks"`
}

// Numbering is how the users dial (see sip/numbers).
type Numbering struct {
	CountryCode         string `yaml:"country_code"`
	NationalPrefix      string `yaml:"national_prefix"`
	InternationalPrefix string `yaml:"international_prefix"`
}

// HTTP is the metrics and health endpoint.
type HTTP struct {
	Listen string `yaml:"listen"`
	PProf  bool   `yaml:"pprof"` // serve /debug/pprof/ (profiling; keep it on loopback)
}

// Log selects the log level and format.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Listener is one parsed sip.listen entry.
type Listener struct {
	Transport string // "udp" or "tcp"
	Addr      netip.AddrPort
}

func (l Listener) String() string { return l.Transport + ":" + l.Addr.String() }

// Duration is a time.Duration written in YAML as "300s", "500ms", "5m".
type Duration time.Duration

// UnmarshalYAML accepts Go duration strings.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 500ms, 30s, 5m)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Default returns the built-in values used for every key a file leaves out.
func Default() Config {
	return Config{
		SIP: SIP{
			Domain:         "sori.test",
			Listen:         []string{"udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"},
			AuthAlgorithms: []string{"MD5"},
			NonceTTL:       Duration(300 * time.Second),
			TimerJ:         Duration(5 * time.Second),
			ShedAfter:      Duration(400 * time.Millisecond),
			TimerC:         Duration(60 * time.Second),
			DialogTimeout:  Duration(12 * time.Hour),
			KeepDialogs:    true,
			TrunkPing:      Duration(30 * time.Second),
			NATPing:        NATPing{Method: "options", Interval: Duration(30 * time.Second), MaxMisses: 3},
		},
		Push:    defaultPush(),
		Quality: defaultQuality(),
		CDR:     CDR{RedisStream: "sori:cdr", StreamMaxLen: 1000000},
		Media: Media{Timeout: Duration(2 * time.Second), PingInterval: Duration(5 * time.Second), FailoverAfter: Duration(3 * time.Second),
			Encryption: "pass"},
		Registrar: Registrar{
			Store:          "memory",
			MinExpires:     60,
			MaxExpires:     3600,
			DefaultExpires: 3600,
			MaxContacts:    16,
			FlowTimer:      Duration(120 * time.Second),
			StoreTimeout:   Duration(500 * time.Millisecond),
			RetryAfter:     5,
		},
		Security: Security{
			Action: "drop",
			// One address may hide thousands of phones (carrier-grade NAT):
			// 1000/s sustained is a few thousand phones re-registering at
			// once; a flood of 5000/s empties the burst in 0.5 s.
			RateLimit:    RateLimit{Rate: 1000, Burst: 2000, BanTime: Duration(time.Minute), MaxSources: 200_000},
			AuthFailures: AuthFailures{PerSource: 20, PerUser: 50, Window: Duration(time.Minute), BanTime: Duration(15 * time.Minute)},
			Scanners:     slices.Clone(scanner.Default),
			Toll:         Toll{MaxCalls: 10, CallsPerHour: 100},
		},
		HTTP: HTTP{Listen: "127.0.0.1:9060"},
		Log:  Log{Level: "info", Format: "text"},
	}
}

// Load reads and validates a file. An empty path loads the embedded default.
func Load(path string) (*Config, error) {
	if path == "" {
		return Parse("<embedded>", Embedded)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates YAML; name is used in error messages.
func Parse(name string, data []byte) (*Config, error) {
	cfg := Default()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) { // an empty file means defaults
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	v := validator{name: name, root: &root}
	v.check(&cfg)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return &cfg, nil
}

// Listeners returns the parsed sip.listen entries (valid after Parse).
func (c *Config) Listeners() []Listener {
	out := make([]Listener, 0, len(c.SIP.Listen))
	for _, s := range c.SIP.Listen {
		l, err := ParseListener(s)
		if err == nil {
			out = append(out, l)
		}
	}
	return out
}

// ParseListener parses "udp:127.0.0.1:5060" or "tcp:[::1]:5060".
func ParseListener(s string) (Listener, error) {
	tr, hostport, ok := strings.Cut(s, ":")
	if !ok {
		return Listener{}, fmt.Errorf("%q is not TRANSPORT:HOST:PORT", s)
	}
	tr = strings.ToLower(tr)
	switch tr {
	case "udp", "tcp", "tls", "ws", "wss":
	default:
		return Listener{}, fmt.Errorf("%q: transport %q is not udp, tcp, tls, ws or wss", s, tr)
	}
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return Listener{}, fmt.Errorf("%q: %q is not IP:PORT", s, hostport)
	}
	return Listener{Transport: tr, Addr: ap}, nil
}

// checkTLS: a tls listener needs a certificate that loads (or one sori
// may create); a CA file must hold at least one certificate.
func (v *validator) checkTLS(t TLS, needed bool) {
	if !needed {
		return
	}
	if t.Cert == "" || t.Key == "" {
		v.fail("sip.tls.cert", "a tls listener needs sip.tls.cert and sip.tls.key")
		return
	}
	_, certErr := os.Stat(t.Cert)
	_, keyErr := os.Stat(t.Key)
	switch {
	case t.SelfSigned && errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		// created at start
	case certErr != nil:
		v.fail("sip.tls.cert", "%v", certErr)
	case keyErr != nil:
		v.fail("sip.tls.key", "%v", keyErr)
	default:
		if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
			v.fail("sip.tls.cert", "%s and %s: %v", t.Cert, t.Key, err)
		}
	}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			v.fail("sip.tls.ca", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			v.fail("sip.tls.ca", "%s holds no PEM certificate", t.CA)
		}
	}
}

type validator struct {
	name string
	root *yaml.Node
	errs []error
}

// fail records an error for the key at path ("sip.listen.1"), with its line.
func (v *validator) fail(path string, format string, args ...any) {
	line := lineOf(v.root, strings.Split(path, "."))
	v.errs = append(v.errs, fmt.Errorf("config %s:%d: %s: %s", v.name, line, path, fmt.Sprintf(format, args...)))
}

func (v *validator) check(c *Config) {
	if c.SIP.Domain == "" || strings.ContainsAny(c.SIP.Domain, " \t;:@<>") {
		v.fail("sip.domain", "%q is not a SIP domain", c.SIP.Domain)
	}
	if len(c.SIP.Listen) == 0 {
		v.fail("sip.listen", "at least one listener is required")
	}
	tlsListener := false
	for i, s := range c.SIP.Listen {
		l, err := ParseListener(s)
		if err != nil {
			v.fail("sip.listen."+strconv.Itoa(i), "%v", err)
		}
		tlsListener = tlsListener || l.Transport == "tls" || l.Transport == "wss"
	}
	v.checkTLS(c.SIP.TLS, tlsListener)
	if iv := c.SIP.NATPing.Interval.D(); iv != 0 && (iv < time.Second || iv > time.Hour) {
		v.fail("sip.nat_ping.interval", "%v: give 0 (no pings) or 1s..1h", iv)
	}
	if m := c.SIP.NATPing.Method; m != "options" && m != "crlf" {
		v.fail("sip.nat_ping.method", "%q: give options or crlf", m)
	}
	if c.SIP.NATPing.MaxMisses < 1 || c.SIP.NATPing.MaxMisses > 100 {
		v.fail("sip.nat_ping.max_misses", "%d is outside 1..100", c.SIP.NATPing.MaxMisses)
	}
	if a := c.SIP.Advertise; a != "" && !hostPort(a) {
		v.fail("sip.advertise", "%q is not HOST or HOST:PORT", a)
	}
	if r := c.SIP.RecordRoute; r != "" {
		if _, _, err := net.SplitHostPort(r); err == nil || !hostPort(r) {
			v.fail("sip.record_route", "%q is not a HOST (a name or an IP; the port is each listener's)", r)
		}
	}
	for i, a := range c.SIP.Aliases {
		if !hostPort(a) {
			v.fail(fmt.Sprintf("sip.aliases.%d", i), "%q is not HOST or HOST:PORT", a)
		}
	}
	if len(c.SIP.AuthAlgorithms) == 0 {
		v.fail("sip.auth_algorithms", "at least one of MD5, SHA-256 is required")
	}
	seen := map[string]bool{}
	for i, a := range c.SIP.AuthAlgorithms {
		switch strings.ToUpper(a) {
		case "MD5", "SHA-256":
			if seen[strings.ToUpper(a)] {
				v.fail("sip.auth_algorithms."+strconv.Itoa(i), "%q is listed twice", a)
			}
			seen[strings.ToUpper(a)] = true
		default:
			v.fail("sip.auth_algorithms."+strconv.Itoa(i), "%q is not MD5 or SHA-256", a)
		}
	}
	if s := c.SIP.AuthSecret; s != "" && len(s) < 16 {
		v.fail("sip.auth_secret", "is %d characters; use at least 16 (or leave empty for a random one per process)", len(s))
	}
	if j := c.SIP.TimerJ.D(); j < 500*time.Millisecond || j > 32*time.Second {
		v.fail("sip.timer_j", "%v is outside 500ms..32s", j)
	}
	if d := c.SIP.ShedAfter.D(); d != 0 && (d < 50*time.Millisecond || d > 32*time.Second) {
		v.fail("sip.shed_after", "%v is outside 50ms..32s (0: never shed)", d)
	}
	if t := c.SIP.TimerC.D(); t < time.Second || t > 30*time.Minute {
		v.fail("sip.timer_c", "%v is outside 1s..30m", t)
	}
	if t := c.SIP.DialogTimeout.D(); t < time.Second {
		v.fail("sip.dialog_timeout", "%v is shorter than 1s", t)
	}
	for i, a := range c.Media.Anchors {
		if _, err := netip.ParseAddrPort(a); err != nil {
			v.fail("media.anchors."+strconv.Itoa(i), "%q is not IP:PORT", a)
		}
	}
	if d := c.Media.Timeout.D(); d < 100*time.Millisecond || d > time.Minute {
		v.fail("media.timeout", "%s is outside 100ms..1m", d)
	}
	if d := c.Media.PingInterval.D(); d < time.Second || d > time.Hour {
		v.fail("media.ping_interval", "%s is outside 1s..1h", d)
	}
	if d := c.Media.FailoverAfter.D(); d != 0 && (d < time.Second || d > time.Hour) {
		v.fail("media.failover_after", "%s: give 0 (never) or 1s..1h", d)
	}
	if c.CDR.StreamMaxLen < 0 {
		v.fail("cdr.stream_maxlen", "%d is negative (0 means no cap)", c.CDR.StreamMaxLen)
	}
	if c.SIP.NonceTTL.D() < time.Second {
		v.fail("sip.nonce_ttl", "%v is shorter than 1s", c.SIP.NonceTTL.D())
	}

	r := c.Registrar
	if r.Store != "memory" && !strings.Contains(r.Store, "://") {
		v.fail("registrar.store", "%q is not memory or a redis:// URL", r.Store)
	}
	if r.MinExpires < 1 {
		v.fail("registrar.min_expires", "%d must be at least 1", r.MinExpires)
	}
	if r.MaxExpires < r.MinExpires {
		v.fail("registrar.max_expires", "%d is below min_expires (%d)", r.MaxExpires, r.MinExpires)
	}
	if r.DefaultExpires < r.MinExpires || r.DefaultExpires > r.MaxExpires {
		v.fail("registrar.default_expires", "%d is outside min_expires..max_expires (%d..%d)", r.DefaultExpires, r.MinExpires, r.MaxExpires)
	}
	if r.MaxContacts < 0 {
		v.fail("registrar.max_contacts", "%d is negative (0 means no limit)", r.MaxContacts)
	}
	if ft := r.FlowTimer.D(); ft < 10*time.Second || ft > time.Hour {
		v.fail("registrar.flow_timer", "%v is outside 10s..1h", ft)
	}
	if r.StoreTimeout.D() <= 0 {
		v.fail("registrar.store_timeout", "must be positive")
	}
	if r.RetryAfter < 1 {
		v.fail("registrar.retry_after", "%d must be at least 1 (seconds)", r.RetryAfter)
	}

	names := map[string]bool{}
	if d := c.SIP.TrunkPing.D(); d < 500*time.Millisecond || d > time.Hour {
		v.fail("sip.trunk_ping", "%s is outside 500ms..1h", d)
	}
	v.checkTrunks(c)
	v.checkNodes(c)
	seenNet := map[string]bool{}
	for i, n := range c.Networks {
		p := "networks." + strconv.Itoa(i)
		if n.Name == "" || seenNet[n.Name] {
			v.fail(p+".name", "%q: every network needs its own name", n.Name)
		}
		seenNet[n.Name] = true
		if len(n.Prefixes) == 0 && len(n.PLMNs) == 0 {
			v.fail(p, "give prefixes, plmns or both")
		}
		for j, pr := range n.Prefixes {
			if _, err := netip.ParsePrefix(pr); err != nil {
				v.fail(p+".prefixes."+strconv.Itoa(j), "%q is not a CIDR prefix", pr)
			}
		}
		for j, pl := range n.PLMNs {
			if len(pl) < 5 || len(pl) > 6 || strings.Trim(pl, "0123456789") != "" {
				v.fail(p+".plmns."+strconv.Itoa(j), "%q is not MCC+MNC (5 or 6 digits)", pl)
			}
		}
	}
	checkEncryption := func(path, e string, empty bool) {
		switch e {
		case "pass", "srtp", "rtp":
		case "":
			if empty {
				return
			}
			fallthrough
		default:
			v.fail(path, "%q: give pass, srtp or rtp", e)
		}
	}
	checkEncryption("media.encryption", c.Media.Encryption, false)
	for i, t := range c.Trunks {
		checkEncryption("trunks."+strconv.Itoa(i)+".encryption", t.Encryption, true)
	}
	for i, u := range c.Users {
		checkEncryption("users."+strconv.Itoa(i)+".encryption", u.Encryption, true)
	}
	for i, u := range c.Users {
		p := "users." + strconv.Itoa(i)
		if u.Name == "" || strings.ContainsAny(u.Name, " \t@:;<>\"") {
			v.fail(p+".name", "%q is not a SIP user name", u.Name)
		}
		if names[u.Name] {
			v.fail(p+".name", "%q is listed twice", u.Name)
		}
		names[u.Name] = true
		hasHA1 := u.HA1MD5 != "" || u.HA1SHA256 != ""
		switch {
		case u.Password == "" && !hasHA1:
			v.fail(p+".password", "user %q needs a password (or ha1_md5 and ha1_sha256)", u.Name)
		case u.Password != "" && hasHA1:
			v.fail(p+".password", "user %q has both a password and HA1 hashes; give one", u.Name)
		case hasHA1 && (!isHex(u.HA1MD5, 32) || !isHex(u.HA1SHA256, 64)):
			v.fail(p+".ha1_md5", "user %q needs ha1_md5 (32 hex digits) and ha1_sha256 (64 hex digits)", u.Name)
		}
	}

	for i, u := range c.Users {
		for k, val := range u.Tags {
			if k == "" || strings.ContainsAny(k, "=, \t") || val == "" || strings.ContainsAny(val, ", \t") {
				v.fail("users."+strconv.Itoa(i)+".tags", "%q: %q is not a tag (a key without =, commas or spaces; a value without commas or spaces)", k, val)
			}
		}
	}
	v.checkSecurity(c)
	v.checkPush(c)
	v.checkQuality(c)
	if c.HTTP.Listen != "" {
		if _, err := netip.ParseAddrPort(c.HTTP.Listen); err != nil {
			v.fail("http.listen", "%q is not IP:PORT (empty disables the endpoint)", c.HTTP.Listen)
		}
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		v.fail("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		v.fail("log.format", "%q is not text or json", c.Log.Format)
	}
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

func isE164(n string) bool {
	return len(n) >= 8 && len(n) <= 16 && n[0] == '+' && strings.Trim(n[1:], "0123456789") == ""
}

func (v *validator) checkTrunks(c *Config) {
	digits := func(s string) bool { return strings.Trim(s, "0123456789") == "" }
	if !digits(c.Numbering.CountryCode) || !digits(c.Numbering.NationalPrefix) || !digits(c.Numbering.InternationalPrefix) {
		v.fail("numbering", "country_code, national_prefix and international_prefix are digits")
	}
	owner := map[string]string{}
	for i, u := range c.Users {
		for j, n := range u.Numbers {
			p := "users." + strconv.Itoa(i) + ".numbers." + strconv.Itoa(j)
			if !isE164(n) {
				v.fail(p, "%q is not an E.164 number (+ and 7-15 digits)", n)
			} else if o, dup := owner[n]; dup {
				v.fail(p, "%s is also %s's", n, o)
			}
			owner[n] = u.Name
		}
	}
	if len(c.Trunks) > 0 && len(c.Media.Anchors) == 0 {
		// The phone network's media always goes through an anchor: the
		// carrier sees one address, and each hop's quality is measured.
		v.fail("trunks", "trunk calls are always anchored: set media.anchors")
	}
	names := map[string]bool{}
	for i, t := range c.Trunks {
		p := "trunks." + strconv.Itoa(i)
		if t.Name == "" || names[t.Name] {
			v.fail(p+".name", "%q: every trunk needs its own name", t.Name)
		}
		names[t.Name] = true
		if len(t.Gateways) == 0 {
			v.fail(p+".gateways", "a trunk needs at least one gateway")
		}
		if t.TLS != nil {
			if t.TLS.CA == "" {
				v.fail(p+".tls.ca", "the carrier's CA is required: a carrier's certificate is always verified")
			} else if pem, err := os.ReadFile(t.TLS.CA); err != nil {
				v.fail(p+".tls.ca", "%v", err)
			} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
				v.fail(p+".tls.ca", "%s holds no PEM certificate", t.TLS.CA)
			}
			if (t.TLS.Cert == "") != (t.TLS.Key == "") {
				v.fail(p+".tls.cert", "give both cert and key, or neither")
			} else if t.TLS.Cert != "" {
				if _, err := tls.LoadX509KeyPair(t.TLS.Cert, t.TLS.Key); err != nil {
					v.fail(p+".tls.cert", "%v", err)
				}
			}
		}
		for j, g := range t.Gateways {
			if l, err := ParseListener(g.Address); err != nil {
				v.fail(p+".gateways."+strconv.Itoa(j)+".address", "%v", err)
			} else if l.Transport == "tls" && t.TLS == nil {
				v.fail(p+".gateways."+strconv.Itoa(j)+".address", "%q: a tls gateway needs the trunk's tls.ca", g.Address)
			} else if l.Transport != "udp" && l.Transport != "tcp" && l.Transport != "tls" {
				v.fail(p+".gateways."+strconv.Itoa(j)+".address", "%q: a carrier is reached over udp, tcp or tls", g.Address)
			}
			if g.Weight < 0 || g.Priority < 0 {
				v.fail(p+".gateways."+strconv.Itoa(j), "priority and weight are not negative")
			}
		}
		for j, a := range t.InboundACL {
			if _, err := netip.ParsePrefix(a); err != nil {
				v.fail(p+".inbound_acl."+strconv.Itoa(j), "%q is not a CIDR prefix", a)
			}
		}
		if t.MaxCalls < 0 {
			v.fail(p+".max_calls", "%d is negative (0: no limit)", t.MaxCalls)
		}
		if t.Auth != nil && (t.Auth.Username == "" || t.Auth.Password == "") {
			v.fail(p+".auth", "username and password are both needed")
		}
		if t.Register && t.Auth == nil {
			v.fail(p+".register", "registering to a carrier needs auth")
		}
	}
	for i, r := range c.Routes {
		p := "routes." + strconv.Itoa(i)
		if r.Prefix == "" || strings.Trim(strings.TrimPrefix(r.Prefix, "+"), "0123456789") != "" {
			v.fail(p+".prefix", "%q is not +digits", r.Prefix)
		}
		if len(r.Trunks) == 0 {
			v.fail(p+".trunks", "a route needs a trunk")
		}
		for j, t := range r.Trunks {
			if !names[t] {
				v.fail(p+".trunks."+strconv.Itoa(j), "no trunk is named %q", t)
			}
		}
	}
}

func (v *validator) checkSecurity(c *Config) {
	s := c.Security
	for i, p := range s.Trusted {
		if _, err := netip.ParsePrefix(p); err != nil {
			v.fail("security.trusted."+strconv.Itoa(i), "%q is not a CIDR prefix", p)
		}
	}
	if s.Action != "drop" && s.Action != "reject" {
		v.fail("security.action", "%q is not drop or reject", s.Action)
	}
	r := s.RateLimit
	switch {
	case r.Rate < 0:
		v.fail("security.rate_limit.rate", "%v is negative (0: no limit)", r.Rate)
	case r.Rate > 0 && r.Burst < 1:
		v.fail("security.rate_limit.burst", "%v: a source must be allowed at least 1 request at once", r.Burst)
	}
	if r.Rate > 0 && r.BanTime.D() < time.Second {
		v.fail("security.rate_limit.ban_time", "%v is shorter than 1s", r.BanTime.D())
	}
	if r.MaxSources < 1000 {
		v.fail("security.rate_limit.max_sources", "%d is below 1000", r.MaxSources)
	}
	a := s.AuthFailures
	if a.PerSource < 0 {
		v.fail("security.auth_failures.per_source", "%d is negative (0: off)", a.PerSource)
	}
	if a.PerUser < 0 {
		v.fail("security.auth_failures.per_user", "%d is negative (0: off)", a.PerUser)
	}
	if a.Window.D() < time.Second {
		v.fail("security.auth_failures.window", "%v is shorter than 1s", a.Window.D())
	}
	if a.BanTime.D() < time.Second {
		v.fail("security.auth_failures.ban_time", "%v is shorter than 1s", a.BanTime.D())
	}
	for i, p := range s.Scanners {
		if strings.TrimSpace(p) == "" {
			v.fail("security.scanners."+strconv.Itoa(i), "an empty pattern would match nothing")
		}
	}
	if s.Toll.MaxCalls < 0 {
		v.fail("security.toll.max_calls", "%d is negative (0: no limit)", s.Toll.MaxCalls)
	}
	if s.Toll.CallsPerHour < 0 {
		v.fail("security.toll.calls_per_hour", "%d is negative (0: no limit)", s.Toll.CallsPerHour)
	}
	for i, u := range c.Users {
		if u.Toll == nil {
			continue
		}
		p := "users." + strconv.Itoa(i) + ".toll"
		if u.Toll.MaxCalls != nil && *u.Toll.MaxCalls < 0 {
			v.fail(p+".max_calls", "%d is negative (0: no limit)", *u.Toll.MaxCalls)
		}
		if u.Toll.CallsPerHour != nil && *u.Toll.CallsPerHour < 0 {
			v.fail(p+".calls_per_hour", "%d is negative (0: no limit)", *u.Toll.CallsPerHour)
		}
	}
}

// lineOf finds the line of the deepest node on path that exists in the document.
func lineOf(root *yaml.Node, path []string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return line
			}
		case yaml.SequenceNode:
			i, err := strconv.Atoi(p)
			if err != nil || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
		default:
			return line
		}
	}
	return line
}

// hostPort reports whether a is HOST or HOST:PORT (an IPv6 host in brackets).
func hostPort(a string) bool {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		host = a
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return false
	}
	return host != "" && !strings.ContainsAny(host, " ;@<>/")
}

// checkNodes: sip.nodes needs a Redis store and a shared secret; this
// node's address must be one of its listeners and one of sip.nodes.
func (v *validator) checkNodes(c *Config) {
	for i, p := range c.SIP.EdgeProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			v.fail("sip.edge_proxies."+strconv.Itoa(i), "%q is not a CIDR prefix", p)
		}
	}
	s := &c.SIP
	tlsNodes := s.NodeTransport == "tls"
	switch {
	case s.NodeTransport != "" && !tlsNodes:
		v.fail("sip.node_transport", "%q: give tls, or leave it out (the nodes' addresses say tcp or udp)", s.NodeTransport)
	case tlsNodes && len(s.Nodes) == 0:
		v.fail("sip.node_transport", "is only used with sip.nodes (the addresses of every node of the service)")
	case tlsNodes && s.NodeCA == "":
		v.fail("sip.node_ca", "required with sip.node_transport tls: the nodes' certificates are always verified")
	case tlsNodes:
		if pem, err := os.ReadFile(s.NodeCA); err != nil {
			v.fail("sip.node_ca", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			v.fail("sip.node_ca", "%s holds no PEM certificate", s.NodeCA)
		}
	case s.NodeCA != "":
		v.fail("sip.node_ca", "is only used with sip.node_transport tls")
	}
	switch {
	case (s.NodeCert != "" || s.NodeKey != "") && !tlsNodes:
		key := "sip.node_cert"
		if s.NodeCert == "" {
			key = "sip.node_key"
		}
		v.fail(key, "is only used with sip.node_transport tls")
	case s.NodeCert != "" && s.NodeKey == "":
		v.fail("sip.node_key", "required with sip.node_cert")
	case s.NodeKey != "" && s.NodeCert == "":
		v.fail("sip.node_cert", "required with sip.node_key")
	case s.NodeCert != "":
		if _, err := tls.LoadX509KeyPair(s.NodeCert, s.NodeKey); err != nil {
			v.fail("sip.node_cert", "%v", err)
		}
	}
	if len(s.Nodes) == 0 {
		if s.NodeID != "" {
			v.fail("sip.node_id", "is only used with sip.nodes (the addresses of every node of the service)")
		}
		if s.NodeAddress != "" {
			v.fail("sip.node_address", "is only used with sip.nodes (the addresses of every node of the service)")
		}
		return
	}
	if c.Registrar.Store == "memory" {
		v.fail("sip.nodes", "needs a Redis registrar.store: the nodes share their bindings and heartbeats there")
	}
	if s.AuthSecret == "" {
		v.fail("sip.nodes", "needs sip.auth_secret, the same on every node: it keys the flow tokens the nodes exchange")
	}
	if s.NodeID == "" {
		host, err := os.Hostname()
		if err != nil || !validNodeID(host) {
			v.fail("sip.node_id", "the host name %q cannot be a node id: give one (letters, digits, '.', '_', '-')", host)
		}
		s.NodeID = host
	} else if !validNodeID(s.NodeID) {
		v.fail("sip.node_id", "%q: use 1-64 letters, digits, '.', '_' or '-'", s.NodeID)
	}
	seen := map[netip.AddrPort]bool{}
	var nodes []Listener
	for i, a := range s.Nodes {
		l, err := nodeAddress(a, tlsNodes)
		if err != nil {
			v.fail("sip.nodes."+strconv.Itoa(i), "%v", err)
			continue
		}
		if seen[l.Addr] {
			v.fail("sip.nodes."+strconv.Itoa(i), "%s is listed twice", l.Addr)
		}
		seen[l.Addr] = true
		nodes = append(nodes, l)
	}
	if s.NodeAddress == "" {
		want := "tcp"
		if tlsNodes {
			want = "tls"
		}
		for _, l := range c.Listeners() {
			if l.Transport == want && !l.Addr.Addr().IsUnspecified() {
				s.NodeAddress = l.String()
				break
			}
		}
		if s.NodeAddress == "" {
			v.fail("sip.node_address", "required: no %s listener on a specific address to take it from", want)
			return
		}
	}
	self, err := nodeAddress(s.NodeAddress, tlsNodes)
	if err != nil {
		v.fail("sip.node_address", "%v", err)
		return
	}
	listened := false
	for _, l := range c.Listeners() {
		if l.Transport == self.Transport && l.Addr.Port() == self.Addr.Port() && (l.Addr.Addr() == self.Addr.Addr() || l.Addr.Addr().IsUnspecified()) {
			listened = true
		}
	}
	if !listened {
		v.fail("sip.node_address", "%s is not one of sip.listen", self)
	}
	if !slices.Contains(nodes, self) {
		v.fail("sip.node_address", "%s is not in sip.nodes (list every node there, this one too)", self)
	}
}

// nodeAddress parses a node's address: udp: or tcp:, or tls: only (with
// sip.node_transport tls, so that no node is reached in the clear), on an
// IP address another node can reach.
func nodeAddress(s string, tlsNodes bool) (Listener, error) {
	l, err := ParseListener(s)
	if err != nil {
		return l, err
	}
	switch {
	case tlsNodes && l.Transport != "tls":
		return l, fmt.Errorf("%q: with sip.node_transport tls, nodes talk over tls", s)
	case !tlsNodes && l.Transport != "tcp" && l.Transport != "udp":
		return l, fmt.Errorf("%q: nodes talk over tcp or udp (or tls: see sip.node_transport)", s)
	}
	if l.Addr.Addr().IsUnspecified() || l.Addr.Port() == 0 {
		return l, fmt.Errorf("%q: give the IP address and port the other nodes reach", s)
	}
	return l, nil
}

func validNodeID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
