package config

import (
	"strings"
	"testing"
)

func TestNodes(t *testing.T) {
	base := `sip:
  listen: ["udp:10.0.0.1:5060", "tcp:10.0.0.1:5060"]
  auth_secret: shared-secret-0123456789
%s
registrar:
  store: redis-cluster://10.0.0.9:7000
`
	parse := func(sip string) (*Config, error) {
		return Parse("n.yaml", []byte(strings.Replace(base, "%s", sip, 1)))
	}
	c, err := parse(`  node_id: sori-a
  nodes: ["tcp:10.0.0.1:5060", "tcp:10.0.0.2:5060"]`)
	if err != nil {
		t.Fatal(err)
	}
	if c.SIP.NodeAddress != "tcp:10.0.0.1:5060" || c.SIP.NodeID != "sori-a" {
		t.Fatalf("node %q at %q: want the first tcp listener", c.SIP.NodeID, c.SIP.NodeAddress)
	}
	if c, err := parse(`  nodes: ["tcp:10.0.0.1:5060"]`); err != nil || c.SIP.NodeID == "" {
		t.Fatalf("node id from the host name: %q %v", c.SIP.NodeID, err)
	}
	for _, tt := range []struct {
		name, sip, want string
	}{
		{"address not listened on", `  node_address: tcp:10.0.0.1:5070
  nodes: ["tcp:10.0.0.1:5070"]`, "n.yaml:4: sip.node_address: tcp:10.0.0.1:5070 is not one of sip.listen"},
		{"not in the list", `  node_address: tcp:10.0.0.1:5060
  nodes: ["tcp:10.0.0.2:5060"]`, "sip.node_address: tcp:10.0.0.1:5060 is not in sip.nodes"},
		{"a bad entry", `  nodes: ["tcp:10.0.0.1:5060", "tls:10.0.0.2:5061"]`, "n.yaml:4: sip.nodes.1: \"tls:10.0.0.2:5061\": nodes talk over tcp or udp"},
		{"listed twice", `  nodes: ["tcp:10.0.0.1:5060", "tcp:10.0.0.1:5060"]`, "sip.nodes.1: 10.0.0.1:5060 is listed twice"},
		{"a bad id", `  node_id: "a b"
  nodes: ["tcp:10.0.0.1:5060"]`, "n.yaml:4: sip.node_id: \"a b\""},
		{"node_id alone", `  node_id: sori-a`, "sip.node_id: is only used with sip.nodes"},
		{"edge proxy not a prefix", `  edge_proxies: [10.0.0.300/32]`, "n.yaml:4: sip.edge_proxies.0: \"10.0.0.300/32\" is not a CIDR prefix"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(tt.sip)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct{ name, yaml, want string }{
		{"memory store", "sip:\n  auth_secret: shared-secret-0123456789\n  nodes: [\"tcp:127.0.0.1:5060\"]\n", "sip.nodes: needs a Redis registrar.store"},
		{"no secret", "sip:\n  nodes: [\"tcp:127.0.0.1:5060\"]\nregistrar:\n  store: redis://127.0.0.1:6379/0\n", "sip.nodes: needs sip.auth_secret"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("n.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}
