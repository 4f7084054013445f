// Package wire is the first thing every received SIP message meets: a
// validating scanner over the raw bytes, run before sipgo parses the
// message, and a builder of the error reply from the raw headers.
//
// sipgo's parser is lenient on purpose, and where it is not it can only
// fail: a message it refuses cannot be answered, so it is dropped, and it
// accepts some that RFC 3261 says must get 400 (several Content-Length or
// CSeq headers, SIP/7.0). Check finds the first fault with the answer to
// give (400 with a reason phrase naming it, 505 for a SIP version other than
// 2.0, 416 for a Request-URI scheme other than sip, sips and tel, 413/513
// for what is too large), and Reply builds that answer from the raw header
// lines, even when the faulty header is among those it copies. A message
// Check passes goes to sipgo's parser once. Check accepts everything RFC
// 3261, 4475 and 5118 call valid: the table test runs every row of
// testdata/torture/manifest.tsv and extra/manifest.tsv.
//
// Frame delimits messages on a stream (TCP, TLS) by their Content-Length
// and skips the CRLF keepalives between them.
//
// The scanner is written by hand because it runs on every packet: it works
// on offsets into the input, copies nothing and allocates nothing for a
// valid message, and its work is linear in the message. Measured with
// BenchmarkCheck and BenchmarkSipgoParse on this package's INVITE (1.1 KB
// with a Linphone SDP offer) and REGISTER (830 bytes, with a digest
// Authorization), on a shared 2-core Xeon (go test -bench . -benchmem
// -count 5): Check takes 0.97-1.1 µs and 0 allocs for the INVITE, 0.99-1.09
// µs and 0 allocs for the REGISTER; sipgo's ParseMessage on the same
// messages takes 3.2-3.5 µs with 46 and 50 allocations. A valid message
// thus costs about a third more than sipgo alone, and a bad one is refused
// before sipgo allocates anything. No library validates SIP at this level: the grammar
// is RFC 3261 §25.1's, checked header by header (Via, From, To, Contact,
// Route, Record-Route, Call-ID, CSeq, Max-Forwards, Content-Length,
// Content-Type, Expires), with control characters refused everywhere else
// outside quoted-pairs.
//
// Where an RFC lets a receiver be liberal, Check is: bare LF line ends,
// a missing Max-Forwards (RFC 2543), no LWS before "<" (RFC 4475 lwsdisp),
// the 3-colon IPv6 form of RFC 5118 §4.10, received= with or without
// brackets, unquoted UTF-8 display names and a raw '#' in a user part
// (phones send both), any scheme in From/To/Contact (whether a registrar
// takes "To: isbn:..." is policy, RFC 4475 unksm2). Where RFC 4475 says a
// 400 is reasonable (ltgtruri, lwsruri, lwsstart, trws, escruri, regbadct,
// badaspec, baddn, quotbal), Check gives it.
package wire
