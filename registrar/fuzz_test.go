package registrar

import (
	"strconv"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// FuzzRegister sends alice's REGISTER carrying fuzzed header lines
// (Contact, Expires, Path, User-Agent, ...) through the registrar, and
// once challenged, again with her credentials. No panic, one answer each;
// a 200 lists at most MaxContacts bindings, each with an expires within
// the policy; the Contact and Expires reading alone never panics either.
func FuzzRegister(f *testing.F) {
	for _, hs := range []string{
		"Contact: <sip:alice@10.0.0.1>",
		"Contact: <sip:alice@10.0.0.1>;expires=0",
		"Contact: *\nExpires: 0",
		"Contact: *\nExpires: 10",
		"Contact: <sip:alice@10.0.0.1>\nExpires: 600",
		"Contact: <sip:alice@10.0.0.1>\nExpires: 99999999999999999999",
		"Contact: <sip:alice@10.0.0.1>;expires=abc",
		"Contact: <sip:alice@10.0.0.1>;expires=30",
		"Contact: <sip:alice@10.0.0.1>;q=0.5, <sip:alice@10.0.0.2>;q=1.000, <sip:alice@10.0.0.3>;q=1.5",
		"Contact: <sip:a@10.0.0.1>, <sip:a@10.0.0.2>, <sip:a@10.0.0.3>, <sip:a@10.0.0.4>",
		"Contact: <sip:alice@192.168.1.20:5060>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1\nUser-Agent: baresip",
		"Contact: <sip:alice@10.20.30.40:41234;transport=tcp;pn-provider=apns;pn-prid=00fc13adff78512;pn-param=ABCD1234.com.example.app.voip>;+sip.pnsreg",
		"Contact: <sip:alice@10.0.0.1;pn-provider=webpush;pn-prid=x>",
		"Contact: <sip:alice@127.0.0.1:5060>",
		"Path: <sip:10.0.0.2;lr>\nContact: <sip:alice@10.0.0.1>",
		"Contact: <tel+x:1>",
		"Contact: \"A\" <sip:alice@[2001:db8::1]:5060;ob>;expires=3600;q=0",
	} {
		f.Add(hs)
	}
	f.Fuzz(func(t *testing.T, headers string) {
		h := newHarness(t)
		r := request{user: "alice", cseq: 1, headers: strings.Split(headers, "\n")}
		msg, err := sip.ParseMessage([]byte(strings.ReplaceAll(r.raw(""), "\n", "\r\n")))
		if err != nil {
			return // the transport answers 400 before the registrar sees it
		}
		req, ok := msg.(*sip.Request)
		if !ok || req.Method != sip.REGISTER || req.CSeq() == nil || req.CallID() == nil {
			return
		}
		// What the registrar reads of a REGISTER, before authentication.
		req.SetSource("203.0.113.5:40000")
		req.SetTransport("UDP")
		u, res, _ := h.reg.parse(req, h.now)
		if res.Code == 0 {
			for _, c := range u.Contacts {
				if d := c.Expires.Sub(h.now); d < 0 || int(d.Seconds()) > policy.MaxExpires {
					t.Fatalf("binding %s expires in %v", c.Contact, d)
				}
			}
		} else if res.Code < 400 || res.Code > 599 {
			t.Fatalf("refused with %d %q", res.Code, res.Reason)
		}
		first := h.send(r.raw(""))
		if first == nil || first.StatusCode != 401 {
			return // refused before the challenge (400, 403, ...)
		}
		r.cseq++
		again, err := sip.ParseMessage([]byte(strings.ReplaceAll(r.raw(answer(t, first.GetHeader("WWW-Authenticate").Value(), "alice", "alice-secret", 1)), "\n", "\r\n")))
		if err != nil || again.(*sip.Request).CSeq() == nil {
			return
		}
		res2 := h.send(r.raw(answer(t, first.GetHeader("WWW-Authenticate").Value(), "alice", "alice-secret", 1)))
		if res2 == nil || res2.StatusCode < 200 || res2.StatusCode > 699 {
			t.Fatalf("authenticated REGISTER answered %v", res2)
		}
		if res2.StatusCode != 200 {
			return
		}
		cs := res2.GetHeaders("Contact")
		if len(cs) > policy.MaxContacts {
			t.Fatalf("%d bindings listed, at most %d kept", len(cs), policy.MaxContacts)
		}
		for _, c := range cs {
			ch, ok := c.(*sip.ContactHeader)
			if !ok {
				continue
			}
			e, ok := ch.Params.Get("expires")
			n, err := strconv.Atoi(e)
			if !ok || err != nil || n < 0 || n > policy.MaxExpires {
				t.Fatalf("binding listed with expires %q", e)
			}
		}
	})
}
