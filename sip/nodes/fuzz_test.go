package nodes

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// FuzzTokenOpen: any Route user part opens as a flow only when it is a
// token minted for that node, naming a flow it can serve; Mint and Open
// round trip for every served flow.
func FuzzTokenOpen(f *testing.F) {
	tk := NewTokens(secret)
	for _, fl := range []Flow{{"TCP", "198.51.100.7:40112"}, {"udp", "[2001:db8::7]:5060"}, {"WSS", "203.0.113.9:443"}, {"SCTP", "198.51.100.7:5060"}, {"UDP", "phone.example:5060"}, {"TCP", ""}} {
		tok := tk.Mint("node-b", fl)
		f.Add("node-b", tok, fl.Transport, fl.Addr)
		f.Add("node-b", strings.ToUpper(tok), fl.Transport, fl.Addr)
		f.Add("node-b", tok[:len(tok)-1], fl.Transport, fl.Addr)
	}
	for _, s := range []string{"", "f1", "f1!!!!", "f1aaaa", "bob", "f1" + strings.Repeat("a", 4000)} {
		f.Add("node-b", s, "UDP", "192.0.2.1:5060")
	}
	f.Fuzz(func(t *testing.T, node, token, transport, addr string) {
		if fl, ok := tk.Open(node, token); ok {
			if !servedTransport(fl.Transport) {
				t.Fatalf("opened a flow on %q", fl.Transport)
			}
			if _, err := netip.ParseAddrPort(fl.Addr); err != nil {
				t.Fatalf("opened a flow to %q", fl.Addr)
			}
		}
		want := Flow{Transport: strings.ToUpper(transport), Addr: addr}
		got, ok := tk.Open(node, tk.Mint(node, Flow{Transport: transport, Addr: addr}))
		_, err := netip.ParseAddrPort(addr)
		if served := servedTransport(want.Transport) && err == nil; ok != served || ok && got != want {
			t.Fatalf("Open(Mint(%+v)) = %+v %v", want, got, ok)
		}
	})
}

// FuzzVerify: any message from a node's address verifies only when it
// carries this service's signature over its exact bytes, once; a message
// signed as the transport signs it verifies, once.
func FuzzVerify(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	peers := []Address{{Addr: netip.MustParseAddrPort("10.0.0.1:5060")}, {Addr: netip.MustParseAddrPort("10.0.0.2:5060")}}
	signer := func() *Signer {
		s := NewSigner(secret, peers[1], peers)
		s.now = func() time.Time { return now }
		return s
	}
	for _, raw := range []string{signedInvite, signedRinging, "\r\n\r\n", "INVITE sip:a@b SIP/2.0\r\n\r\n"} {
		f.Add(seal(signer(), raw), []byte(raw))
		f.Add([]byte(raw), []byte(raw))
	}
	f.Add([]byte("X-Sori-Node: t=1800000000;n=aaaaaaaaaaaaaaaaaaaa;mac=aaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"), []byte{})
	f.Fuzz(func(t *testing.T, msg, raw []byte) {
		s := signer()
		if first := s.Verify(msg); first && s.Verify(msg) {
			t.Fatal("a signature verified twice")
		}
		if !bytes.Contains(raw, crlf2) {
			return
		}
		sealed := seal(s, string(raw))
		if !s.Verify(sealed) {
			t.Fatalf("message signed as the transport signs it does not verify:\n%q", sealed)
		}
		if s.Verify(sealed) {
			t.Fatal("a signed message verified twice")
		}
	})
}
