package proxy

import (
	"io"
	"log/slog"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/chain"
)

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

// With the offer in the callee's 2xx, the caller is the side the offer
// goes to: a browser over WebSocket gets WebRTC, a phone its own user's
// or trunk's media.encryption ("": the callee's offer's profile).
func TestCallerEncryptionForADelayedOffer(t *testing.T) {
	policy := func(user, trunk string) string {
		switch {
		case trunk == "carrier":
			return "rtp"
		case user == "alice":
			return "srtp"
		}
		return ""
	}
	tests := []struct {
		name      string
		policy    func(user, trunk string) string
		caller    chain.Caller
		transport string
		want      string
	}{
		{"a user's", policy, chain.Caller{User: "alice"}, "UDP", "srtp"},
		{"a trunk's", policy, chain.Caller{Trunk: "carrier"}, "UDP", "rtp"},
		{"neither says", policy, chain.Caller{User: "carol"}, "TCP", ""},
		{"no policy", nil, chain.Caller{User: "alice"}, "UDP", ""},
		{"a browser", policy, chain.Caller{User: "alice"}, "WSS", "webrtc"},
		{"a browser, no policy", nil, chain.Caller{User: "carol"}, "WS", "webrtc"},
	}
	for _, tt := range tests {
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "bob", Host: "sori.test"})
		req.SetTransport(tt.transport)
		p := &Proxy{cfg: Config{Encryption: tt.policy}}
		if got := p.senderEncryption(&chain.Request{Request: req, Caller: tt.caller}); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// A re-INVITE without SDP: its sender is offered what it last spoke.
func TestReinviteSenderEncryption(t *testing.T) {
	const avp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
	const savp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n"
	tests := []struct {
		name      string
		last      string // the sender's last SDP; "": none
		transport string
		want      string
	}{
		{"plain phone", avp, "UDP", "rtp"},
		{"SRTP phone", savp, "TLS", "srtp"},
		{"browser", avp, "WSS", "webrtc"},
		{"nothing noted", "", "UDP", ""},
	}
	for _, tt := range tests {
		tb := call.New(call.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		c := tb.Begin(calls.Record{CallID: "re"}, "alice-tag")
		if tt.last != "" {
			c.SDP("alice-tag", []byte(tt.last))
		}
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "bob", Host: "192.0.2.2"})
		from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "sori.test"}, Params: sip.NewParams()}
		from.Params.Add("tag", "alice-tag")
		req.AppendHeader(from)
		req.SetTransport(tt.transport)
		if got := reSenderEncryption(c, req); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
