package wire

// via checks one Via header value (RFC 3261 §20.42, §25.1):
//
//	Via           = ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)
//	via-parm      = sent-protocol LWS sent-by *( SEMI via-params )
//	sent-protocol = protocol-name SLASH protocol-version SLASH transport
//	sent-by       = host [ COLON port ]
//
// SLASH, COLON, SEMI and COMMA allow LWS on both sides (RFC 4475 wsinv).
// Any transport token is accepted (transports.dat). top marks the first Via
// header of the message, whose first value's branch is recorded.
func (c *checker) via(i, e int, top bool) *Fault {
	d := c.d
	for first := true; ; first = false {
		i = skipLWS(d, i, e)
		if i == e || d[i] == ',' {
			if first && i == e {
				return bad("Malformed Via")
			}
			return badIn("Empty Value", "Via") // RFC 4475 badinv01
		}
		proto := run(d, i, e, cToken)
		if proto == i {
			return bad("Malformed Via")
		}
		s1 := skipLWS(d, proto, e)
		if s1 == e || d[s1] != '/' {
			return bad("Malformed Via")
		}
		v := skipLWS(d, s1+1, e)
		ve := run(d, v, e, cToken)
		s2 := skipLWS(d, ve, e)
		if ve == v || s2 == e || d[s2] != '/' {
			return bad("Malformed Via")
		}
		if eqLower(d[i:proto], "sip") && string(d[v:ve]) != "2.0" {
			return fault(505, "Version Not Supported in Via") // RFC 4475 badvers
		}
		t := skipLWS(d, s2+1, e)
		te := run(d, t, e, cToken)
		h := skipLWS(d, te, e)
		if te == t || h == te || h == e {
			return bad("Malformed Via")
		}
		he, p := host(d, h, e)
		if p != uriOK {
			if p == uriBadIPv6 {
				return badIn("Bad IPv6 Reference", "Via")
			}
			return badIn("Bad Host", "Via")
		}
		i = skipLWS(d, he, e)
		if i < e && d[i] == ':' {
			ps := skipLWS(d, i+1, e)
			pe := run(d, ps, e, cDigit)
			if !portOK(d[ps:pe]) {
				return badIn("Bad Port", "Via")
			}
			i = skipLWS(d, pe, e)
		}
		for i < e && d[i] == ';' {
			name, val, next, p := param(d, skipLWS(d, i+1, e), e, true)
			if p != textOK {
				return paramFault(p, "Via")
			}
			if f := c.viaParam(d[name.Start:name.End], val, top && first); f != nil {
				return f
			}
			i = skipLWS(d, next, e)
		}
		if i == e {
			return nil
		}
		if d[i] != ',' {
			return bad("Malformed Via")
		}
		i++
	}
}

// viaParam checks the via-params RFC 3261 gives a grammar for (and rport,
// RFC 3581); others are generic-params, already checked.
func (c *checker) viaParam(name []byte, val Span, top bool) *Fault {
	d := c.d
	v := d[val.Start:val.End]
	switch {
	case eqLower(name, "branch"):
		if len(v) == 0 || v[0] == '"' || v[0] == '[' {
			return badIn("Bad branch", "Via")
		}
		if top {
			c.info.Branch = val
		}
	case eqLower(name, "received"):
		// IPv4address / IPv6address; RFC 5118 §4.5 asks to accept a
		// bracketed IPv6reference too.
		if len(v) > 1 && v[0] == '[' {
			v = v[1 : len(v)-1]
		}
		if !ipv4(v) && !ipv6(v) {
			return badIn("Bad received", "Via")
		}
	case eqLower(name, "maddr"):
		ok := len(v) > 0 && v[0] != '"'
		if ok && v[0] != '[' {
			ok = hostname(v) && run(v, 0, len(v), cHost) == len(v)
		}
		if !ok {
			return badIn("Bad maddr", "Via")
		}
	case eqLower(name, "ttl"):
		if !digitsOnly(v) || len(v) > 3 || atoi(v) > 255 {
			return badIn("Bad ttl", "Via")
		}
	case eqLower(name, "rport"):
		if len(v) > 0 && (!digitsOnly(v) || !portOK(v)) {
			return badIn("Bad rport", "Via")
		}
	default:
		// A generic value is a token, a host or a quoted-string; an
		// unbracketed IPv6 address is only allowed in received.
		for _, b := range v {
			if b == ':' && v[0] != '"' && v[0] != '[' {
				return badIn("Bad Parameter", "Via")
			}
		}
	}
	return nil
}

// atoi is the value of a short run of digits.
func atoi(b []byte) int {
	n := 0
	for _, c := range b {
		n = n*10 + int(c-'0')
	}
	return n
}
