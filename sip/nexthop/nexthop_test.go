package nexthop

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestNextHop(t *testing.T) {
	for _, tt := range []struct{ uri, transport, dest string }{
		{"sip:bob@192.0.2.1", "UDP", "192.0.2.1:5060"},
		{"sip:bob@192.0.2.1:5070;transport=tcp", "TCP", "192.0.2.1:5070"},
		{"sip:bob@192.0.2.1;transport=TLS", "TLS", "192.0.2.1:5061"},
		{"sips:bob@192.0.2.1", "TLS", "192.0.2.1:5061"},
		{"sips:bob@[2001:db8::1]:5063", "TLS", "[2001:db8::1]:5063"},
		{"sip:gw.example.com", "UDP", "gw.example.com:5060"},
	} {
		var u sip.Uri
		if err := sip.ParseUri(tt.uri, &u); err != nil {
			t.Fatal(err)
		}
		tr := Transport(u)
		if d := Dest(u, tr); tr != tt.transport || d != tt.dest {
			t.Errorf("%s: %s %s, want %s %s", tt.uri, tr, d, tt.transport, tt.dest)
		}
	}
}
