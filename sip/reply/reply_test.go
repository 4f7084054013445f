package reply

import (
	"regexp"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func parse(t testing.TB, raw string) *sip.Request {
	t.Helper()
	m, err := sip.ParseMessage([]byte(strings.ReplaceAll(raw, "\n", "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	req := m.(*sip.Request)
	req.SetSource("192.0.2.7:5071")
	req.SetTransport("UDP")
	return req
}

const register = `REGISTER sip:sori.test SIP/2.0
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-1;rport
Max-Forwards: 70
From: "Alice" <sip:alice@sori.test>;tag=a1
To: <sip:alice@sori.test>
Call-ID: reg-1
CSeq: 2 REGISTER
Contact: <sip:alice@10.0.0.2:5060>
Content-Length: 0

`

const invite = `INVITE sip:bob@sori.test SIP/2.0
Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-p;received=10.0.0.9
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-2;rport
Record-Route: <sip:10.0.0.9;lr>
Max-Forwards: 69
From: <sip:alice@sori.test>;tag=a2
To: <sip:bob@sori.test>;tag=already
Call-ID: inv-1
CSeq: 7 INVITE
Timestamp: 54
Contact: <sip:alice@10.0.0.2:5060>
Content-Length: 0

`

var toTag = regexp.MustCompile(`(?m)^(To: .*;tag=)[^;\r\n]+`)

// New must answer as sipgo's NewResponseFromRequest does, tags aside.
func TestNewMatchesSipgo(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		code      int
	}{
		{"register 401", register, 401},
		{"register 200", register, 200},
		{"invite 100", invite, 100},
		{"invite 180", invite, 180},
		{"invite 200", invite, 200},
		{"invite 486", invite, 486},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(Bytes(New(parse(t, tc.raw), tc.code, "Reason")))
			want := sip.NewResponseFromRequest(parse(t, tc.raw), tc.code, "Reason", nil).String()
			if g, w := toTag.ReplaceAllString(got, "${1}T"), toTag.ReplaceAllString(want, "${1}T"); g != w {
				t.Errorf("got\n%s\nwant\n%s", g, w)
			}
		})
	}
}

func TestNew(t *testing.T) {
	req := parse(t, register)
	res := New(req, 200, "OK")
	if v := res.Via(); v.Params.Has("received") == false || res.Destination() != "192.0.2.7:5071" {
		t.Errorf("via %s, destination %s", v, res.Destination())
	}
	if v, _ := res.Via().Params.Get("rport"); v != "5071" {
		t.Errorf("rport %q", v)
	}
	if req.Via().Params.Has("received") {
		t.Error("the request's Via was changed")
	}
	tag, _ := res.To().Params.Get("tag")
	if len(tag) < 7 || req.To().Params.Has("tag") {
		t.Errorf("to tag %q; request To %s", tag, req.To())
	}
	if other, _ := New(req, 200, "OK").To().Params.Get("tag"); other == tag {
		t.Errorf("two responses share tag %q", tag)
	}
	if New(parse(t, invite), 100, "Trying").GetHeader("Timestamp") == nil {
		t.Error("100 without the request's Timestamp")
	}
	if New(parse(t, register), 100, "Trying").To().Params.Has("tag") {
		t.Error("100 with a To tag")
	}
	if New(parse(t, invite), 486, "Busy").GetHeader("Record-Route") != nil {
		t.Error("486 with Record-Route")
	}
}

// On 2026-12-02 (2 cores, loaded): BenchmarkNew 1.4 µs and 9 allocs against
// sipgo's 5.5 µs and 26; BenchmarkBytes 2.4 µs against 4.1 µs.
func BenchmarkNew(b *testing.B) {
	req := parse(b, register)
	b.ReportAllocs()
	for b.Loop() {
		_ = New(req, 200, "OK")
	}
}

func BenchmarkSipgoNew(b *testing.B) {
	req := parse(b, register)
	b.ReportAllocs()
	for b.Loop() {
		_ = sip.NewResponseFromRequest(req, 200, "OK", nil)
	}
}

func BenchmarkBytes(b *testing.B) {
	res := New(parse(b, register), 200, "OK")
	b.ReportAllocs()
	for b.Loop() {
		_ = Bytes(res)
	}
}

func BenchmarkSipgoString(b *testing.B) {
	res := New(parse(b, register), 200, "OK")
	b.ReportAllocs()
	for b.Loop() {
		_ = []byte(res.String())
	}
}
