package wire

import "bytes"

// scheme is a URI scheme sori knows.
type scheme uint8

const (
	schemeOther scheme = iota
	schemeSIP
	schemeSIPS
	schemeTel
)

// uriProblem is what is wrong with a URI; uriFault names it.
type uriProblem uint8

const (
	uriOK uriProblem = iota
	uriMalformed
	uriBadScheme
	uriWhitespace
	uriBadUser
	uriBadHost
	uriBadPort
	uriBadIPv6
	uriBadParam
	uriBadHeader
	uriHeadersUnbracketed
	uriEmpty
)

// uriFault names p, found in where ("Request-URI", "To URI", "Via").
func uriFault(p uriProblem, where string) *Fault {
	switch p {
	case uriBadIPv6:
		return badIn("Bad IPv6 Reference", where)
	case uriBadScheme:
		return badIn("Bad Scheme", where)
	case uriWhitespace:
		return badIn("Whitespace", where)
	case uriBadUser:
		return badIn("Bad User Part", where)
	case uriBadHost:
		return badIn("Bad Host", where)
	case uriBadPort:
		return badIn("Bad Port", where)
	case uriBadParam:
		return badIn("Bad Parameter", where)
	case uriBadHeader:
		return badIn("Bad Header", where)
	case uriEmpty:
		return bad("Missing " + where)
	}
	return bad("Malformed " + where)
}

// uriScheme checks the URI d[s:e] whose every byte is the URI (a
// Request-URI, or the inside of <>): scheme per RFC 3261 §25.1, then a
// SIP/SIPS URI or an absoluteURI. It returns the scheme, and where a SIP
// URI's headers ("?...") start (e when it has none), or where the problem
// is.
func uriScheme(d []byte, s, e int) (scheme, int, uriProblem) {
	sch, p, prob := schemeOf(d, s, e)
	if prob != uriOK {
		return sch, p, prob
	}
	if sch == schemeSIP || sch == schemeSIPS {
		q, prob := sipURI(d, p, e)
		if prob == uriOK && q < e {
			if d[q] != '?' {
				return sch, q, trouble(d, q, e, uriMalformed)
			}
			h, prob := uriHeaders(d, q+1, e)
			if prob == uriOK && h < e {
				prob = trouble(d, h, e, uriBadHeader)
			}
			return sch, q, prob
		}
		return sch, q, prob
	}
	q, ok := escapedRun(d, p, e, cAbs)
	switch {
	case !ok:
		return sch, q, uriMalformed
	case q == p:
		return sch, q, trouble(d, q, e, uriMalformed)
	case q < e:
		return sch, q, trouble(d, q, e, uriMalformed)
	}
	return sch, e, uriOK
}

// bareURI checks an addr-spec written without <> (RFC 3261 §20.10) starting
// at s: it ends at the first ';', ',' or LWS, and may not carry headers
// ('?'). It returns the end of the URI.
func bareURI(d []byte, s, e int) (int, uriProblem) {
	end := s
	for end < e {
		c := d[end]
		if c == ';' || c == ',' || lws(d, end, e) {
			break
		}
		if c == '?' {
			return end, uriHeadersUnbracketed
		}
		end++
	}
	if end == s {
		return end, uriEmpty
	}
	_, q, prob := uriScheme(d, s, end)
	if prob != uriOK {
		return q, prob
	}
	return end, uriOK
}

// schemeOf reads "scheme:" at s and returns the scheme and the index after
// the colon.
func schemeOf(d []byte, s, e int) (scheme, int, uriProblem) {
	if s >= e {
		return schemeOther, s, uriEmpty
	}
	if !is(d[s], cAlpha) {
		return schemeOther, s, trouble(d, s, e, uriBadScheme)
	}
	k := run(d, s, e, cScheme)
	if k == e || d[k] != ':' {
		return schemeOther, k, trouble(d, k, e, uriBadScheme)
	}
	name := d[s:k]
	sch := schemeOther
	switch {
	case eqLower(name, "sip"):
		sch = schemeSIP
	case eqLower(name, "sips"):
		sch = schemeSIPS
	case eqLower(name, "tel"):
		sch = schemeTel
	}
	return sch, k + 1, uriOK
}

// trouble reports p for a fault at d[i], or uriWhitespace when d[i] is LWS.
func trouble(d []byte, i, e int, p uriProblem) uriProblem {
	if i < e && lws(d, i, e) {
		return uriWhitespace
	}
	return p
}

// sipURI checks what follows "sip:" or "sips:" in d[p:e]
//
//	[ userinfo ] hostport uri-parameters
//
// and returns where it stopped: e, or a '?' starting headers, or the byte it
// could not read (with a problem).
func sipURI(d []byte, p, e int) (int, uriProblem) {
	if at := bytes.IndexByte(d[p:e], '@'); at >= 0 {
		at += p
		u, ok := escapedRun(d, p, at, cUser)
		if !ok || u == p {
			return u, trouble(d, u, e, uriBadUser)
		}
		if u < at {
			if d[u] != ':' {
				return u, trouble(d, u, e, uriBadUser)
			}
			if w, ok := escapedRun(d, u+1, at, cPassword); !ok || w < at {
				return w, trouble(d, w, e, uriBadUser)
			}
		}
		p = at + 1
	}
	h, prob := hostport(d, p, e)
	if prob != uriOK {
		return h, prob
	}
	for h < e && d[h] == ';' {
		n, ok := escapedRun(d, h+1, e, cParam)
		if !ok || n == h+1 {
			return n, trouble(d, n, e, uriBadParam)
		}
		h = n
		if h < e && d[h] == '=' {
			v, ok := escapedRun(d, h+1, e, cParam)
			if !ok || v == h+1 {
				return v, trouble(d, v, e, uriBadParam)
			}
			h = v
		}
	}
	if h < e && d[h] != '?' {
		return h, trouble(d, h, e, uriMalformed)
	}
	return h, uriOK
}

// uriHeaders checks hname "=" hvalue *( "&" hname "=" hvalue ) at h.
func uriHeaders(d []byte, h, e int) (int, uriProblem) {
	for {
		n, ok := escapedRun(d, h, e, cHnv)
		if !ok || n == h || n == e || d[n] != '=' {
			return n, trouble(d, n, e, uriBadHeader)
		}
		v, ok := escapedRun(d, n+1, e, cHnv)
		if !ok {
			return v, uriBadHeader
		}
		if v == e || d[v] != '&' {
			return v, uriOK
		}
		h = v + 1
	}
}

// hostport checks host [ ":" port ] at p (no LWS allowed, as in a URI) and
// returns the index after it.
func hostport(d []byte, p, e int) (int, uriProblem) {
	h, prob := host(d, p, e)
	if prob != uriOK {
		return h, prob
	}
	if h < e && d[h] == ':' {
		q := run(d, h+1, e, cDigit)
		if !portOK(d[h+1 : q]) {
			return q, trouble(d, q, e, uriBadPort)
		}
		h = q
	}
	return h, uriOK
}

// host checks host = hostname / IPv4address / IPv6reference at p and returns
// the index after it. An IPv6 address without brackets, or with a missing
// bracket, is uriBadIPv6 (RFC 5118 §4.2).
func host(d []byte, p, e int) (int, uriProblem) {
	if p < e && d[p] == '[' {
		c := bytes.IndexByte(d[p:e], ']')
		if c < 0 || !ipv6(d[p+1:p+c]) {
			return p, uriBadIPv6
		}
		return p + c + 1, uriOK
	}
	h := run(d, p, e, cHost)
	if h < e && d[h] == ':' {
		// host:port has one colon; a second one before the end of the
		// hostport means an IPv6 address written without brackets.
		q := run(d, h+1, e, cIPv6)
		if bytes.IndexByte(d[h+1:q], ':') >= 0 {
			return p, uriBadIPv6
		}
	}
	if h == p || !hostname(d[p:h]) {
		return h, trouble(d, h, e, uriBadHost)
	}
	return h, uriOK
}

func portOK(b []byte) bool {
	if len(b) == 0 || len(b) > 5 {
		return false
	}
	n := 0
	for _, c := range b {
		n = n*10 + int(c-'0')
	}
	return n >= 1 && n <= 65535
}

// hostname checks a hostname or, when it is all digits and dots, an
// IPv4address (a hostname's top label starts with a letter, so an all-digit
// name can only be an address).
func hostname(b []byte) bool {
	numeric, dot := true, true // dot: the previous octet was a '.'
	for _, c := range b {
		if c == '.' {
			if dot {
				return false // empty label
			}
			dot = true
			continue
		}
		dot = false
		if c < '0' || c > '9' {
			numeric = false
		}
	}
	if numeric {
		return ipv4(b)
	}
	return true
}

// ipv4 checks 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT, each <= 255.
func ipv4(b []byte) bool {
	parts, n, digits := 0, 0, 0
	for i := 0; i <= len(b); i++ {
		if i == len(b) || b[i] == '.' {
			if digits == 0 || n > 255 {
				return false
			}
			parts++
			n, digits = 0, 0
			continue
		}
		if !is(b[i], cDigit) || digits == 3 {
			return false
		}
		n = n*10 + int(b[i]-'0')
		digits++
	}
	return parts == 4
}

// ipv6 checks an IPv6 address leniently: hex groups of at most four digits
// separated by colons, the last one possibly an IPv4 address, at most eight
// groups. Empty groups are not counted, so the RFC 3261 ABNF bug
// "2001:db8:::192.0.2.1" passes, as RFC 5118 §4.10 asks.
func ipv6(b []byte) bool {
	if len(b) < 2 || len(b) > 45 || bytes.IndexByte(b, ':') < 0 {
		return false
	}
	groups, start := 0, 0
	for i := 0; i <= len(b); i++ {
		if i < len(b) && b[i] != ':' {
			continue
		}
		g := b[start:i]
		start = i + 1
		if len(g) == 0 {
			continue
		}
		if bytes.IndexByte(g, '.') >= 0 {
			if i != len(b) || !ipv4(g) {
				return false
			}
			groups += 2
			continue
		}
		if len(g) > 4 {
			return false
		}
		for _, c := range g {
			if !is(c, cHex) {
				return false
			}
		}
		groups++
	}
	return groups <= 8
}
