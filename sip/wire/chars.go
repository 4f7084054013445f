package wire

// Character classes of RFC 3261 §25.1, one bit each, looked up in one table.
const (
	cAlpha    uint16 = 1 << iota
	cDigit           // DIGIT
	cHex             // HEXDIG
	cToken           // token
	cWord            // word (Call-ID)
	cAbs             // uric of an absoluteURI, without escaped, plus RFC 3986's "[", "]", "#"
	cUser            // unreserved / user-unreserved, plus '#' (see userChars)
	cPassword        // unreserved / "&" / "=" / "+" / "$" / ","
	cParam           // paramchar without escaped
	cHnv             // hnv-unreserved / unreserved (URI headers)
	cHost            // hostname and IPv4 characters
	cScheme          // ALPHA / DIGIT / "+" / "-" / "."
	cIPv6            // HEXDIG / ":" / "."
	cDisplay         // token, plus UTF-8 octets (see addr.go)
	cText            // octets that need no look in text or a quoted string: not CTL, '"' or '\\'
)

const (
	alnum        = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	mark         = "-_.!~*'()"
	reservedSet  = ";/?:@&=+$,"
	tokenExtra   = "-.!%*_+`'~"
	wordExtra    = "-.!%*_+`'~()<>:\\\"/[]?{}"
	userExtra    = "&=+$,;?/"
	passExtra    = "&=+$,"
	paramExtra   = "[]/:&+$"
	hnvExtra     = "[]/?:+$"
	schemeExtra  = "+-."
	hostExtra    = "-._" // '_' is not in RFC 3261 hostname but occurs in real names
	hexLetters   = "ABCDEFabcdef"
	ipv6Extra    = ":."
	digits       = "0123456789"
	alphaLetters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// userChars also admits '#': RFC 3261 wants it escaped (%23) in a user
// part, but phones send dial strings such as "*72#" raw and refusing them
// would refuse real calls.
const userChars = alnum + mark + userExtra + "#"

var class = func() (t [256]uint16) {
	set := func(bit uint16, chars string) {
		for i := 0; i < len(chars); i++ {
			t[chars[i]] |= bit
		}
	}
	set(cAlpha, alphaLetters)
	set(cDigit, digits)
	set(cHex, digits+hexLetters)
	set(cToken, alnum+tokenExtra)
	set(cWord, alnum+wordExtra)
	set(cAbs, alnum+mark+reservedSet+"[]#")
	set(cUser, userChars)
	set(cPassword, alnum+mark+passExtra)
	set(cParam, alnum+mark+paramExtra)
	set(cHnv, alnum+mark+hnvExtra)
	set(cHost, alnum+hostExtra)
	set(cScheme, alnum+schemeExtra)
	set(cIPv6, digits+hexLetters+ipv6Extra)
	set(cDisplay, alnum+tokenExtra)
	for c := 0x80; c <= 0xff; c++ {
		t[c] |= cDisplay
	}
	for c := 0x20; c <= 0xff; c++ {
		if c != 0x7f && c != '"' && c != '\\' {
			t[c] |= cText
		}
	}
	return t
}()

func is(c byte, bits uint16) bool { return class[c]&bits != 0 }

// isWSP is SP or HTAB.
func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// lws reports whether d[i] (i < e) is linear white space inside a header
// value ending at e: SP, HTAB, or the line break of a fold. Field scanning
// guarantees that an LF inside a value is followed by SP or HTAB; a CR
// counts only before its LF (a lone CR is a control character).
func lws(d []byte, i, e int) bool {
	switch d[i] {
	case ' ', '\t', '\n':
		return true
	case '\r':
		return i+1 < e && d[i+1] == '\n'
	}
	return false
}

// skipLWS returns the first index at or after i, below end, that is not LWS.
func skipLWS(d []byte, i, end int) int {
	for i < end {
		switch d[i] {
		case ' ', '\t', '\n':
			i++
			continue
		case '\r':
			if i+1 < end && d[i+1] == '\n' {
				i++
				continue
			}
		}
		break
	}
	return i
}

// run returns the end of the run of bytes of class bits starting at i.
func run(d []byte, i, end int, bits uint16) int {
	for i < end && class[d[i]]&bits != 0 {
		i++
	}
	return i
}

// escapedRun is run for classes that also admit escaped ("%" HEX HEX). ok is
// false when a '%' is not followed by two hex digits.
func escapedRun(d []byte, i, end int, bits uint16) (int, bool) {
	for i < end {
		c := d[i]
		if class[c]&bits != 0 {
			i++
			continue
		}
		if c != '%' {
			break
		}
		if i+2 >= end || !is(d[i+1], cHex) || !is(d[i+2], cHex) {
			return i, false
		}
		i += 3
	}
	return i, true
}

// ctl reports an octet that may appear in a header value only inside a
// quoted-pair: C0 controls other than HTAB, and DEL.
func ctl(c byte) bool { return (c < 0x20 && c != '\t') || c == 0x7f }

// eqLower reports whether b equals lower (a lower-case ASCII string),
// ignoring the case of ASCII letters in b.
func eqLower(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
