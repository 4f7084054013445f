package proxy

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/siptest"
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

// Each target is offered its own encryption: WebRTC for a browser over
// WebSocket, the user's or trunk's for the others.
func TestTargetEncryptionPerContact(t *testing.T) {
	policy := func(user, trunk string) string {
		if user == "bob" {
			return "rtp"
		}
		return ""
	}
	tests := []struct {
		policy func(user, trunk string) string
		t      target
		want   string
	}{
		{policy, target{user: "bob", transport: "WSS"}, "webrtc"},
		{policy, target{user: "bob", transport: "UDP"}, "rtp"},
		{policy, target{user: "bob", transport: "TLS"}, "rtp"},
		{nil, target{user: "bob", transport: "WS"}, "webrtc"},
		{nil, target{user: "bob", transport: "UDP"}, ""},
	}
	for _, tt := range tests {
		p := &Proxy{cfg: Config{Encryption: tt.policy}}
		if got := p.targetEncryption(tt.t); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.t, got, tt.want)
		}
	}
}

// offers is a Media that records the offers and branch deletes it gets.
type offers struct {
	mu      sync.Mutex
	offered []string // encryption, via-branch, SDP's m= line
	deleted []string
	done    chan struct{}
}

func (o *offers) Offer(_ context.Context, req *sip.Request, on netip.AddrPort, encryption string) (netip.AddrPort, bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := ""
	for _, l := range strings.Split(string(req.Body()), "\r\n") {
		if strings.HasPrefix(l, "m=") {
			m = l
		}
	}
	o.offered = append(o.offered, encryption+" "+viaBranch(req)+" "+m)
	req.SetBody([]byte("anchored for " + encryption))
	return on, true, nil
}
func (o *offers) Answer(context.Context, netip.AddrPort, *sip.Request, *sip.Response, string) error {
	return nil
}
func (o *offers) DeleteBranch(_ context.Context, _ netip.AddrPort, callID, fromTag, branch string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.deleted = append(o.deleted, callID+" "+fromTag+" "+branch)
	close(o.done)
	return nil
}
func (o *offers) OfferInReply(context.Context, netip.AddrPort, *sip.Request, *sip.Response, string) (netip.AddrPort, bool, error) {
	return netip.AddrPort{}, false, nil
}
func (o *offers) AnswerInAck(context.Context, netip.AddrPort, *sip.Request, bool) (bool, error) {
	return false, nil
}

// A forked call's branch whose contact wants what the call's offer gave
// shares that offer; one that wants other gets its own, made from the
// caller's SDP and naming its own Via branch. Once a branch wins, the
// anchor's legs of the others are deleted by via-branch.
func TestBranchOfferPerContactEncryption(t *testing.T) {
	const caller = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
	media := &offers{done: make(chan struct{})}
	p := newTestProxy(t, "")
	p.cfg.Media = media
	p.cfg.Encryption = func(user, trunk string) string { return "rtp" }
	tb := call.New(call.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	in := aliceInvite("fork-1", 1, caller)

	phone := target{uri: siptest.URI(t, "sip:bob@192.0.2.2:5060"), user: "bob", transport: "UDP"}
	browser := target{uri: siptest.URI(t, "sip:bob@192.0.2.3:5060"), user: "bob", transport: "WSS"}
	groups := [][]target{{phone, browser}}
	f := newFork(p, in, nil, tb.Begin(calls.Record{CallID: "fork-1"}, "alice-tag"), chain.Caller{User: "alice"}, groups, true)
	if r := p.offer(context.Background(), in, f, netip.AddrPort{}, p.calleeEncryption(groups)); r.Code != 0 {
		t.Fatal(r)
	}
	var reqs []*sip.Request
	var bs []*branch
	for _, tg := range groups[0] {
		// The test's sender has no WSS: the request goes over UDP, the
		// target is a browser's all the same.
		req, err := p.prepare(in, target{uri: tg.uri}, true, "")
		if err != nil {
			t.Fatal(err)
		}
		b := &branch{}
		if err := f.branchOffer(b, req, tg); err != nil {
			t.Fatal(err)
		}
		reqs, bs = append(reqs, req), append(bs, b)
	}
	media.mu.Lock()
	offered := append([]string(nil), media.offered...)
	media.mu.Unlock()
	ownBranch := viaBranch(reqs[1])
	want := []string{"rtp z9hG4bK-caller m=audio 4000 RTP/AVP 0", "webrtc " + ownBranch + " m=audio 4000 RTP/AVP 0"}
	if strings.Join(offered, "|") != strings.Join(want, "|") {
		t.Fatalf("offers %q, want %q", offered, want)
	}
	if string(reqs[0].Body()) != "anchored for rtp" || string(reqs[1].Body()) != "anchored for webrtc" {
		t.Fatalf("the phone's branch got %q, the browser's %q", reqs[0].Body(), reqs[1].Body())
	}
	if bs[0].media != "z9hG4bK-caller" || bs[1].media != ownBranch || ownBranch == "" || ownBranch == "z9hG4bK-caller" {
		t.Fatalf("branches' media via-branches %q, %q", bs[0].media, bs[1].media)
	}

	// The phone wins: the browser's branch's leg goes.
	f.mu.Lock()
	f.dropLostBranches(bs[0])
	f.mu.Unlock()
	<-media.done
	media.mu.Lock()
	defer media.mu.Unlock()
	if len(media.deleted) != 1 || media.deleted[0] != "fork-1 alice-tag "+ownBranch {
		t.Fatalf("branch deletes %q", media.deleted)
	}
}
