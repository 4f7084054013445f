package wire

import "bytes"

// startLine checks the start line data[i:end] (its line end excluded) and sets
// c.info's Kind, Method, Status and URI.
//
//	Request-Line = Method SP Request-URI SP SIP-Version CRLF
//	Status-Line  = SIP-Version SP Status-Code SP Reason-Phrase CRLF
func (c *checker) startLine(i, end int) *Fault {
	d := c.d
	kind, m, odd := classify(d, i, end)
	c.info.Kind = kind
	switch kind {
	case Garbage:
		return bad("Not a SIP Message")
	case Response:
		return c.statusLine(i, end)
	}
	c.info.Method = methodName(d[i:m])
	c.method = Span{i, m}
	if odd {
		return bad("Malformed Method")
	}
	if isWSP(d[end-1]) {
		return bad("Trailing Whitespace in Request Line") // RFC 4475 trws
	}
	if d[m] != ' ' {
		return bad("Malformed Request Line")
	}
	u := m + 1
	if isWSP(d[u]) {
		return bad("Extra Whitespace in Request Line") // RFC 4475 lwsstart
	}
	v := u + bytes.LastIndexByte(d[u:end], ' ')
	if v < u {
		return bad("Missing SIP-Version")
	}
	if isWSP(d[v-1]) {
		return bad("Extra Whitespace in Request Line")
	}
	if f := version(d[v+1 : end]); f != nil {
		return f
	}
	c.info.URI = Span{u, v}
	return c.requestURI(u, v)
}

// startKind classifies the start line d[i:end]: a Response starts with
// "SIP/"; a Request with a token then SP or HTAB (answerable even when the
// rest is wrong); anything else is Garbage. For a request, m is the end of
// the method.
func startKind(d []byte, i, end int) (k Kind, m int) {
	k, m, _ = classify(d, i, end)
	return k, m
}

// classify is startKind, and whether the request's method is no token
// (oddMethod).
func classify(d []byte, i, end int) (k Kind, m int, odd bool) {
	if end-i >= 4 && eqLower(d[i:i+4], "sip/") {
		return Response, 0, false
	}
	m = run(d, i, end, cToken)
	if m == i || m == end || !isWSP(d[m]) {
		if m = oddMethod(d, i, end); m > i {
			return Request, m, true // answered 400 (startLine): its Via is still good
		}
		return Garbage, 0, false
	}
	return Request, m, false
}

// oddMethod is the end of a request line's method that is no token
// ("OPT(ONS", "UPD<TE", a byte of it corrupted) in a line that is
// otherwise a Request-Line: a word, SP, a URI, SP, SIP/2.0. Such a
// request is SIP (its Via says where to answer), not noise to drop; 0
// otherwise.
func oddMethod(d []byte, i, end int) int {
	const version = " sip/2.0"
	if end-i <= len(version) || !eqLower(d[end-len(version):end], version) {
		return 0
	}
	for m := i; m < end-len(version); m++ {
		switch c := d[m]; {
		case c == ' ':
			if m == i {
				return 0
			}
			return m
		case c == '\t':
			return 0
		}
	}
	return 0
}

// version checks a SIP-Version: SIP/2.0 (case-insensitive) is the only one
// supported; another well-formed "SIP/" 1*DIGIT "." 1*DIGIT is 505.
func version(b []byte) *Fault {
	if eqLower(b, "sip/2.0") {
		return nil
	}
	if len(b) > 4 && eqLower(b[:4], "sip/") {
		i := run(b, 4, len(b), cDigit)
		if i > 4 && i < len(b) && b[i] == '.' {
			if j := run(b, i+1, len(b), cDigit); j > i+1 && j == len(b) {
				return fault(505, "Version Not Supported")
			}
		}
	}
	return bad("Bad SIP-Version")
}

// requestURI checks the Request-URI data[u:v]: SIP-URI / SIPS-URI /
// absoluteURI (RFC 3261 §25.1), without LWS, angle brackets (RFC 4475
// ltgtruri) or headers (§19.1.1: not allowed in a Request-URI; RFC 4475
// escruri). A scheme sori does not serve is a 416, reported only when the
// rest of the message is well-formed (§8.2.2.1 comes after parsing).
func (c *checker) requestURI(u, v int) *Fault {
	d := c.d
	for i := u; i < v; i++ {
		if isWSP(d[i]) {
			return bad("Whitespace in Request-URI") // RFC 4475 lwsruri
		}
	}
	if d[u] == '<' {
		return bad("Angle Brackets in Request-URI")
	}
	scheme, end, p := uriScheme(d, u, v)
	if p != uriOK {
		return uriFault(p, "Request-URI")
	}
	if end < v && d[end] == '?' {
		return bad("Headers in Request-URI")
	}
	switch scheme {
	case schemeSIP, schemeSIPS, schemeTel:
	default:
		c.pending = fault(416, "Unsupported URI Scheme")
	}
	return nil
}

// statusLine checks a Status-Line. Responses are never answered; a fault
// tells the caller to drop it.
func (c *checker) statusLine(i, end int) *Fault {
	d := c.d
	sp := bytes.IndexByte(d[i:end], ' ')
	if sp < 0 {
		return bad("Malformed Status Line")
	}
	sp += i
	if f := version(d[i:sp]); f != nil {
		return f
	}
	s := sp + 1
	e := run(d, s, end, cDigit)
	if e-s != 3 || (e < end && d[e] != ' ') {
		return bad("Bad Status Code") // RFC 4475 bigcode
	}
	code := int(d[s]-'0')*100 + int(d[s+1]-'0')*10 + int(d[s+2]-'0')
	if code < 100 || code > 699 {
		return bad("Bad Status Code")
	}
	c.info.Status = code
	if e == end {
		return bad("Malformed Status Line") // the SP before the reason is required
	}
	// Reason-Phrase: any text but controls; UTF-8 is fine (RFC 4475 unreason)
	// and it may be empty (noreason).
	for j := e + 1; j < end; j++ {
		if ctl(d[j]) {
			return bad("Control Character in Status Line")
		}
	}
	return nil
}

// methodName returns the method as a string, without a copy for the methods
// sori sees every second.
func methodName(b []byte) string {
	switch string(b) {
	case "INVITE":
		return "INVITE"
	case "ACK":
		return "ACK"
	case "BYE":
		return "BYE"
	case "CANCEL":
		return "CANCEL"
	case "REGISTER":
		return "REGISTER"
	case "OPTIONS":
		return "OPTIONS"
	case "MESSAGE":
		return "MESSAGE"
	case "SUBSCRIBE":
		return "SUBSCRIBE"
	case "NOTIFY":
		return "NOTIFY"
	case "PRACK":
		return "PRACK"
	case "UPDATE":
		return "UPDATE"
	case "INFO":
		return "INFO"
	case "REFER":
		return "REFER"
	case "PUBLISH":
		return "PUBLISH"
	}
	return string(b)
}
