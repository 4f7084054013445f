package wire

import "encoding/binary"

// lo and hi are the 0x01 and 0x80 in every octet of a word.
const (
	lo = 0x0101010101010101
	hi = 0x8080808080808080
)

// number reads 1*DIGIT at i and returns its end and value, saturated at
// limit+1 so that no run of digits can overflow.
func number(d []byte, i, e int, limit uint64) (int, uint64) {
	var n uint64
	for i < e && is(d[i], cDigit) {
		if n <= limit {
			n = n*10 + uint64(d[i]-'0')
		}
		i++
	}
	if n > limit {
		n = limit + 1
	}
	return i, n
}

// contentLength checks Content-Length = 1*DIGIT (RFC 3261 §20.14) and
// returns its value. Frame and Check share it, so they agree on every
// message.
func contentLength(d []byte, i, e int) (int, *Fault) {
	i = skipLWS(d, i, e)
	j, n := number(d, i, e, MaxMessage)
	if j == i {
		if i < e && d[i] == '-' {
			return 0, bad("Negative Content-Length") // RFC 4475 ncl
		}
		return 0, bad("Bad Content-Length")
	}
	if skipLWS(d, j, e) != e {
		return 0, bad("Bad Content-Length")
	}
	if n > MaxMessage {
		return 0, fault(413, "Content-Length Too Large")
	}
	return int(n), nil
}

// maxCSeq is the largest CSeq number: it must be less than 2**31 (RFC 3261
// §8.1.1.5; RFC 4475 scalar02).
const maxCSeq = 1<<31 - 1

// cseq checks CSeq = 1*DIGIT LWS Method, and that a request's CSeq method is
// its own (RFC 3261 §8.1.1.5; RFC 4475 mismatch01/02).
func (c *checker) cseq(i, e int) *Fault {
	d := c.d
	i = skipLWS(d, i, e)
	j, n := number(d, i, e, maxCSeq)
	if j == i {
		if i < e && d[i] == '-' {
			return bad("Negative CSeq")
		}
		return bad("Bad CSeq")
	}
	if n > maxCSeq {
		return bad("Bad CSeq")
	}
	k := skipLWS(d, j, e)
	m := run(d, k, e, cToken)
	if k == j || m == k || skipLWS(d, m, e) != e {
		return bad("Bad CSeq")
	}
	c.info.CSeq = uint32(n)
	c.info.CSeqMethod = Span{k, m}
	if c.info.Kind == Request && string(d[k:m]) != string(d[c.method.Start:c.method.End]) {
		return bad("CSeq Method Does Not Match")
	}
	return nil
}

// maxForwards checks Max-Forwards = 1*DIGIT, 0-255 (RFC 3261 §20.22).
func (c *checker) maxForwards(i, e int) *Fault {
	d := c.d
	i = skipLWS(d, i, e)
	j, n := number(d, i, e, 255)
	if j == i || n > 255 || skipLWS(d, j, e) != e {
		return bad("Bad Max-Forwards")
	}
	c.info.MaxForwards = int(n)
	return nil
}

// expires checks Expires = delta-seconds = 1*DIGIT. Its size is no fault:
// a value over 2**32-1 means 2**32-1 (RFC 3261 §20.19; RFC 4475 scalar02).
func expires(d []byte, i, e int) *Fault {
	i = skipLWS(d, i, e)
	j := run(d, i, e, cDigit)
	if j == i || skipLWS(d, j, e) != e {
		return bad("Bad Expires")
	}
	return nil
}

// callID checks the Call-ID: one run of visible characters, no LWS inside.
// RFC 3261 §25.1 says word [ "@" word ], but UAs put base64 ('=') and other
// characters in it, and a Call-ID is only ever compared as a string, so
// anything visible is accepted, as Kamailio does.
func (c *checker) callID(i, e int) *Fault {
	d := c.d
	i = skipLWS(d, i, e)
	j := i
	for j < e && d[j] > ' ' && d[j] != 0x7f {
		j++
	}
	if j == i || skipLWS(d, j, e) != e {
		return bad("Bad Call-ID")
	}
	c.info.CallID = Span{i, j}
	return nil
}

// contentType checks media-type = m-type SLASH m-subtype *( SEMI
// m-parameter ), m-parameter = m-attribute EQUAL m-value (RFC 3261 §20.15).
func contentType(d []byte, i, e int) *Fault {
	i = skipLWS(d, i, e)
	t := run(d, i, e, cToken)
	s := skipLWS(d, t, e)
	if t == i || s == e || d[s] != '/' {
		return bad("Bad Content-Type")
	}
	u := skipLWS(d, s+1, e)
	ue := run(d, u, e, cToken)
	if ue == u {
		return bad("Bad Content-Type")
	}
	i = skipLWS(d, ue, e)
	for i < e && d[i] == ';' {
		_, val, next, p := param(d, skipLWS(d, i+1, e), e, false)
		if p != textOK || val.End == val.Start || d[val.Start] == '[' {
			return bad("Bad Content-Type")
		}
		i = skipLWS(d, next, e)
	}
	if i != e {
		return bad("Bad Content-Type")
	}
	return nil
}

// text checks a header value sori gives no grammar to: no control
// characters, except escaped inside a quoted string (a quoted-pair), the
// way RFC 3261 quotes them everywhere.
func text(d []byte, i, e int) bool {
	// Most values have no control octet at all: look 8 octets at a time
	// for one below 0x20 or equal to 0x7f, and read octet by octet (the
	// quoted-pair rule) only when there is one.
	j := i
	for ; j+8 <= e; j += 8 {
		w := binary.LittleEndian.Uint64(d[j:])
		if (w-lo*0x20)&^w&hi != 0 || ((w^(lo*0x7f))-lo)&^(w^(lo*0x7f))&hi != 0 {
			break
		}
	}
	for ; j < e; j++ {
		if ctl(d[j]) {
			break
		}
	}
	if j == e {
		return true
	}
	inQuote := false
	for ; i < e; i++ {
		c := d[i]
		if class[c]&cText != 0 {
			continue
		}
		switch {
		case c == '"':
			inQuote = !inQuote
			continue
		case c == '\\':
			if inQuote && i+1 < e && d[i+1] != '\r' && d[i+1] != '\n' {
				i++
			}
			continue
		}
		if c == '\t' || c == '\n' || (c == '\r' && i+1 < e && d[i+1] == '\n') {
			continue
		}
		return false
	}
	return true
}
