package alias

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/wire"
)

// FuzzAlias: whatever Contact a phone sends, Add leaves at most sori's
// own alias in it, and that alias, written out and read back as a
// Request-URI, leads to the message's source again; Take of any URI
// never panics and always removes the alias.
func FuzzAlias(f *testing.F) {
	for _, c := range []string{
		"sip:alice@192.168.1.20:5060", "sip:alice@203.0.113.5:40000", "sip:alice@10.0.0.1;alias=198.51.100.1~5060~1;as=forged",
		"sip:alice@[fd00::1]:5060;transport=tcp", "sips:bob@h;alias=evil.example~5060~1", "sip:alice@h;alias=203.0.113.5~70000~1",
		"sip:alice@h;alias=203.0.113.5~5060", "sip:h;alias=~~;alias=1.2.3.4~1~9", "sip:alice@h;alias=203.0.113.5~+0040000~6",
	} {
		f.Add(c, []byte{203, 0, 113, 5}, uint16(40000), "UDP")
		f.Add(c, []byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}, uint16(5060), "wss")
	}
	f.Fuzz(func(t *testing.T, contact string, ip []byte, port uint16, transport string) {
		// Only a Contact the transport hands up: one sip/wire passes.
		msg := "INVITE sip:bob@sori.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@sori.test>;tag=1\r\n" +
			"To: <sip:bob@sori.test>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <" + contact + ">\r\nContent-Length: 0\r\n\r\n"
		if _, fault := wire.Check([]byte(msg)); fault != nil {
			return
		}
		var u sip.Uri
		if err := sip.ParseUri(contact, &u); err != nil {
			return
		}
		taken := u
		taken.UriParams = u.UriParams.Clone()
		if _, ok := Take(&taken); ok && Has(taken) {
			t.Fatalf("Take left an alias in %s", taken.String())
		}
		addr, ok := netip.AddrFromSlice(ip)
		if !ok || port == 0 {
			return
		}
		src := netip.AddrPortFrom(addr.Unmap(), port)
		c := &sip.ContactHeader{Address: u}
		c.Address.UriParams = u.UriParams.Clone()
		Add(c, src.String(), transport)
		if c.Address.Wildcard {
			return
		}
		if !Has(c.Address) {
			return // reachable as it says
		}
		var back sip.Uri
		if err := sip.ParseUri(c.Address.String(), &back); err != nil {
			t.Fatalf("Contact %s with the alias does not parse: %v", c.Address.String(), err)
		}
		a, ok := Take(&back)
		if !ok || a.Addr != src.String() {
			t.Fatalf("alias of %s in %s leads to %+v %v", src, c.Address.String(), a, ok)
		}
		want := map[string]string{"TCP": "TCP", "TLS": "TLS", "WS": "WS", "WSS": "WSS"}[strings.ToUpper(transport)]
		if want == "" {
			want = "UDP"
		}
		if a.Transport != want {
			t.Fatalf("transport %q came back as %s", transport, a.Transport)
		}
	})
}
