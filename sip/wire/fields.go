package wire

import "bytes"

// field is one header field of a header block, as offsets into the data.
type field struct {
	start   int  // first byte of the field (its name)
	nameEnd int  // end of the header name
	val     int  // first byte after the colon
	valEnd  int  // end of the value: before the CRLF (or bare LF) of its last line
	next    int  // first byte after that line end
	cont    bool // the value spans folded lines
	ok      bool // name is a token followed by optional SP/HTAB and ':'
}

// lineEnd finds the end of the line starting at i: the index of its LF (or of
// the CR before it) and the index after the LF. Without an LF the line runs
// to the end of d and next is len(d).
func lineEnd(d []byte, i int) (end, next int) {
	j := bytes.IndexByte(d[i:], '\n')
	if j < 0 {
		return len(d), len(d)
	}
	end = i + j
	next = end + 1
	if end > i && d[end-1] == '\r' {
		end--
	}
	return end, next
}

// blankLine reports whether the line at i is empty, and where the next byte
// after it is. Lines end in CRLF or, liberally, in a bare LF.
func blankLine(d []byte, i int) (bool, int) {
	if i < len(d) && d[i] == '\n' {
		return true, i + 1
	}
	if i+1 < len(d) && d[i] == '\r' && d[i+1] == '\n' {
		return true, i + 2
	}
	return false, i
}

// nextField reads the header field starting at i (which must not be a blank
// line): its first line and every following line that starts with SP or
// HTAB (folding, RFC 3261 §7.3.1). The end of d ends the field.
func nextField(d []byte, i int) (f field) {
	f.start = i
	end, next := lineEnd(d, i)
	for next < len(d) && isWSP(d[next]) {
		f.cont = true
		end, next = lineEnd(d, next)
	}
	f.valEnd, f.next = end, next
	n := run(d, i, end, cToken)
	f.nameEnd = n
	for n < end && isWSP(d[n]) {
		n++
	}
	if n > i && n < end && d[n] == ':' {
		f.ok = true
		f.val = n + 1
	}
	return f
}

// skipCRLF returns the index after the CRLFs (and bare LFs) at the start of d.
func skipCRLF(d []byte) int {
	i := 0
	for {
		if i < len(d) && d[i] == '\n' {
			i++
		} else if i+1 < len(d) && d[i] == '\r' && d[i+1] == '\n' {
			i += 2
		} else {
			return i
		}
	}
}
