package proxy

import "testing"

func TestCalleeEncryptionIsTheFirstTargets(t *testing.T) {
	policy := func(user, trunk string) string {
		switch {
		case trunk == "carrier":
			return "rtp"
		case user == "bob":
			return "srtp"
		}
		return ""
	}
	tests := []struct {
		name   string
		policy func(user, trunk string) string
		groups [][]target
		want   string
	}{
		{"a user's", policy, [][]target{{{user: "bob"}, {user: "bob"}}}, "srtp"},
		{"a trunk's, first of the failover groups", policy, [][]target{{{trunk: "carrier"}}, {{trunk: "other"}}}, "rtp"},
		{"neither says", policy, [][]target{{{user: "carol"}}}, ""},
		{"no policy", nil, [][]target{{{user: "bob"}}}, ""},
		{"no targets", policy, nil, ""},
		// A browser (registered over WebSocket) gets WebRTC whatever
		// its user's policy says; a phone of the same user does not.
		{"a browser", policy, [][]target{{{user: "bob", transport: "WSS"}}}, "webrtc"},
		{"a browser over plain ws, no policy", nil, [][]target{{{user: "carol", transport: "WS"}}}, "webrtc"},
		{"the user's phone over TLS", policy, [][]target{{{user: "bob", transport: "TLS"}, {user: "bob", transport: "WSS"}}}, "srtp"},
	}
	for _, tt := range tests {
		p := &Proxy{cfg: Config{Encryption: tt.policy}}
		if got := p.calleeEncryption(tt.groups); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
