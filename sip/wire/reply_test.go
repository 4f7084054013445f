package wire

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func crlf(lines ...string) []byte { return []byte(strings.Join(lines, "\r\n")) }

func TestReply(t *testing.T) {
	tests := []struct {
		name           string
		in             []byte
		code           int
		reason, server string
		want           []string // the reply's lines (before the blank line); nil: no reply
	}{{
		name: "long forms",
		in: crlf("INVITE sip:bob@sori.test SIP/2.0",
			"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
			"From: <sip:alice@sori.test>;tag=a",
			"To: <sip:bob@sori.test>;tag=b",
			"Call-ID: c1",
			"CSeq: 1 INVITE",
			"Max-Forwards: 70",
			"Content-Length: 0", "", ""),
		code: 400, reason: "Bad Thing", server: "sori/1",
		want: []string{"SIP/2.0 400 Bad Thing",
			"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
			"From: <sip:alice@sori.test>;tag=a",
			"To: <sip:bob@sori.test>;tag=b", // existing tag kept
			"Call-ID: c1",
			"CSeq: 1 INVITE",
			"Server: sori/1",
			"Content-Length: 0"},
	}, {
		name: "compact forms, odd case, folding, Vias on several lines and comma-separated",
		in: crlf("OPTIONS sip:bob@sori.test SIP/2.0",
			"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1,",
			"   SIP/2.0/TCP 192.0.2.2;branch=z9hG4bK2",
			"VIA  : SIP/2.0/UDP 192.0.2.3",
			"\t;branch=z9hG4bK3",
			"f: <sip:alice@sori.test>;tag=a",
			"t:",
			" <sip:bob@sori.test>",
			"i: c2",
			"cseq: 2",
			"  OPTIONS",
			"l: 0", "", ""),
		code: 400, reason: "Bad Thing",
		want: []string{"SIP/2.0 400 Bad Thing",
			"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1, SIP/2.0/TCP 192.0.2.2;branch=z9hG4bK2",
			"Via: SIP/2.0/UDP 192.0.2.3 ;branch=z9hG4bK3",
			"From: <sip:alice@sori.test>;tag=a",
			"To: <sip:bob@sori.test>;tag=" + derivedTag(crlf("OPTIONS sip:bob@sori.test SIP/2.0",
				"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1,",
				"   SIP/2.0/TCP 192.0.2.2;branch=z9hG4bK2",
				"VIA  : SIP/2.0/UDP 192.0.2.3",
				"\t;branch=z9hG4bK3",
				"f: <sip:alice@sori.test>;tag=a",
				"t:",
				" <sip:bob@sori.test>",
				"i: c2",
				"cseq: 2",
				"  OPTIONS",
				"l: 0", "", "")),
			"Call-ID: c2",
			"CSeq: 2 OPTIONS",
			"Content-Length: 0"},
	}, {
		name: "bare LF line ends; faulty CSeq copied raw; first of several",
		in: []byte("REGISTER sip:sori.test SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\nCSeq: 99999999999 REGISTER\nCSeq: 2 REGISTER\n" +
			"Call-ID: a\ni: b\nFrom: <sip:a@sori.test>;tag=1\nTo: sip:a@sori.test;tag=2\n\n"),
		code: 400, reason: "Bad CSeq",
		want: []string{"SIP/2.0 400 Bad CSeq",
			"Via: SIP/2.0/UDP h;branch=z9hG4bKx",
			"From: <sip:a@sori.test>;tag=1",
			"To: sip:a@sori.test;tag=2",
			"Call-ID: a",
			"CSeq: 99999999999 REGISTER",
			"Content-Length: 0"},
	}, {
		name: "no From, To, Call-ID (RFC 4475 insuf): answered with what there is",
		in:   crlf("INVITE sip:bob@sori.test SIP/2.0", "CSeq: 1 INVITE", "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKi", "", ""),
		code: 400, reason: "Missing From, To, Call-ID",
		want: []string{"SIP/2.0 400 Missing From, To, Call-ID", "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKi", "CSeq: 1 INVITE", "Content-Length: 0"},
	}, {
		name: "100 gets no To tag",
		in:   crlf("INVITE sip:bob@sori.test SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "To: <sip:bob@sori.test>", "", ""),
		code: 100, reason: "Trying",
		want: []string{"SIP/2.0 100 Trying", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "To: <sip:bob@sori.test>", "Content-Length: 0"},
	}, {
		name: "a To that does not parse gets no tag",
		in:   crlf("INVITE sip:bob@sori.test SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", `To: "Bob <sip:bob@sori.test>`, "", ""),
		code: 400, reason: "Unterminated Quoted String in To",
		want: []string{"SIP/2.0 400 Unterminated Quoted String in To", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", `To: "Bob <sip:bob@sori.test>`, "Content-Length: 0"},
	}, {
		name: "reason and server sanitised: no CR/LF injection; empty reason gets the standard phrase",
		in:   crlf("INVITE sip:bob@sori.test SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "", ""),
		code: 400, reason: "\r\n\x00\x7f", server: "sori\r\nX-Injected: 1\x00é",
		want: []string{"SIP/2.0 400 Bad Request", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "Server: soriX-Injected: 1", "Content-Length: 0"},
	}, {
		name: "a stray CR in a copied value cannot end the line",
		in:   crlf("INVITE sip:bob@sori.test SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1\rX-Injected: 1", "", ""),
		code: 400, reason: "Control Character in Via",
		want: []string{"SIP/2.0 400 Control Character in Via", "Via: SIP/2.0/UDP h;branch=z9hG4bK1 X-Injected: 1", "Content-Length: 0"},
	}, {
		name: "empty Via values are skipped",
		in:   crlf("INVITE sip:bob@sori.test SIP/2.0", "Via:  ", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "", ""),
		code: 400, reason: "Malformed Via",
		want: []string{"SIP/2.0 400 Malformed Via", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "Content-Length: 0"},
	}, {
		name: "leading CRLFs and a broken request line are still a request",
		in:   crlf("", "INVITE  sip:bob@sori.test  SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "", ""),
		code: 400, reason: "Extra Whitespace in Request Line",
		want: []string{"SIP/2.0 400 Extra Whitespace in Request Line", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "Content-Length: 0"},
	}, {
		name: "ACK: never answered",
		in:   crlf("ACK sip:bob@sori.test SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "", ""),
		code: 400, reason: "x",
	}, {
		name: "response: never answered",
		in:   crlf("SIP/2.0 200 OK", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "", ""),
		code: 400, reason: "x",
	}, {
		name: "no Via: nowhere to answer",
		in:   crlf("INVITE sip:bob@sori.test SIP/2.0", "From: <sip:a@sori.test>;tag=1", "", ""),
		code: 400, reason: "Missing Via",
	}, {
		name: "garbage",
		in:   []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
		code: 400, reason: "x",
	}, {
		name: "code out of range",
		in:   crlf("INVITE sip:bob@sori.test SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "", ""),
		code: 700, reason: "x",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Reply(tt.in, tt.code, tt.reason, tt.server)
			if tt.want == nil {
				if got != nil {
					t.Fatalf("Reply = %q, want nil", got)
				}
				return
			}
			want := strings.Join(tt.want, "\r\n") + "\r\n\r\n"
			if string(got) != want {
				t.Fatalf("Reply =\n%s\nwant\n%s", got, want)
			}
			assertReply(t, tt.in, got, tt.server)
		})
	}
}

// derivedTag is the tag Reply adds to this request's To.
func derivedTag(in []byte) string {
	r := Reply(in, 400, "x", "")
	i := bytes.Index(r, []byte("\r\nTo: "))
	line := r[i+2:]
	line = line[:bytes.IndexByte(line, '\r')]
	j := bytes.Index(line, []byte(";tag="))
	return string(line[j+5:])
}

func TestReplyTagIsStable(t *testing.T) {
	in := crlf("INVITE sip:bob@sori.test SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "From: <sip:a@sori.test>;tag=1",
		"To: <sip:bob@sori.test>", "Call-ID: c", "CSeq: 1 INVITE", "", "")
	a, b := derivedTag(in), derivedTag(bytes.Clone(in))
	other := derivedTag(bytes.Replace(in, []byte("z9hG4bK1"), []byte("z9hG4bK2"), 1))
	if a == "" || a != b {
		t.Fatalf("tags %q and %q for the same request", a, b)
	}
	if a == other {
		t.Fatalf("same tag %q for two requests", a)
	}
}

// TestReplyTorture answers every torture request Check refuses, and checks
// each reply as assertReply does.
func TestReplyTorture(t *testing.T) {
	answered := 0
	for _, row := range allTorture(t) {
		info, f := Check(row.data)
		if f == nil || info.Kind != Request {
			continue
		}
		r := Reply(row.data, f.Code, f.Reason, "sori")
		if r == nil {
			if hasVia(row.data) && !bytes.HasPrefix(row.data[info.Start:], []byte("ACK ")) {
				t.Errorf("%s: no reply, though it has a Via", row.name)
			}
			continue
		}
		answered++
		t.Run(row.name, func(t *testing.T) { assertReply(t, row.data, r, "sori") })
	}
	if answered < 50 {
		t.Fatalf("only %d torture requests answered", answered)
	}
}

func hasVia(d []byte) bool {
	for i := skipCRLF(d); i < len(d); {
		if blank, _ := blankLine(d, i); blank {
			return false
		}
		f := nextField(d, i)
		if v := trimLWS(d, f.val, f.valEnd); f.ok && headerOf(d[f.start:f.nameEnd]) == hVia && v.End > v.Start {
			return true
		}
		i = f.next
	}
	return false
}

// assertReply checks a reply r to request in: one whole response (Frame
// takes all of it), whose header lines are copies of the request's (folds
// turned into spaces, a tag perhaps added to To) or the ones Reply writes
// itself; and sipgo parses it, unless the only headers sipgo refuses in it
// are copies of headers it refuses in the request too. Reply must not
// repair those: the client matches its transaction on them.
func assertReply(t *testing.T, in, r []byte, server string) {
	t.Helper()
	skip, n, err := Frame(r)
	if skip != 0 || n != len(r) || err != nil {
		t.Fatalf("Frame(reply) = %d, %d, %v; want 0, %d, nil:\n%s", skip, n, err, len(r), r)
	}
	text := strings.TrimSuffix(string(r), "\r\n\r\n")
	lines := strings.Split(text, "\r\n")
	if k, _ := startKind(r, 0, len(lines[0])); k != Response || !printable(lines[0]) {
		t.Fatalf("bad status line %q", lines[0])
	}
	hp := sip.HeadersParser(sip.DefaultHeadersParser())
	_, parseErr := sip.ParseMessage(r)
	refused := 0
	for _, l := range lines[1:] {
		name, value, found := strings.Cut(l, ": ")
		switch {
		case !found:
			t.Fatalf("reply line %q has no name", l)
		case name == "Content-Length":
			if value != "0" {
				t.Fatalf("reply line %q", l)
			}
			continue
		case name == "Server":
			if !printable(value) || value != string(appendClean(nil, server)) {
				t.Fatalf("reply line %q, server %q", l, server)
			}
			continue
		}
		copied := requestValues(in, name)
		if !slices.Contains(copied, value) && !(name == "To" && slices.Contains(copied, strings.SplitN(value, ";tag=", 2)[0])) {
			t.Fatalf("reply line %q is not a copy of the request's %s %q", l, name, copied)
		}
		if _, err := hp.ParseHeader(nil, []byte(l)); err != nil {
			if parseErr == nil {
				t.Fatalf("sipgo parses the reply but not its line %q", l)
			}
			if _, err := hp.ParseHeader(nil, []byte(name+": "+strings.SplitN(value, ";tag=", 2)[0])); err == nil {
				t.Fatalf("sipgo refuses reply line %q but not the request's value", l)
			}
			refused++
		}
	}
	if parseErr != nil && refused == 0 {
		t.Fatalf("sipgo refuses the reply (%v), though it takes each of its headers:\n%s", parseErr, r)
	}
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// requestValues is every value of header name (long form) in request in,
// unfolded as Reply copies it.
func requestValues(in []byte, name string) []string {
	var out []string
	for i := skipCRLF(in); i < len(in); {
		if blank, _ := blankLine(in, i); blank {
			break
		}
		f := nextField(in, i)
		i = f.next
		if f.ok && headerOf(in[f.start:f.nameEnd]).name() == name {
			v := appendHeader(nil, "", in, trimLWS(in, f.val, f.valEnd))
			out = append(out, strings.TrimSuffix(string(v), "\r\n"))
		}
	}
	return out
}

func TestReplyExtraHeaders(t *testing.T) {
	req := []byte("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n")
	out := string(Reply(req, 503, "Service Unavailable", "", "Retry-After: 5", "X-Evil: a\r\nInjected: b"))
	if !strings.Contains(out, "\r\nRetry-After: 5\r\nX-Evil: aInjected: b\r\nContent-Length: 0\r\n\r\n") {
		t.Fatalf("extra headers: %q", out)
	}
}
