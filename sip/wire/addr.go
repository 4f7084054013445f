package wire

import "bytes"

// addr checks a From or To value (one address), or a Contact, Route or
// Record-Route value (a comma-separated list), RFC 3261 §20.10, §25.1:
//
//	from-spec = ( name-addr / addr-spec ) *( SEMI from-param )
//	name-addr = [ display-name ] LAQUOT addr-spec RAQUOT
//	display-name = *(token LWS) / quoted-string
//
// Any URI scheme is syntax (RFC 4475 unksm2: "To: isbn:..." and
// "From: <http://...>" parse); whether a registrar takes them is policy for
// later handlers. Unquoted display names may carry UTF-8, as phones send
// them, though RFC 3261 wants them quoted. Route and Record-Route liberally
// take an addr-spec without <> too. It returns the To/From tag.
func (c *checker) addr(i, e int, h hdr) (tag Span, f *Fault) {
	d := c.d
	where := h.name()
	multi := h == hContact || h == hRoute || h == hRecordRoute
	i = skipLWS(d, i, e)
	if h == hContact && i < e && d[i] == '*' && skipLWS(d, i+1, e) == e {
		return tag, nil // Contact: * (RFC 3261 §10.2.2)
	}
	for first := true; ; first = false {
		if i == e || d[i] == ',' {
			if first && i == e {
				return tag, bad("Missing " + where + " URI")
			}
			return tag, badIn("Empty Value", where)
		}
		j, f := address(d, i, e, where)
		if f != nil {
			return tag, f
		}
		i = skipLWS(d, j, e)
		for i < e && d[i] == ';' {
			name, val, next, p := param(d, skipLWS(d, i+1, e), e, false)
			if p != textOK {
				return tag, paramFault(p, where)
			}
			v := d[val.Start:val.End]
			n := d[name.Start:name.End]
			switch {
			case (h == hFrom || h == hTo) && eqLower(n, "tag"):
				if len(v) == 0 || v[0] == '"' || v[0] == '[' {
					return tag, badIn("Bad tag", where)
				}
				tag = val
			case h == hContact && eqLower(n, "q"):
				if !qvalue(v) {
					return tag, badIn("Bad q", where)
				}
			case h == hContact && eqLower(n, "expires"):
				if !digitsOnly(v) {
					return tag, badIn("Bad expires", where)
				}
			}
			i = skipLWS(d, next, e)
		}
		if i == e {
			return tag, nil
		}
		if d[i] != ',' || !multi {
			return tag, bad("Malformed " + where)
		}
		i = skipLWS(d, i+1, e)
	}
}

// address checks a name-addr or addr-spec at i and returns the index after
// it.
func address(d []byte, i, e int, where string) (int, *Fault) {
	switch d[i] {
	case '"':
		q, p := quoted(d, i, e)
		switch p {
		case textUnterminated:
			return q, badIn("Unterminated Quoted String", where) // RFC 4475 quotbal
		case textControl:
			return q, badIn("Control Character", where)
		}
		k := skipLWS(d, q, e)
		if k == e || d[k] != '<' {
			return k, bad("Malformed " + where)
		}
		return angle(d, k, e, where)
	case '<':
		return angle(d, i, e, where)
	}
	for k := i; ; {
		t := run(d, k, e, cDisplay)
		if t == k {
			return k, badIn("Bad Display Name", where)
		}
		if k == i && t < e && d[t] == ':' {
			u, p := bareURI(d, i, e)
			if p == uriHeadersUnbracketed {
				return u, bad("Unbracketed URI With Headers in " + where) // RFC 4475 regbadct
			}
			if p != uriOK {
				return u, uriFault(p, where+" URI")
			}
			return u, nil
		}
		n := skipLWS(d, t, e)
		if n < e && d[n] == '<' {
			return angle(d, n, e, where) // RFC 4475 lwsdisp: no LWS before < is fine
		}
		if n == t || n == e {
			return n, badIn("Bad Display Name", where) // RFC 4475 baddn
		}
		k = n
	}
}

// angle checks "<" addr-spec ">" at d[k] == '<'. No LWS may follow "<" or
// precede ">" (RAQUOT and LAQUOT, RFC 4475 badaspec).
func angle(d []byte, k, e int, where string) (int, *Fault) {
	gt := bytes.IndexByte(d[k+1:e], '>')
	if gt < 0 {
		return e, badIn("Unclosed Angle Bracket", where)
	}
	gt += k + 1
	if _, _, p := uriScheme(d, k+1, gt); p != uriOK {
		return gt, uriFault(p, where+" URI")
	}
	return gt + 1, nil
}

// qvalue checks ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
func qvalue(v []byte) bool {
	if len(v) == 0 || len(v) > 5 || (v[0] != '0' && v[0] != '1') {
		return false
	}
	if len(v) == 1 {
		return true
	}
	if v[1] != '.' {
		return false
	}
	for _, c := range v[2:] {
		if !is(c, cDigit) || (v[0] == '1' && c != '0') {
			return false
		}
	}
	return true
}
