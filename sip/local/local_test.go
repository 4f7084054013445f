package local

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestIdentity(t *testing.T) {
	id := New("Sori.Test", "127.0.0.1:5060", "[::1]:5060", "203.0.113.5")
	tests := []struct {
		host string
		want bool
	}{
		{"sori.test", true},
		{"SORI.TEST", true},
		{"127.0.0.1", true},
		{"::1", true},
		{"[::1]", true},
		{"0:0::1", true}, // same address, other spelling
		{"203.0.113.5", true},
		{"example.org", false},
		{"127.0.0.2", false},
		{"10.0.0.1", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := id.IsLocalHost(tt.host); got != tt.want {
			t.Errorf("IsLocalHost(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
	if !id.AddressedToServer(sip.Uri{Host: "127.0.0.1"}) || id.AddressedToServer(sip.Uri{User: "alice", Host: "sori.test"}) {
		t.Error("AddressedToServer: a host without user is the server, a user is not")
	}
}

func TestUnspecifiedListenAddressMeansEveryInterface(t *testing.T) {
	id := New("sori.test", "0.0.0.0:5060")
	if !id.IsLocalHost("127.0.0.1") {
		t.Error("listening on 0.0.0.0: loopback is not recognised as local")
	}
}

func BenchmarkIsDomain(b *testing.B) {
	id := New("sori.test", "127.0.0.1:5060")
	b.ReportAllocs()
	for b.Loop() {
		if !id.IsDomain("sori.test") || id.IsDomain("other.example") {
			b.Fatal("wrong answer")
		}
	}
}
