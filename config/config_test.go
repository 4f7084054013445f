package config

import (
	"strings"
	"testing"
	"time"
)

func TestEmbeddedDefaultIsValid(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatalf("embedded config: %v", err)
	}
	if c.SIP.Domain != "sori.test" || c.Registrar.Store != "memory" || len(c.Users) == 0 {
		t.Fatalf("unexpected embedded config: %+v", c)
	}
	// UDP and TCP on 5060, TLS on 5061, WebSocket over TLS on 8443: what
	// make run promises phones and browsers.
	if got := c.Listeners(); len(got) != 4 || got[0].String() != "udp:127.0.0.1:5060" || got[1].String() != "tcp:127.0.0.1:5060" ||
		got[2].String() != "tls:127.0.0.1:5061" || got[3].String() != "wss:127.0.0.1:8443" || !c.SIP.TLS.SelfSigned {
		t.Fatalf("listeners = %v", got)
	}
	// Only MD5: baresip 1.0 abandons a 401 that carries any other challenge.
	if len(c.SIP.AuthAlgorithms) != 1 || c.SIP.AuthAlgorithms[0] != "MD5" {
		t.Fatalf("sip.auth_algorithms = %v, want [MD5]", c.SIP.AuthAlgorithms)
	}
	// make run starts sori-anchor there.
	if len(c.Media.Anchors) != 1 || c.Media.Anchors[0] != "127.0.0.1:22222" {
		t.Fatalf("media.anchors = %v", c.Media.Anchors)
	}
}

func TestDefaultsFillMissingKeys(t *testing.T) {
	c, err := Parse("t.yaml", []byte("sip:\n  domain: example.org\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.SIP.Domain != "example.org" {
		t.Errorf("domain = %q", c.SIP.Domain)
	}
	if c.Registrar.MaxExpires != 3600 || c.SIP.NonceTTL.D() != 300*time.Second || c.Registrar.StoreTimeout.D() != 500*time.Millisecond {
		t.Errorf("defaults not applied: %+v", c)
	}
	if len(c.Media.Anchors) != 0 || c.Media.Timeout.D() != 2*time.Second || c.Media.PingInterval.D() != 5*time.Second {
		t.Errorf("media defaults: %+v (no anchors unless configured: media end to end)", c.Media)
	}
	if len(c.SIP.AuthAlgorithms) != 1 || c.SIP.AuthAlgorithms[0] != "MD5" {
		t.Errorf("sip.auth_algorithms default = %v, want [MD5]", c.SIP.AuthAlgorithms)
	}
	sha, err := Parse("t.yaml", []byte("sip:\n  auth_algorithms: [SHA-256, MD5]\n"))
	if err != nil {
		t.Fatalf("SHA-256 on request: %v", err)
	}
	if got := sha.SIP.AuthAlgorithms; len(got) != 2 || got[0] != "SHA-256" || got[1] != "MD5" {
		t.Errorf("SHA-256 on request: sip.auth_algorithms = %v, want [SHA-256 MD5] in that order", got)
	}
	if _, err := Parse("empty.yaml", nil); err != nil {
		t.Errorf("empty file: %v", err)
	}
}

func TestValidationNamesKeyAndLine(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // substring of the error: "FILE:LINE: KEY"
	}{
		{"bad listener", "sip:\n  listen:\n    - udp:127.0.0.1:5060\n    - sctp:127.0.0.1:5060\n", "t.yaml:4: sip.listen.1"},
		{"listener without port", "sip:\n  listen: [\"udp:127.0.0.1\"]\n", "t.yaml:2: sip.listen.0"},
		{"min above max", "registrar:\n  min_expires: 600\n  max_expires: 60\n", "t.yaml:3: registrar.max_expires"},
		{"default outside range", "registrar:\n  default_expires: 10\n", "t.yaml:2: registrar.default_expires"},
		{"bad store", "registrar:\n  store: mysql\n", "t.yaml:2: registrar.store"},
		{"unknown algorithm", "sip:\n  auth_algorithms: [MD5, SHA-512]\n", "t.yaml:2: sip.auth_algorithms.1"},
		{"user without password", "users:\n  - {name: alice}\n", "t.yaml:2: users.0.password"},
		{"duplicate user", "users:\n  - {name: a, password: x}\n  - {name: a, password: y}\n", "t.yaml:3: users.1.name"},
		{"bad ha1", "users:\n  - {name: a, ha1_md5: abc, ha1_sha256: def}\n", "t.yaml:2: users.0.ha1_md5"},
		{"bad duration", "sip:\n  nonce_ttl: soon\n", "line 2"},
		{"unknown key", "sip:\n  domian: x\n", "line 2: field domian not found"},
		{"bad http", "http:\n  listen: localhost\n", "t.yaml:2: http.listen"},
		{"bad alias", "sip:\n  aliases:\n    - sbc.example:5061\n    - \"sbc example\"\n", "t.yaml:4: sip.aliases.1"},
		{"push provider type", "push:\n  providers:\n    - {name: apns, type: apns, team_id: T, key_id: K, topic: x, key_file: /nonexistent.p8}\n    - {name: x, type: carrier-pigeon}\n", "t.yaml:4: push.providers.1.type"},
		{"push key file", "push:\n  providers:\n    - {name: apns, type: apns, team_id: T, key_id: K, topic: x, key_file: /nonexistent.p8}\n", "t.yaml:3: push.providers.0.key_file"},
		{"webhook without url", "push:\n  providers: [{name: gw, type: webhook}]\n", "t.yaml:2: push.providers.0.url"},
		{"push wait", "push:\n  wait: 10m\n", "t.yaml:2: push.wait"},
		{"quality flush too rare", "quality:\n  flush_every: 1h\n", "t.yaml:2: quality.flush_every"},
		{"quality flush too often", "quality:\n  retention: 24h\n  flush_every: 1ms\n", "t.yaml:3: quality.flush_every"},
		{"nat ping method", "sip:\n  nat_ping: {method: stun}\n", "t.yaml:2: sip.nat_ping.method"},
		{"alias port", "sip:\n  aliases: [\"sbc.example:0\"]\n", "t.yaml:2: sip.aliases.0"},
		{"record_route with a port", "sip:\n  record_route: sori.example:5060\n", "t.yaml:2: sip.record_route"},
		{"record_route a URI", "sip:\n  record_route: \"sip:sori.example\"\n", "t.yaml:2: sip.record_route"},
		{"bad log level", "log:\n  level: loud\n", "t.yaml:2: log.level"},
		{"short secret", "sip:\n  auth_secret: abc\n", "t.yaml:2: sip.auth_secret"},
		{"timer_j too long", "sip:\n  timer_j: 60s\n", "t.yaml:2: sip.timer_j"},
		{"bad domain", "sip:\n  domain: \"a b\"\n", "t.yaml:2: sip.domain"},
		{"anchor without port", "media:\n  anchors:\n    - 127.0.0.1:22222\n    - 127.0.0.1\n", "t.yaml:4: media.anchors.1"},
		{"anchor by name", "media:\n  anchors: [\"anchor.example:22222\"]\n", "t.yaml:2: media.anchors.0"},
		{"ng timeout too short", "media:\n  timeout: 10ms\n", "t.yaml:2: media.timeout"},
		{"ping too often", "media:\n  ping_interval: 100ms\n", "t.yaml:2: media.ping_interval"},
		{"failover too soon", "media:\n  failover_after: 200ms\n", "t.yaml:2: media.failover_after"},
		{"bad media encryption", "media:\n  encryption: sdes\n", "t.yaml:2: media.encryption: \"sdes\": give pass, srtp or rtp"},
		{"bad user encryption", "users:\n  - {name: a, password: x}\n  - {name: b, password: y, encryption: on}\n", "t.yaml:3: users.1.encryption"},
		{"bad prefix", "networks:\n  - name: carrier-a\n    prefixes: [\"10.0.0.0/8\", \"10.1.2.3\"]\n", "t.yaml:3: networks.0.prefixes.1"},
		{"bad plmn", "networks:\n  - name: carrier-a\n    plmns: [\"4500\"]\n", "t.yaml:3: networks.0.plmns.0"},
		{"network twice", "networks:\n  - {name: a, prefixes: [\"10.0.0.0/8\"]}\n  - {name: a, prefixes: [\"11.0.0.0/8\"]}\n", "t.yaml:3: networks.1.name"},
		{"network without anything", "networks:\n  - {name: a}\n", "t.yaml:2: networks.0"},
		{"bad user number", "users:\n  - {name: a, password: x, numbers: [\"01011112222\"]}\n", "t.yaml:2: users.0.numbers.0"},
		{"number owned twice", "users:\n  - {name: a, password: x, numbers: [\"+821011112222\"]}\n  - {name: b, password: y, numbers: [\"+821011112222\"]}\n", "t.yaml:3: users.1.numbers.0"},
		{"gateway address", "trunks:\n  - name: carrier-a\n    gateways:\n      - {address: \"127.0.0.1:5070\"}\n", "t.yaml:4: trunks.0.gateways.0.address"},
		{"trunks without an anchor", "trunks:\n  - name: a\n    gateways: [{address: \"udp:127.0.0.1:5070\"}]\n", "t.yaml:1: trunks: trunk calls are always anchored"},
		{"trunk without gateway", "trunks:\n  - name: carrier-a\n", "t.yaml:2: trunks.0"},
		{"acl", "trunks:\n  - name: a\n    gateways: [{address: \"udp:127.0.0.1:5070\"}]\n    inbound_acl: [\"127.0.0.1\"]\n", "t.yaml:4: trunks.0.inbound_acl.0"},
		{"register without auth", "trunks:\n  - name: a\n    gateways: [{address: \"udp:127.0.0.1:5070\"}]\n    register: true\n", "t.yaml:4: trunks.0.register"},
		{"route to no trunk", "routes:\n  - {prefix: \"+82\", trunks: [carrier-z]}\n", "t.yaml:2: routes.0.trunks.0"},
		{"route prefix", "routes:\n  - {prefix: \"82x\", trunks: []}\n", "t.yaml:2: routes.0.prefix"},
		{"trusted not a prefix", "security:\n  trusted:\n    - 10.0.0.0/8\n    - 10.1.2.3\n", "t.yaml:4: security.trusted.1"},
		{"unknown action", "security:\n  action: tarpit\n", "t.yaml:2: security.action"},
		{"negative rate", "security:\n  rate_limit:\n    rate: -1\n", "t.yaml:3: security.rate_limit.rate"},
		{"no burst", "security:\n  rate_limit: {rate: 10, burst: 0}\n", "t.yaml:2: security.rate_limit.burst"},
		{"short rate ban", "security:\n  rate_limit:\n    ban_time: 10ms\n", "t.yaml:3: security.rate_limit.ban_time"},
		{"few sources", "security:\n  rate_limit:\n    max_sources: 10\n", "t.yaml:3: security.rate_limit.max_sources"},
		{"negative per_source", "security:\n  auth_failures:\n    per_source: -3\n", "t.yaml:3: security.auth_failures.per_source"},
		{"short window", "security:\n  auth_failures:\n    window: 0s\n", "t.yaml:3: security.auth_failures.window"},
		{"empty scanner pattern", "security:\n  scanners: [sipvicious, \"\"]\n", "t.yaml:2: security.scanners.1"},
		{"negative toll", "security:\n  toll:\n    calls_per_hour: -1\n", "t.yaml:3: security.toll.calls_per_hour"},
		{"negative user toll", "users:\n  - name: a\n    password: x\n    toll: {max_calls: -2}\n", "t.yaml:4: users.0.toll.max_calls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("no error for:\n%s", tt.yaml)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestSecurityDefaultsAndOverrides(t *testing.T) {
	c, err := Parse("t.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Security
	if s.Action != "drop" || s.RateLimit.Rate != 1000 || s.RateLimit.Burst != 2000 || s.AuthFailures.PerSource != 20 ||
		s.Toll.MaxCalls != 10 || len(s.Scanners) < 9 || len(s.Trusted) != 0 {
		t.Fatalf("security defaults: %+v", s)
	}
	c, err = Parse("t.yaml", []byte("security:\n  scanners: []\n  trusted: [\"127.0.0.1/32\"]\nusers:\n  - {name: a, password: x, toll: {max_calls: 0}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Security.Scanners) != 0 || len(c.Security.Trusted) != 1 {
		t.Fatalf("scanners %v, trusted %v", c.Security.Scanners, c.Security.Trusted)
	}
	if tl := c.Users[0].Toll; tl == nil || tl.MaxCalls == nil || *tl.MaxCalls != 0 || tl.CallsPerHour != nil {
		t.Fatalf("user toll %+v", tl)
	}
}

func TestParseListener(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"udp:127.0.0.1:5060", "udp:127.0.0.1:5060", true},
		{"TCP:[::1]:5070", "tcp:[::1]:5070", true},
		{"udp:localhost:5060", "", false},
		{"tls:127.0.0.1:5061", "tls:127.0.0.1:5061", true},
		{"wss:127.0.0.1:8443", "wss:127.0.0.1:8443", true},
		{"sctp:127.0.0.1:5060", "", false},
		{"127.0.0.1:5060", "", false},
	}
	for _, tt := range tests {
		l, err := ParseListener(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("%q: err = %v", tt.in, err)
			continue
		}
		if tt.ok && l.String() != tt.want {
			t.Errorf("%q -> %q, want %q", tt.in, l.String(), tt.want)
		}
	}
}

func TestEncryptionFor(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte("media:\n  anchors: [\"127.0.0.1:22222\"]\n  encryption: srtp\n"+
		"users:\n  - {name: a, password: x, encryption: rtp}\n  - {name: b, password: y}\n  - {name: c, password: z, encryption: pass}\n"+
		"trunks:\n  - name: carrier\n    gateways: [{address: \"udp:192.0.2.1:5060\"}]\n    encryption: rtp\n  - name: secure\n    gateways: [{address: \"udp:192.0.2.2:5060\"}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ user, trunk, want string }{
		{"a", "", "rtp"}, {"b", "", "srtp"}, {"c", "", ""}, {"nobody", "", "srtp"},
		{"", "carrier", "rtp"}, {"", "secure", "srtp"},
	} {
		if got := cfg.EncryptionFor(tt.user, tt.trunk); got != tt.want {
			t.Errorf("EncryptionFor(%q, %q) = %q, want %q", tt.user, tt.trunk, got, tt.want)
		}
	}
	def, _ := Parse("t.yaml", nil)
	if got := def.EncryptionFor("alice", ""); got != "" {
		t.Errorf("default: %q, want pass", got)
	}
}
