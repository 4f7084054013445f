package wire

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// msg builds a message: start line, then a base set of headers Check
// passes, where each of headers replaces the base header of the same name
// (or is added), then the blank line. "-Name" drops a base header.
func msg(start string, headers ...string) []byte {
	method, _, _ := strings.Cut(start, " ")
	if strings.HasPrefix(start, "SIP/") {
		method = "INVITE"
	}
	lines := []string{
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
		"Max-Forwards: 70",
		"From: <sip:alice@sori.test>;tag=a",
		"To: <sip:bob@sori.test>",
		"Call-ID: c1@192.0.2.1",
		"CSeq: 1 " + method,
	}
	base := len(lines)
	for _, h := range headers {
		name, _, _ := strings.Cut(h, ":")
		drop := strings.HasPrefix(name, "-")
		name = strings.TrimPrefix(name, "-")
		replaced := false
		for i, l := range lines[:base] {
			if strings.HasPrefix(l, name+":") {
				lines[i], replaced = h, true
				if drop {
					lines = append(lines[:i], lines[i+1:]...)
					base--
				}
				break
			}
		}
		if !replaced && !drop {
			lines = append(lines, h)
		}
	}
	return []byte(start + "\r\n" + strings.Join(lines, "\r\n") + "\r\n\r\n")
}

func TestCheckInfo(t *testing.T) {
	sdp, err := os.ReadFile("../../testdata/sdp/linphone.sdp")
	if err != nil {
		t.Fatal(err)
	}
	head := "INVITE sip:bob@sori.test;transport=udp SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.23:5060;rport;branch=z9hG4bK.abc123\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK.lower\r\n" +
		"From: <sip:alice@sori.test>;tag=x1\r\n" +
		"To: sip:bob@sori.test\r\n" +
		"CSeq: 314159 INVITE\r\n" +
		"Call-ID: a84b4c76e66710\r\n" +
		"Max-Forwards: 69\r\n" +
		"Content-Type: application/sdp\r\n" +
		"Content-Length: " + strconv.Itoa(len(sdp)) + "\r\n\r\n"
	data := append([]byte("\r\n\r\n"+head), sdp...)
	data = append(data, "trailing junk"...) // ignored (RFC 3261 §18.3)
	info, f := Check(data)
	if f != nil {
		t.Fatal(f)
	}
	str := func(s Span) string { return string(s.In(data)) }
	checks := []struct{ what, got, want string }{
		{"Kind", info.Kind.String(), "request"},
		{"Method", info.Method, "INVITE"},
		{"URI", str(info.URI), "sip:bob@sori.test;transport=udp"},
		{"Call-ID", str(info.CallID), "a84b4c76e66710"},
		{"CSeq method", str(info.CSeqMethod), "INVITE"},
		{"branch", str(info.Branch), "z9hG4bK.abc123"},
		{"body", string(data[info.Body:info.Length]), string(sdp)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if info.CSeq != 314159 || info.MaxForwards != 69 || info.Status != 0 || info.Start != 4 {
		t.Errorf("CSeq %d, Max-Forwards %d, Status %d, Start %d", info.CSeq, info.MaxForwards, info.Status, info.Start)
	}

	info, f = Check([]byte("SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\r\nFrom: <sip:a@b>;tag=1\r\n" +
		"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 7 INVITE\r\n\r\nbody"))
	if f != nil || info.Kind != Response || info.Status != 486 || info.Method != "" || info.MaxForwards != -1 || info.Length != info.Body+4 {
		t.Fatalf("response: %+v, %v", info, f)
	}

	// Methods outside the usual set are a copy of the input, still right.
	if info, f := Check(msg("FOO.bar sip:sori.test SIP/2.0")); f != nil || info.Method != "FOO.bar" {
		t.Fatalf("extension method: %q, %v", info.Method, f)
	}
}

// validForms are forms RFC 3261 allows (and a few it does not that phones
// send), each in a message Check must pass.
var validForms = []struct {
	name string
	data []byte
}{
	{"sips URI with password, params and escapes", msg("OPTIONS sips:al%20ice:pa$$@sori.test:5061;transport=tls;lr SIP/2.0")},
	{"URI without user", msg("OPTIONS sip:sori.test SIP/2.0")},
	{"URI params with a bracketed maddr", msg("OPTIONS sip:192.0.2.1:5060;maddr=[2001:db8::1] SIP/2.0")},
	{"lower-case version", msg("OPTIONS sip:sori.test sip/2.0")},
	{"tel URI with params", msg("INVITE tel:+1-201-555-0123;ext=1234;phone-context=sori.test SIP/2.0")},
	{"Via with LWS, IPv6 received, maddr, ttl, empty rport, quoted value", msg("OPTIONS sip:sori.test SIP/2.0",
		`Via: SIP / 2.0 / UDP 192.0.2.9 : 5062 ; received = [2001:db8::9] ; maddr=224.2.0.1;ttl=16;rport;x="q s"`)},
	{"Via with rport value", msg("OPTIONS sip:sori.test SIP/2.0", "Via: SIP/2.0/TCP host.example.com;rport=5070;branch=z9hG4bK2")},
	{"several Contacts, q and expires", msg("REGISTER sip:sori.test SIP/2.0",
		`Contact: <sip:a@192.0.2.1>;q=1.000;expires=3600, "A" <sip:a@192.0.2.2>;q=0.5, sip:a@192.0.2.3;q=0`)},
	{"Contact: *", msg("REGISTER sip:sori.test SIP/2.0", "Contact:  * ", "Expires: 0")},
	{"URI headers inside <>", msg("REFER sip:sori.test SIP/2.0", "Refer-To: <sip:b@h?Replaces=abc%40h%3Bto-tag%3D1>",
		"Contact: <sip:a@h?Subject=hi&Priority=>")},
	{"Route and Record-Route lists", msg("BYE sip:sori.test SIP/2.0",
		"Route: <sip:p1.sori.test;lr>, <sip:p2.sori.test;lr>", "Record-Route: <sip:[2001:db8::1]:5060;lr;transport=tcp>")},
	{"quoted-pair in a display name", msg("OPTIONS sip:sori.test SIP/2.0", `Contact: "a \"b\" \\ c" <sip:a@h>`)},
	{"UTF-8 display name, unquoted (liberal)", msg("OPTIONS sip:sori.test SIP/2.0", "Contact: Jörg Müller <sip:j@h>")},
	{"absolute URIs in Contact", msg("OPTIONS sip:sori.test SIP/2.0", "Contact: <mailto:a@example.com>, <http://[2001:db8::1]/x#y>")},
	{"Content-Type with a quoted parameter", msg("MESSAGE sip:sori.test SIP/2.0", `Content-Type: text/plain ; charset="utf-8"`)},
	{"empty unknown header, UTF-8 unknown header", msg("OPTIONS sip:sori.test SIP/2.0", "Subject:", "X-Name: 소리")},
	{"folds with HTAB and spaces", msg("OPTIONS sip:sori.test SIP/2.0", "X-Long: a,\r\n\tb,\r\n  c")},
	{"Authorization with quoted commas and semicolons", msg("REGISTER sip:sori.test SIP/2.0",
		`Authorization: Digest username="alice", realm="sori.test", nonce="a,b;c", uri="sip:sori.test", response="00", algorithm=MD5`)},
	{"Max-Forwards 0 with leading zeros", msg("OPTIONS sip:sori.test SIP/2.0", "Max-Forwards: 000")},
	{"no Max-Forwards (RFC 2543)", msg("OPTIONS sip:sori.test SIP/2.0", "-Max-Forwards")},
	{"Content-Length with LWS, folded", msg("OPTIONS sip:sori.test SIP/2.0", "Content-Length :\r\n 0 ")},
	{"response code 699, any reason", []byte("SIP/2.0 699 Whatever (it is) \"so\"\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>;tag=1\r\n" +
		"To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n")},
	{"IPv4-mapped IPv6 host with port", msg("OPTIONS sip:a@[::ffff:192.0.2.1]:5060 SIP/2.0")},
	{"hostname with trailing dot and underscore", msg("OPTIONS sip:a@sip_1.sori.test. SIP/2.0")},
	{"word characters in Call-ID", msg("OPTIONS sip:sori.test SIP/2.0", `Call-ID: a!%*_+`+"`"+`'~()<>:\"/[]?{}@h`)},
	// Accepted though not RFC 3261 words: UAs send them, and a Call-ID is
	// only compared as a string.
	{"base64 Call-ID", msg("OPTIONS sip:sori.test SIP/2.0", "Call-ID: YWJjZGVm==")},
	{"Call-ID with two @", msg("OPTIONS sip:sori.test SIP/2.0", "Call-ID: a@b@c")},
	{"CSeq number 0", msg("OPTIONS sip:sori.test SIP/2.0", "CSeq: 0 OPTIONS")},
	{"huge Expires means 2**32-1", msg("OPTIONS sip:sori.test SIP/2.0", "Expires: 99999999999999999999999999")},
	{"From in addr-spec form with header params", msg("OPTIONS sip:sori.test SIP/2.0", "From: sip:a@sori.test;tag=1;x=\"y\"")},
	// RFC 3261's own examples (§20, §19.1.3).
	{"RFC 3261 Contact example", msg("REGISTER sip:sori.test SIP/2.0",
		`Contact: "Mr. Watson" <sip:watson@worcester.bell-telephone.com>;q=0.7; expires=3600, "Mr. Watson" <mailto:watson@bell-telephone.com> ;q=0.1`)},
	{"RFC 3261 From/To examples", msg("OPTIONS sip:sori.test SIP/2.0", `From: "A. G. Bell" <sip:agb@bell-telephone.com> ;tag=a48s`,
		"To: The Operator <sip:operator@cs.columbia.edu>;tag=287447")},
	{"RFC 3261 Content-Type example", msg("MESSAGE sip:sori.test SIP/2.0",
		`Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha1; boundary=boundary42`)},
	{"RFC 3261 URI with user=phone", msg("INVITE sip:+1-212-555-1212:1234@gateway.com;user=phone SIP/2.0")},
	{"RFC 3261 URI with maddr and ttl", msg("INVITE sip:alice@atlanta.com;maddr=239.255.255.1;ttl=15 SIP/2.0")},
	{"RFC 3261 user part with a semicolon", msg("INVITE sip:alice;day=tuesday@atlanta.com SIP/2.0")},
	{"RFC 3261 Via examples", msg("OPTIONS sip:sori.test SIP/2.0",
		"Via: SIP/2.0/UDP erlang.bell-telephone.com:5060;branch=z9hG4bK87asdks7, SIP/2.0/UDP 192.0.2.1:5060 ;received=192.0.2.207;branch=z9hG4bK77asjd")},
	{"GRUU and instance in Contact", msg("REGISTER sip:sori.test SIP/2.0",
		`Contact: <sip:callee@192.0.2.1;gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>;+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1;+sip.ice`)},
	{"WebSocket Via and Record-Route", msg("INVITE sip:bob@sori.test SIP/2.0", "Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKasudf;rport",
		"Record-Route: <sip:192.0.2.5;transport=ws;r2=on;lr=on;ftag=abc;nat=yes>")},
}

func TestCheckValid(t *testing.T) {
	for _, tt := range validForms {
		t.Run(tt.name, func(t *testing.T) {
			if info, f := Check(tt.data); f != nil || info.Kind == Garbage {
				t.Fatalf("Check = %v (%v):\n%s", f, info.Kind, tt.data)
			}
		})
	}
}

// TestCheckInvalid: one fault each, with the answer Check gives.
func TestCheckInvalid(t *testing.T) {
	many := make([]string, MaxHeaders)
	for i := range many {
		many[i] = "X-H: " + strconv.Itoa(i)
	}
	blocks := make([]string, MaxHeaderBlock/1000+1)
	for i := range blocks {
		blocks[i] = "X-B: " + strings.Repeat("b", 1000)
	}
	tests := []struct {
		name string
		data []byte
		kind Kind
		code int
		why  string
	}{
		{"empty", nil, Garbage, 400, "Empty Message"},
		{"keepalive datagram", []byte("\r\n\r\n"), Garbage, 400, "Empty Message"},
		{"binary", []byte("\x16\x03\x01\x00\xa5\x01\x00"), Garbage, 400, "Not a SIP Message"},
		{"one word", []byte("HELLO\r\n\r\n"), Garbage, 400, "Not a SIP Message"},
		{"too many headers", msg("OPTIONS sip:sori.test SIP/2.0", many...), Request, 513, "Too Many Headers"},
		{"header too long", msg("OPTIONS sip:sori.test SIP/2.0", "X-L: "+strings.Repeat("l", MaxHeaderLine)), Request, 513, "Header Too Long"},
		{"header block too large", msg("OPTIONS sip:sori.test SIP/2.0", blocks...), Request, 513, "Header Block Too Large"},
		{"message too large", append(msg("OPTIONS sip:sori.test SIP/2.0"), make([]byte, MaxMessage)...), Request, 513, "Message Too Large"},
		{"start line too long", msg("OPTIONS sip:" + strings.Repeat("a", MaxHeaderLine) + " SIP/2.0"), Request, 513, "Start Line Too Long"},
		{"status line without reason SP", []byte("SIP/2.0 200\r\n\r\n"), Response, 400, "Malformed Status Line"},
		{"status line without SP", []byte("SIP/2.0\r\n\r\n"), Response, 400, "Malformed Status Line"},
		{"two-digit status", []byte("SIP/2.0 20 OK\r\n\r\n"), Response, 400, "Bad Status Code"},
		{"status 099", []byte("SIP/2.0 099 Early\r\n\r\n"), Response, 400, "Bad Status Code"},
		{"status 700", []byte("SIP/2.0 700 Late\r\n\r\n"), Response, 400, "Bad Status Code"},
		{"response SIP/3.0", []byte("SIP/3.0 200 OK\r\n\r\n"), Response, 505, "Version Not Supported"},
		{"control in reason", []byte("SIP/2.0 200 O\x01K\r\n\r\n"), Response, 400, "Control Character in Status Line"},
		{"response missing headers", []byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n"), Response, 400, "Missing From, To, Call-ID, CSeq"},
		{"no Via at all", msg("OPTIONS sip:sori.test SIP/2.0", "-Via"), Request, 400, "Missing Via"},
		{"method not a token", msg("OPT(ONS sip:sori.test SIP/2.0"), Request, 400, "Malformed Method"},
		{"method with an angle bracket", msg("UPD<TE sip:sori.test SIP/2.0"), Request, 400, "Malformed Method"},
		{"method with a control byte", msg("OPT\x7fONS sip:sori.test SIP/2.0"), Request, 400, "Malformed Method"},
		{"method with a NUL", msg("OPT\x00ONS sip:sori.test SIP/2.0"), Request, 400, "Malformed Method"},
		{"no URI after an odd method", []byte("OPT(ONS SIP/2.0\r\n\r\n"), Garbage, 400, "Not a SIP Message"},
		{"scheme starting with a digit", msg("OPTIONS 1sip:sori.test SIP/2.0"), Request, 400, "Bad Scheme in Request-URI"},
		{"no scheme", msg("OPTIONS sori.test SIP/2.0"), Request, 400, "Bad Scheme in Request-URI"},
		{"empty user", msg("OPTIONS sip:@sori.test SIP/2.0"), Request, 400, "Bad User Part in Request-URI"},
		{"bad escape in a URI param", msg("OPTIONS sip:sori.test;a=%4 SIP/2.0"), Request, 400, "Bad Parameter in Request-URI"},
		{"empty URI param", msg("OPTIONS sip:sori.test;;lr SIP/2.0"), Request, 400, "Bad Parameter in Request-URI"},
		{"host with a bad character", msg("OPTIONS sip:a@so!ri.test SIP/2.0"), Request, 400, "Malformed Request-URI"},
		{"empty host", msg("OPTIONS sip:a@ SIP/2.0"), Request, 400, "Bad Host in Request-URI"},
		{"empty IPv6 reference", msg("OPTIONS sip:a@[] SIP/2.0"), Request, 400, "Bad IPv6 Reference in Request-URI"},
		{"IPv6 group too long", msg("OPTIONS sip:a@[2001:db8::12345] SIP/2.0"), Request, 400, "Bad IPv6 Reference in Request-URI"},
		{"IPv6 with too many groups", msg("OPTIONS sip:a@[1:2:3:4:5:6:7:8:9] SIP/2.0"), Request, 400, "Bad IPv6 Reference in Request-URI"},
		{"empty absolute URI", msg("OPTIONS urn: SIP/2.0"), Request, 400, "Malformed Request-URI"},
		{"Via without transport", msg("OPTIONS sip:sori.test SIP/2.0", "Via: SIP/2.0 192.0.2.1"), Request, 400, "Malformed Via"},
		{"Via without sent-by", msg("OPTIONS sip:sori.test SIP/2.0", "Via: SIP/2.0/UDP"), Request, 400, "Malformed Via"},
		{"Via empty", msg("OPTIONS sip:sori.test SIP/2.0", "Via: "), Request, 400, "Malformed Via"},
		{"Via quoted branch", msg("OPTIONS sip:sori.test SIP/2.0", `Via: SIP/2.0/UDP h;branch="x"`), Request, 400, "Bad branch in Via"},
		{"Via ttl 256", msg("OPTIONS sip:sori.test SIP/2.0", "Via: SIP/2.0/UDP h;ttl=256"), Request, 400, "Bad ttl in Via"},
		{"Via maddr not a host", msg("OPTIONS sip:sori.test SIP/2.0", "Via: SIP/2.0/UDP h;maddr=a!b"), Request, 400, "Bad maddr in Via"},
		{"Via received a name", msg("OPTIONS sip:sori.test SIP/2.0", "Via: SIP/2.0/UDP h;received=host.example"), Request, 400, "Bad received in Via"},
		{"Via rport not a port", msg("OPTIONS sip:sori.test SIP/2.0", "Via: SIP/2.0/UDP h;rport=99999"), Request, 400, "Bad rport in Via"},
		{"Via generic value with a colon", msg("OPTIONS sip:sori.test SIP/2.0", "Via: SIP/2.0/UDP h;x=a:b"), Request, 400, "Bad Parameter in Via"},
		{"Via param value missing", msg("OPTIONS sip:sori.test SIP/2.0", "Via: SIP/2.0/UDP h;branch="), Request, 400, "Bad Parameter in Via"},
		{"Via junk after sent-by", msg("OPTIONS sip:sori.test SIP/2.0", "Via: SIP/2.0/UDP h x"), Request, 400, "Malformed Via"},
		{"Via control character", msg("OPTIONS sip:sori.test SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK\x01"), Request, 400, "Malformed Via"},
		{"From empty", msg("OPTIONS sip:sori.test SIP/2.0", "From: "), Request, 400, "Missing From URI"},
		{"From <>", msg("OPTIONS sip:sori.test SIP/2.0", "From: <>;tag=1"), Request, 400, "Missing From URI"},
		{"From display name only", msg("OPTIONS sip:sori.test SIP/2.0", `From: "Alice"`), Request, 400, "Malformed From"},
		{"From tag empty", msg("OPTIONS sip:sori.test SIP/2.0", "From: <sip:a@h>;tag="), Request, 400, "Bad Parameter in From"},
		{"From tag quoted", msg("OPTIONS sip:sori.test SIP/2.0", `From: <sip:a@h>;tag="1"`), Request, 400, "Bad tag in From"},
		{"From empty param", msg("OPTIONS sip:sori.test SIP/2.0", "From: <sip:a@h>;;tag=1"), Request, 400, "Empty Parameter in From"},
		{"To control in quotes", msg("OPTIONS sip:sori.test SIP/2.0", "To: \"a\x01\" <sip:b@h>"), Request, 400, "Control Character in To"},
		{"To whitespace before >", msg("OPTIONS sip:sori.test SIP/2.0", "To: <sip:b@h >"), Request, 400, "Whitespace in To URI"},
		{"To display name then quote", msg("OPTIONS sip:sori.test SIP/2.0", `To: Bob "B" <sip:b@h>`), Request, 400, "Bad Display Name in To"},
		{"Contact empty value in a list", msg("OPTIONS sip:sori.test SIP/2.0", "Contact: <sip:a@h>, , <sip:b@h>"), Request, 400, "Empty Value in Contact"},
		{"Contact star with params", msg("REGISTER sip:sori.test SIP/2.0", "Contact: *;expires=0"), Request, 400, "Bad Display Name in Contact"},
		{"Route bad URI", msg("OPTIONS sip:sori.test SIP/2.0", "Route: <sip:p1.sori.test;lr>, <sip:[::1>"), Request, 400, "Bad IPv6 Reference in Route URI"},
		{"Content-Length junk after", msg("OPTIONS sip:sori.test SIP/2.0", "Content-Length: 0 x"), Request, 400, "Bad Content-Length"},
		{"Content-Length larger than the datagram", msg("OPTIONS sip:sori.test SIP/2.0", "Content-Length: 1"), Request, 400, "Content-Length Larger Than Message"},
		{"CSeq junk after method", msg("OPTIONS sip:sori.test SIP/2.0", "CSeq: 1 OPTIONS x"), Request, 400, "Bad CSeq"},
		{"CSeq no LWS", msg("OPTIONS sip:sori.test SIP/2.0", "CSeq: 1OPTIONS"), Request, 400, "Bad CSeq"},
		{"Max-Forwards two numbers", msg("OPTIONS sip:sori.test SIP/2.0", "Max-Forwards: 7 0"), Request, 400, "Bad Max-Forwards"},
		{"Max-Forwards empty", msg("OPTIONS sip:sori.test SIP/2.0", "Max-Forwards:"), Request, 400, "Bad Max-Forwards"},
		{"header name not a token", msg("OPTIONS sip:sori.test SIP/2.0", "X\x80Y: 1"), Request, 400, "Malformed Header"},
		{"header without a name", msg("OPTIONS sip:sori.test SIP/2.0", ": 1"), Request, 400, "Malformed Header"},
		{"LWS before the colon across a fold", msg("OPTIONS sip:sori.test SIP/2.0", "X-F\r\n : 1"), Request, 400, "Malformed Header"},
		{"DEL in an unknown header", msg("OPTIONS sip:sori.test SIP/2.0", "X-D: a\x7fb"), Request, 400, "Control Character in X-D"},
		{"long unknown name is cut in the reason", msg("OPTIONS sip:sori.test SIP/2.0", strings.Repeat("N", 40)+": \x00"),
			Request, 400, "Control Character in " + strings.Repeat("N", 24)},
		{"Expires negative", msg("OPTIONS sip:sori.test SIP/2.0", "Expires: -1"), Request, 400, "Bad Expires"},
		{"Content-Type with an empty parameter value", msg("OPTIONS sip:sori.test SIP/2.0", "Content-Type: text/plain;charset"), Request, 400, "Bad Content-Type"},
		{"Request-URI headers in a SIP URI", msg("OPTIONS sip:a@h?subject=x SIP/2.0"), Request, 400, "Headers in Request-URI"},
		{"416 waits for syntax: a later 400 wins", msg("OPTIONS foo:bar SIP/2.0", "CSeq: x OPTIONS"), Request, 400, "Bad CSeq"},
		{"missing blank line after the start line", []byte("OPTIONS sip:sori.test SIP/2.0\r\n"), Request, 400, "Missing Blank Line After Headers"},
		{"data ends in a header line", []byte("OPTIONS sip:sori.test SIP/2.0\r\nVia: SIP/2.0/UDP h"), Request, 400, "Missing Blank Line After Headers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, f := Check(tt.data)
			if f == nil || info.Kind != tt.kind || f.Code != tt.code || f.Reason != tt.why {
				t.Fatalf("Check = %v, %v; want %v, %d %s", info.Kind, f, tt.kind, tt.code, tt.why)
			}
		})
	}
}

// TestCheckAllocs: a valid message costs no allocation (one, the method
// string, for an extension method).
func TestCheckAllocs(t *testing.T) {
	for _, row := range allTorture(t) {
		if row.transport != "udp" {
			continue
		}
		info, f := Check(row.data)
		if f != nil {
			continue
		}
		want := 0.0
		if info.Kind == Request && !isUsual(info.Method) {
			want = 1
		}
		if got := testing.AllocsPerRun(20, func() { Check(row.data) }); got != want {
			t.Errorf("%s: %v allocations, want %v", row.name, got, want)
		}
	}
}

func isUsual(m string) bool {
	switch m {
	case "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "MESSAGE", "SUBSCRIBE", "NOTIFY", "PRACK", "UPDATE", "INFO", "REFER", "PUBLISH":
		return true
	}
	return false
}
