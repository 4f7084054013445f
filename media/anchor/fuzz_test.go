package anchor

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
)

// fuzzCall is the call every fuzzed command finds in the Manager, so that
// answer, query and delete meet a live one: an offer from tag "a".
const fuzzCall = "fz"

// FuzzHandle decodes a fuzzed ng datagram and runs its command through a
// Manager with real ports on 127.0.0.1, holding one call. No panic; the
// reply encodes, an error one has a reason; and no port pair leaks: every
// pair in use belongs to a media section of a call the Manager holds.
func FuzzHandle(f *testing.F) {
	phone := netip.MustParseAddrPort("192.0.2.10:4000")
	seed := func(d ng.Dict) {
		b, err := ng.Encode("c1", d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(ng.Dict{"command": "ping"})
	seed(ng.Dict{"command": "list"})
	seed(ng.Dict{"command": "list", "limit": 1})
	seed(ng.Dict{"command": "query", "call-id": fuzzCall})
	seed(ng.Dict{"command": "delete", "call-id": fuzzCall})
	seed(ng.Dict{"command": "delete", "call-id": fuzzCall, "from-tag": "a", "via-branch": "z9hG4bK1"})
	seed(ng.Dict{"command": "answer", "call-id": fuzzCall, "from-tag": "a", "to-tag": "b", "sdp": phoneSDP(netip.MustParseAddrPort("192.0.2.20:5000"))})
	seed(ng.Dict{"command": "answer", "call-id": fuzzCall, "from-tag": "a", "to-tag": "b", "sdp": phoneSDP(phone, "m=video 0 RTP/AVP 96")})
	seed(ng.Dict{"command": "offer", "call-id": fuzzCall, "from-tag": "a", "to-tag": "b", "sdp": phoneSDP(phone, "a=rtcp-mux"), "flags": []any{"SIP-source-address", "strict-source"}, "received-from": []any{"IP4", "203.0.113.9"}})
	seed(ng.Dict{"command": "offer", "call-id": "other", "from-tag": "x", "via-branch": "z9hG4bK2", "sdp": phoneSDP(phone, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"),
		"transport protocol": "RTP/SAVP", "SDES": []any{"no-AES_CM_128_HMAC_SHA1_32", "pad"}, "ICE": "remove", "replace": []any{"origin"}, "address family": "IP6"})
	seed(ng.Dict{"command": "offer", "call-id": "other", "from-tag": "x", "sdp": phoneSDP(phone), "transport-protocol": "UDP/TLS/RTP/SAVPF", "ICE": "force", "DTLS": "passive"})
	seed(ng.Dict{"command": "offer", "call-id": "other", "from-tag": "x", "sdp": phoneSDP(phone), "media-address": "2001:db8::1"})
	if b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "sdp", "chrome.sdp")); err == nil {
		seed(ng.Dict{"command": "offer", "call-id": "webrtc", "from-tag": "x", "sdp": string(b)})
	}
	seed(ng.Dict{"command": "bogus"})
	f.Add([]byte("c1 d7:command5:offere"))
	f.Add([]byte("c1 le"))

	run := fuzzManager(f, 61000)
	f.Fuzz(func(t *testing.T, datagram []byte) {
		_, req, err := ng.Parse(datagram)
		if err != nil {
			return
		}
		run(t, req)
	})
}

// fuzzManager is a Manager on the ports lo to lo+999, and how a fuzzed
// request is run through it (see FuzzHandle).
func fuzzManager(f *testing.F, lo int) func(t *testing.T, req ng.Dict) {
	phone := netip.MustParseAddrPort("192.0.2.10:4000")
	offer := ng.Dict{"command": "offer", "call-id": fuzzCall, "from-tag": "a", "sdp": phoneSDP(phone)}
	alloc, err := ports.New(loopback, lo, lo+999) // beyond Linux's ephemeral ports
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(alloc.Close)
	m := New(Config{Advertise: []netip.Addr{advertise, advertise6}, Ports: alloc, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	f.Cleanup(m.Close)
	return func(t *testing.T, req ng.Dict) {
		m.mu.Lock()
		_, have := m.calls[fuzzCall]
		m.mu.Unlock()
		if !have {
			if res := m.Handle(context.Background(), "offer", offer, control); res.Str("result") != "ok" {
				t.Skipf("setup offer: %v", res) // ports parked in their quarantine
			}
		}
		cmd := req.Str("command")
		res := m.Handle(context.Background(), cmd, req, control)
		if _, err := ng.Encode("c1", res); err != nil {
			t.Fatalf("reply to %v does not encode: %v", req, err)
		}
		switch res.Str("result") {
		case "error":
			if r := res.Str("error-reason"); r == "" || strings.ContainsAny(r, "\r\n") {
				t.Fatalf("error reply %v", res)
			}
		case "":
			t.Fatalf("reply without a result: %v", res)
		}
		// The calls the command made go again; every pair still in use is
		// one of a call's media sections.
		m.mu.Lock()
		var others []string
		held := 0
		for id, c := range m.calls {
			if id != fuzzCall {
				others = append(others, id)
			}
			for _, l := range c.legs {
				held += len(l.medias)
			}
		}
		m.mu.Unlock()
		if in := alloc.InUse(); in != held {
			t.Fatalf("%d port pairs in use, %d held by calls, after %v", in, held, req)
		}
		for _, id := range others {
			if res := m.Handle(context.Background(), "delete", ng.Dict{"call-id": id}, control); res.Str("result") != "ok" {
				t.Fatalf("delete %q: %v", id, res)
			}
		}
	}
}

// FuzzCommand is FuzzHandle with the request's fields fuzzed one by one
// rather than its bencode: the SDP (plain, SDES, WebRTC, several
// sections), the flags and the options, for each command, against the
// live call.
func FuzzCommand(f *testing.F) {
	sdps := []string{phoneSDP(netip.MustParseAddrPort("192.0.2.10:4000")),
		phoneSDP(netip.MustParseAddrPort("192.0.2.10:4000"), "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", "m=video 4002 RTP/SAVP 96", "a=rtcp:4005"),
		strings.Replace(phoneSDP(netip.MustParseAddrPort("[2001:db8::1]:4000")), "IP4", "IP6", -1),
		bundledBrowserOffer(), twoSections(netip.MustParseAddrPort("192.0.2.10:4000"), netip.MustParseAddrPort("192.0.2.10:4002"))} // BUNDLE (bundle.go)
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "sdp", "*.sdp"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			sdps = append(sdps, string(b))
		}
	}
	for i, sdp := range sdps {
		f.Add("offer", fuzzCall, "a", "", sdp, "", "", "", "")
		f.Add("offer", "other", "x", "", sdp, "SIP-source-address,strict-source,trust-address", "RTP/SAVP", "remove", "")
		f.Add("offer", "other", "x", "", sdp, "SDES-no-AES_CM_128_HMAC_SHA1_32,pad crypto", "UDP/TLS/RTP/SAVPF", "force", "passive")
		f.Add("answer", fuzzCall, "a", "b", sdp, "", "", "", "")
		f.Add("answer", fuzzCall, "a", "b", sdp, "", "RTP/AVP", "", []string{"active", "passive", "off"}[i%3])
	}
	f.Add("query", fuzzCall, "a", "", "", "", "", "", "")
	f.Add("delete", fuzzCall, "a", "b", "", "", "", "", "")
	run := fuzzManager(f, 62000)
	f.Fuzz(func(t *testing.T, cmd, callID, fromTag, toTag, sdp, flags, proto, ice, dtls string) {
		req := ng.Dict{"command": cmd, "call-id": callID, "from-tag": fromTag, "sdp": sdp}
		if toTag != "" {
			req["to-tag"] = toTag
		}
		if flags != "" {
			var l []any
			for _, fl := range strings.Split(flags, ",") {
				l = append(l, fl)
			}
			req["flags"] = l
		}
		for k, v := range map[string]string{"transport-protocol": proto, "ICE": ice, "DTLS": dtls} {
			if v != "" {
				req[k] = v
			}
		}
		run(t, req)
	})
}
