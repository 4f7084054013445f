package wire

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// tortureRow is one row of a torture manifest (testdata/torture/manifest.tsv
// or extra/manifest.tsv; same columns).
type tortureRow struct {
	name, file, transport, validity, prefer string
	expectN                                 int
	data                                    []byte
}

const tortureDir = "../../testdata/torture"

func loadManifest(t testing.TB, path string) []tortureRow {
	t.Helper()
	f, err := os.Open(filepath.Join(tortureDir, path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []tortureRow
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "name\t") {
			continue
		}
		c := strings.Split(line, "\t")
		if len(c) != 11 {
			t.Fatalf("%s: row %q has %d columns", path, line, len(c))
		}
		n, err := strconv.Atoi(c[10])
		if err != nil {
			t.Fatalf("%s: row %q: expect_n: %v", path, line, err)
		}
		data, err := os.ReadFile(filepath.Join(tortureDir, c[1]))
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, tortureRow{name: c[0], file: c[1], transport: c[2], validity: c[4], prefer: c[6], expectN: n, data: data})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// allTorture is every row of both manifests.
func allTorture(t testing.TB) []tortureRow {
	rows := loadManifest(t, "manifest.tsv")
	if len(rows) != 76 {
		t.Fatalf("manifest.tsv has %d rows, want 76", len(rows))
	}
	return append(rows, loadManifest(t, "extra/manifest.tsv")...)
}

// result is what Check says of one message.
type result struct {
	kind   Kind
	code   int // 0: no fault
	reason string
}

var (
	req  = func(code int, reason string) result { return result{Request, code, reason} }
	resp = func(code int, reason string) result { return result{Response, code, reason} }
	ok   = result{Request, 0, ""}
)

// wantCheck is the exact answer of Check for every case, keyed by name
// without its @transport (TCP copies answer as their UDP original unless
// wantStream says otherwise).
var wantCheck = map[string]result{
	"rfc4475/wsinv":      ok,
	"rfc4475/intmeth":    ok,
	"rfc4475/esc01":      ok,
	"rfc4475/escnull":    ok,
	"rfc4475/esc02":      ok,
	"rfc4475/lwsdisp":    ok,
	"rfc4475/longreq":    ok,
	"rfc4475/dblreq":     ok,
	"rfc4475/semiuri":    ok,
	"rfc4475/transports": ok,
	"rfc4475/mpart01":    ok,
	"rfc4475/unreason":   resp(0, ""),
	"rfc4475/noreason":   resp(0, ""),
	"rfc4475/badinv01":   req(400, "Empty Parameter in Via"),
	"rfc4475/clerr":      req(400, "Content-Length Larger Than Message"),
	"rfc4475/ncl":        req(400, "Negative Content-Length"),
	"rfc4475/scalar02":   req(400, "Bad CSeq"),
	"rfc4475/scalarlg":   resp(400, "Bad CSeq"),
	"rfc4475/quotbal":    req(400, "Unterminated Quoted String in To"),
	"rfc4475/ltgtruri":   req(400, "Angle Brackets in Request-URI"),
	"rfc4475/lwsruri":    req(400, "Whitespace in Request-URI"),
	"rfc4475/lwsstart":   req(400, "Extra Whitespace in Request Line"),
	"rfc4475/trws":       req(400, "Trailing Whitespace in Request Line"),
	"rfc4475/escruri":    req(400, "Headers in Request-URI"),
	"rfc4475/baddate":    ok, // may reject, should not unless Date matters
	"rfc4475/regbadct":   req(400, "Unbracketed URI With Headers in Contact"),
	"rfc4475/badaspec":   req(400, "Whitespace in To URI"),
	"rfc4475/baddn":      req(400, "Bad Display Name in From"),
	"rfc4475/badvers":    req(505, "Version Not Supported"),
	"rfc4475/mismatch01": req(400, "CSeq Method Does Not Match"),
	"rfc4475/mismatch02": req(400, "CSeq Method Does Not Match"),
	"rfc4475/bigcode":    resp(400, "Bad Status Code"),
	"rfc4475/badbranch":  ok, // "z9hG4bK" alone is still a token
	"rfc4475/insuf":      req(400, "Missing From, To, Call-ID"),
	"rfc4475/unkscm":     req(416, "Unsupported URI Scheme"),
	"rfc4475/novelsc":    req(416, "Unsupported URI Scheme"),
	// To: isbn:... and From: <http://...> are well-formed absoluteURIs; the
	// manifest's 400|401 is the registrar's policy answer, not syntax.
	"rfc4475/unksm2":   ok,
	"rfc4475/bext01":   ok, // 420 is the sanity plugin's
	"rfc4475/invut":    ok, // 415 is the UAS's
	"rfc4475/regaut01": ok,
	"rfc4475/multi01":  req(400, "Multiple CSeq"),
	"rfc4475/mcl01":    req(400, "Multiple Content-Length"),
	"rfc4475/zeromf":   ok, // 483 is the proxy's
	"rfc4475/cparam01": ok,
	"rfc4475/cparam02": ok,
	"rfc4475/regescrt": ok,
	"rfc4475/sdp01":    ok,
	"rfc4475/inv2543":  ok,
	"rfc4475/bcast":    resp(0, ""),
	"rfc4475/test":     req(400, "Missing SIP-Version"),

	"rfc5118/ipv6-good":                     ok,
	"rfc5118/ipv6-bad":                      req(400, "Bad IPv6 Reference in Request-URI"),
	"rfc5118/port-ambiguous":                ok,
	"rfc5118/port-unambiguous":              ok,
	"rfc5118/via-received-param-with-delim": ok,
	"rfc5118/via-received-param-no-delim":   ok,
	"rfc5118/ipv6-in-sdp":                   ok,
	"rfc5118/mult-ip-in-header":             ok,
	"rfc5118/mult-ip-in-sdp":                ok,
	"rfc5118/ipv4-mapped-ipv6":              ok,
	"rfc5118/ipv6-bug-abnf-3-colons":        ok,
	"rfc5118/ipv6-correct-abnf-2-colons":    ok,

	"extra/cl-alpha":               req(400, "Bad Content-Length"),
	"extra/cl-plus":                req(400, "Bad Content-Length"),
	"extra/cl-huge":                req(413, "Content-Length Too Large"),
	"extra/cl-twice-equal":         req(400, "Multiple Content-Length"),
	"extra/cseq-negative":          req(400, "Negative CSeq"),
	"extra/cseq-alpha":             req(400, "Bad CSeq"),
	"extra/cseq-2p31":              req(400, "Bad CSeq"),
	"extra/cseq-no-method":         req(400, "Bad CSeq"),
	"extra/cseq-method-case":       req(400, "CSeq Method Does Not Match"),
	"extra/cseq-method-other":      req(400, "CSeq Method Does Not Match"),
	"extra/mf-256":                 req(400, "Bad Max-Forwards"),
	"extra/mf-negative":            req(400, "Bad Max-Forwards"),
	"extra/mf-alpha":               req(400, "Bad Max-Forwards"),
	"extra/mf-twice":               req(400, "Multiple Max-Forwards"),
	"extra/quot-from":              req(400, "Unterminated Quoted String in From"),
	"extra/quot-contact":           req(400, "Unterminated Quoted String in Contact"),
	"extra/quot-param":             req(400, "Unterminated Quoted String in Via"),
	"extra/ws-callid":              req(400, "Bad Call-ID"),
	"extra/ws-header-name":         req(400, "Malformed Header"),
	"extra/ws-folded-start":        req(400, "Folded Start Line"),
	"extra/ws-via-host":            req(400, "Malformed Via"),
	"extra/ws-request-tab":         req(400, "Malformed Request Line"),
	"extra/ws-after-laquot":        req(400, "Whitespace in To URI"),
	"extra/ws-ruri-leading":        req(400, "Extra Whitespace in Request Line"),
	"extra/ipv6-via-unclosed":      req(400, "Bad IPv6 Reference in Via"),
	"extra/ipv6-via-bare-port":     req(400, "Bad IPv6 Reference in Via"),
	"extra/ipv6-ruri-unclosed":     req(400, "Bad IPv6 Reference in Request-URI"),
	"extra/ipv6-contact-bad":       req(400, "Bad IPv6 Reference in Contact URI"),
	"extra/ipv6-received-unclosed": req(400, "Bad IPv6 Reference in Via"),
	"extra/ctl-nul":                req(400, "Control Character in Subject"),
	"extra/ctl-cr":                 req(400, "Control Character in Subject"),
	"extra/no-colon":               req(400, "Malformed Header"),
	"extra/missing-via":            req(400, "Missing Via"),
	"extra/missing-cseq":           req(400, "Missing CSeq"),
	"extra/via-version":            req(505, "Version Not Supported in Via"),
	"extra/version-3":              req(505, "Version Not Supported"),
	"extra/version-junk":           req(400, "Bad SIP-Version"),
	"extra/via-port-0":             req(400, "Bad Port in Via"),
	"extra/via-port-big":           req(400, "Bad Port in Via"),
	"extra/via-empty-param-end":    req(400, "Empty Parameter in Via"),
	"extra/via-trailing-comma":     req(400, "Empty Value in Via"),
	"extra/expires-alpha":          req(400, "Bad Expires"),
	"extra/contact-expires-alpha":  req(400, "Bad expires in Contact"),
	"extra/contact-q-big":          req(400, "Bad q in Contact"),
	"extra/ruri-bad-port":          req(400, "Bad Port in Request-URI"),
	"extra/ruri-bad-escape":        req(400, "Bad User Part in Request-URI"),
	"extra/ruri-bad-ipv4":          req(400, "Bad Host in Request-URI"),
	"extra/callid-empty":           req(400, "Bad Call-ID"),
	"extra/to-two-values":          req(400, "Malformed To"),
	"extra/to-unclosed-laquot":     req(400, "Unclosed Angle Bracket in To"),
	"extra/ctype-no-subtype":       req(400, "Bad Content-Type"),
	"extra/no-blank-line":          req(400, "Missing Blank Line After Headers"),
	"extra/scheme-chars":           req(416, "Unsupported URI Scheme"),
	"extra/scheme-chars-contact":   ok,
	"extra/contact-list-bare":      ok,
	"extra/tel-ruri":               ok,
	"extra/limits":                 ok,
	"extra/ipv6-loopback":          ok,
	"extra/contact-star":           ok,
	"extra/bare-lf":                ok,
	"extra/dial-hash":              ok,
	"extra/tcp-keepalive":          ok,
	"extra/tcp-pipelined":          ok,
}

// stream is what Frame and Check make of a TCP case: the messages framed
// in order, then how the buffer ends.
type stream struct {
	msgs []result
	end  error // nil: buffer consumed; ErrIncomplete; or a *FramingError
}

func framingErr(code int, reason string) error {
	return &FramingError{Fault: Fault{Code: code, Reason: reason}}
}

// wantStream lists the TCP cases that are not one message answered as its
// UDP original.
var wantStream = map[string]stream{
	"rfc4475/clerr": {end: ErrIncomplete}, // wait for the 9999 bytes
	"rfc4475/ncl":   {end: framingErr(400, "Negative Content-Length")},
	"rfc4475/mcl01": {end: framingErr(400, "Multiple Content-Length")},
	// On a stream the INVITE is the next message. Its body is two bytes
	// longer than its Content-Length: what is left ("C" CRLF CRLF) is not SIP.
	"rfc4475/dblreq":       {msgs: []result{ok, ok}, end: framingErr(400, "Not a SIP Message")},
	"extra/tcp-cl-missing": {end: framingErr(400, "Missing Content-Length")},
	"extra/tcp-cl-alpha":   {end: framingErr(400, "Bad Content-Length")},
	"extra/tcp-pipelined":  {msgs: []result{ok, ok}},
}

func caseKey(name string) string { return strings.TrimSuffix(strings.TrimSuffix(name, "@udp"), "@tcp") }

func resultOf(info Info, f *Fault) result {
	r := result{kind: info.Kind}
	if f != nil {
		r.code, r.reason = f.Code, f.Reason
	}
	return r
}

// runStream frames buf message by message as a transport would.
func runStream(t *testing.T, buf []byte) stream {
	t.Helper()
	var s stream
	for len(buf) > 0 {
		skip, n, err := Frame(buf)
		if skip > len(buf) || n > len(buf) || (err == nil && n <= skip) {
			t.Fatalf("Frame: skip %d, n %d of %d bytes, err %v", skip, n, len(buf), err)
		}
		if err != nil {
			s.end = err
			return s
		}
		info, f := Check(buf[skip:n])
		if f == nil && info.Length != n-skip {
			t.Fatalf("Check of a framed message: Length %d, framed %d", info.Length, n-skip)
		}
		s.msgs = append(s.msgs, resultOf(info, f))
		buf = buf[n:]
	}
	return s
}

// TestTorture checks every manifest row: UDP rows through Check, TCP rows
// through Frame then Check, each against its exact expected answer, and
// that answer against the manifest's validity and prefer columns.
func TestTorture(t *testing.T) {
	for _, row := range allTorture(t) {
		t.Run(row.name, func(t *testing.T) {
			key := caseKey(row.name)
			want, known := wantCheck[key]
			ws, special := wantStream[key]
			if !known && !(special && row.transport == "tcp") {
				t.Fatalf("no expectation for %s", key)
			}
			if row.transport == "udp" {
				checkAgainstManifest(t, row, want)
				info, f := Check(row.data)
				if got := resultOf(info, f); got != want {
					t.Fatalf("Check = %+v, want %+v", got, want)
				}
				if f == nil && (info.Length > len(row.data) || info.Body > info.Length) {
					t.Fatalf("Body %d, Length %d of %d bytes", info.Body, info.Length, len(row.data))
				}
				return
			}
			if !special {
				ws = stream{msgs: []result{want}}
			}
			checkStreamAgainstManifest(t, row, ws)
			got := runStream(t, row.data)
			if !slices.Equal(got.msgs, ws.msgs) {
				t.Fatalf("messages %+v, want %+v", got.msgs, ws.msgs)
			}
			if !sameEnd(got.end, ws.end) {
				t.Fatalf("stream ends with %v, want %v", got.end, ws.end)
			}
			if len(got.msgs) != row.expectN && !(len(got.msgs) == 0 && got.end != nil) {
				t.Fatalf("%d messages, manifest expects %d", len(got.msgs), row.expectN)
			}
		})
	}
}

func sameEnd(got, want error) bool {
	var g, w *FramingError
	if errors.As(want, &w) {
		return errors.As(got, &g) && g.Fault == w.Fault
	}
	return got == want
}

// checkAgainstManifest ties the expectation to the manifest: valid messages
// never get 400 (only 416, the one policy-free answer Check gives to valid
// syntax), invalid ones get a code the manifest prefers, responses are
// flagged but never answered.
func checkAgainstManifest(t *testing.T, row tortureRow, want result) {
	t.Helper()
	prefers := func(code int) bool {
		return slices.Contains(strings.Split(row.prefer, "|"), strconv.Itoa(code))
	}
	switch row.validity {
	case "valid":
		if want.code != 0 && !(want.code == 416 && prefers(416)) {
			t.Fatalf("valid case expected to get %d", want.code)
		}
	case "invalid", "invalid-liberal":
		if row.prefer != "-" && !prefers(want.code) {
			t.Fatalf("invalid case expected to get %d; manifest prefers %s", want.code, row.prefer)
		}
		if row.prefer == "-" && want.code != 0 {
			t.Fatalf("liberal case with no preference expected to get %d", want.code)
		}
	case "valid-response":
		if want.kind != Response || want.code != 0 {
			t.Fatalf("valid response expected as %+v", want)
		}
	case "invalid-response":
		if want.kind != Response || want.code == 0 {
			t.Fatalf("invalid response expected as %+v", want)
		}
	}
}

// checkStreamAgainstManifest is checkAgainstManifest for a TCP row: a
// stream that cannot be framed is answered with a code the manifest prefers
// (or just closed), one that waits for more bytes sends nothing yet.
func checkStreamAgainstManifest(t *testing.T, row tortureRow, ws stream) {
	t.Helper()
	alts := strings.Split(row.prefer, "|")
	var fe *FramingError
	switch {
	case errors.As(ws.end, &fe) && len(ws.msgs) == 0:
		if !slices.Contains(alts, strconv.Itoa(fe.Code)) {
			t.Fatalf("stream expected to fail with %d; manifest prefers %s", fe.Code, row.prefer)
		}
	case ws.end == ErrIncomplete:
		if !slices.Contains(alts, "none") && !slices.Contains(alts, "closed") {
			t.Fatalf("stream expected to wait; manifest prefers %s", row.prefer)
		}
	}
	for _, m := range ws.msgs {
		checkAgainstManifest(t, row, m)
	}
}
