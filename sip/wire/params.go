package wire

// textProblem is what is wrong with a quoted string or a parameter.
type textProblem uint8

const (
	textOK textProblem = iota
	textUnterminated
	textControl
	textEmpty     // no parameter name (";;", or ";" at the end)
	textBadName   // parameter name is not a token
	textBadValue  // "=" without a value, or a value that is not token / host / quoted-string
	textUnclosedV // "[" without "]" in a value
)

// quoted checks the quoted-string at d[i] == '"' and returns the index after
// its closing quote.
//
//	quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
//	qdtext        = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
//	quoted-pair   = "\" (%x00-09 / %x0B-0C / %x0E-7F)
//
// Control characters are allowed only escaped (RFC 4475 intmeth has \NUL).
func quoted(d []byte, i, e int) (int, textProblem) {
	for i++; i < e; i++ {
		c := d[i]
		if class[c]&cText != 0 {
			continue
		}
		switch {
		case c == '"':
			return i + 1, textOK
		case c == '\\':
			if i+1 >= e {
				return e, textUnterminated
			}
			if n := d[i+1]; n == '\r' || n == '\n' {
				return i, textControl
			}
			i++
		case ctl(c) && !lws(d, i, e):
			return i, textControl
		}
	}
	return e, textUnterminated
}

// param reads a generic-param at i: token [ EQUAL gen-value ], gen-value =
// token / host / quoted-string (RFC 3261 §25.1). With bareIPv6 a value may
// also be an IPv6 address without brackets (Via received, RFC 5118 §4.5).
// next is the index after the parameter.
func param(d []byte, i, e int, bareIPv6 bool) (name, val Span, next int, p textProblem) {
	n := run(d, i, e, cToken)
	name = Span{i, n}
	if n == i {
		if i == e || d[i] == ';' || d[i] == ',' || lws(d, i, e) {
			return name, val, n, textEmpty
		}
		return name, val, n, textBadName
	}
	j := skipLWS(d, n, e)
	if j == e || d[j] != '=' {
		return name, Span{n, n}, n, textOK
	}
	v := skipLWS(d, j+1, e)
	if v == e {
		return name, Span{v, v}, v, textBadValue
	}
	switch d[v] {
	case '"':
		q, p := quoted(d, v, e)
		return name, Span{v, q}, q, p
	case '[':
		k := v + 1
		for k < e && d[k] != ']' && is(d[k], cIPv6) {
			k++
		}
		if k == e || d[k] != ']' || !ipv6(d[v+1:k]) {
			return name, Span{v, k}, k, textUnclosedV
		}
		return name, Span{v, k + 1}, k + 1, textOK
	}
	// Liberal past the grammar's token / host: any visible character but
	// the separators, as phones put ':' and the like in unquoted values
	// and nothing here interprets them.
	w := v
	for w < e && d[w] > ' ' && d[w] < 0x7f && !sep(d[w]) {
		w++
	}
	if w == v {
		return name, Span{v, v}, v, textBadValue
	}
	return name, Span{v, w}, w, textOK
}

// sep reports the characters that end an unquoted parameter value.
func sep(c byte) bool { return c == ';' || c == ',' || c == '"' || c == '<' || c == '>' || c == '=' }

// paramFault names a parameter problem found in where.
func paramFault(p textProblem, where string) *Fault {
	switch p {
	case textUnterminated:
		return badIn("Unterminated Quoted String", where)
	case textControl:
		return badIn("Control Character", where)
	case textEmpty:
		return badIn("Empty Parameter", where)
	case textUnclosedV:
		return badIn("Bad IPv6 Reference", where)
	}
	return badIn("Bad Parameter", where)
}

// digitsOnly reports whether b is 1*DIGIT.
func digitsOnly(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !is(c, cDigit) {
			return false
		}
	}
	return true
}
