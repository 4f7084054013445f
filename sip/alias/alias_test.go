package alias

import (
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/siptest"
)

func TestAddAlias(t *testing.T) {
	tests := []struct {
		name, contact, src, transport, want string
	}{
		{"private contact over UDP", "sip:alice@192.168.1.20:5060", "203.0.113.5:40000", "UDP", "sip:alice@192.168.1.20:5060;alias=203.0.113.5~40000~1"},
		{"reachable as it says", "sip:alice@203.0.113.5:40000", "203.0.113.5:40000", "UDP", "sip:alice@203.0.113.5:40000"},
		{"no port means 5060", "sip:alice@203.0.113.5", "203.0.113.5:5060", "UDP", "sip:alice@203.0.113.5"},
		{"TCP always names the connection", "sip:alice@203.0.113.5:40000;transport=tcp", "203.0.113.5:40000", "TCP", "sip:alice@203.0.113.5:40000;transport=tcp;alias=203.0.113.5~40000~2"},
		{"the sender's own alias is replaced", "sip:alice@10.0.0.1;alias=198.51.100.1~5060~1;as=forged", "203.0.113.5:40000", "UDP", "sip:alice@10.0.0.1;alias=203.0.113.5~40000~1"},
		{"the sender's own alias is removed", "sip:alice@203.0.113.5:40000;alias=10.0.0.9~6379~2", "203.0.113.5:40000", "UDP", "sip:alice@203.0.113.5:40000"},
		{"IPv6 source", "sip:alice@[fd00::1]:5060", "[2001:db8::5]:40000", "UDP", "sip:alice@[fd00::1]:5060;alias=2001:db8::5~40000~1"},
		{"no host: nothing to alias", "AA:", "48.48.48.48:40043", "UDP", "aa:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &sip.ContactHeader{Address: siptest.URI(t, tt.contact)}
			Add(c, tt.src, tt.transport)
			if got := c.Address.String(); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestTakeAlias(t *testing.T) {
	tests := []struct {
		name, in, rest string
		want           Alias
		ok             bool
	}{
		{"UDP", "sip:alice@192.168.1.20:5060;alias=203.0.113.5~40000~1", "sip:alice@192.168.1.20:5060", Alias{"203.0.113.5:40000", "UDP"}, true},
		{"TCP", "sip:alice@192.168.1.20;transport=tcp;alias=203.0.113.5~40000~2", "sip:alice@192.168.1.20;transport=tcp", Alias{"203.0.113.5:40000", "TCP"}, true},
		{"IPv6", "sip:alice@[fd00::1];alias=2001:db8::5~40000~1", "sip:alice@[fd00::1]", Alias{"[2001:db8::5]:40000", "UDP"}, true},
		{"none", "sip:alice@192.168.1.20", "sip:alice@192.168.1.20", Alias{}, false},
		{"with its seal", "sip:alice@192.168.1.20;alias=203.0.113.5~40000~3;as=abc", "sip:alice@192.168.1.20", Alias{"203.0.113.5:40000", "TLS"}, true},
		{"not an IP: removed, not followed", "sip:alice@h;alias=evil.example~5060~1", "sip:alice@h", Alias{}, false},
		{"bad port", "sip:alice@h;alias=203.0.113.5~70000~1", "sip:alice@h", Alias{}, false},
		{"too few fields", "sip:alice@h;alias=203.0.113.5~5060", "sip:alice@h", Alias{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := siptest.URI(t, tt.in)
			got, ok := Take(&u)
			if ok != tt.ok || got != tt.want || u.String() != tt.rest {
				t.Fatalf("got %+v %v, URI %s; want %+v %v, %s", got, ok, u.String(), tt.want, tt.ok, tt.rest)
			}
		})
	}
}
