package main

import (
	"log/slog"
	"os"
	"testing"

	"github.com/sori-voice/sori/config"
)

// Without sip.nodes, each sori process on a host owns its saved calls
// under a name of its own (host and first listen address), the same when
// it starts again; with sip.nodes, under its node id.
func TestDialogOwner(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name:", err)
	}
	log := slog.New(slog.DiscardHandler)
	cfg := func(id string, listen ...string) *config.Config {
		c := &config.Config{}
		c.SIP.NodeID, c.SIP.Listen, c.SIP.KeepDialogs = id, listen, true
		return c
	}
	one := cfg("", "udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
	two := cfg("", "udp:127.0.0.1:5070")
	if got, want := dialogOwner(one, log), host+"/udp:127.0.0.1:5060"; got != want {
		t.Fatalf("owner %q, want %q", got, want)
	}
	if dialogOwner(one, log) == dialogOwner(two, log) {
		t.Fatal("two processes on one host share an owner")
	}
	if again := cfg("", "udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"); dialogOwner(again, log) != dialogOwner(one, log) {
		t.Fatal("the owner changed across a restart on the same configuration")
	}
	if got := legacyOwner(one, dialogOwner(one, log)); got != host {
		t.Fatalf("legacy owner %q, want the host name %q", got, host)
	}
	node := cfg("sori-b", "udp:10.0.0.2:5060")
	if got := dialogOwner(node, log); got != "sori-b" {
		t.Fatalf("owner %q with sip.node_id, want sori-b", got)
	}
	if got := legacyOwner(node, "sori-b"); got != "" {
		t.Fatalf("legacy owner %q with sip.node_id, want none", got)
	}
}
