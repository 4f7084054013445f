package wire

// hdr is a header sori checks the grammar of.
type hdr uint8

const (
	hOther hdr = iota
	hVia
	hFrom
	hTo
	hCallID
	hCSeq
	hMaxForwards
	hContentLength
	hContact
	hRoute
	hRecordRoute
	hExpires
	hContentType
	hCount
)

var hdrNames = [hCount]string{"", "Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards",
	"Content-Length", "Contact", "Route", "Record-Route", "Expires", "Content-Type"}

func (h hdr) name() string { return hdrNames[h] }

// single reports the headers a message may carry once only (RFC 3261 §7.3:
// they are not comma-separated lists; RFC 4475 multi01, mcl01).
func (h hdr) single() bool {
	switch h {
	case hFrom, hTo, hCallID, hCSeq, hMaxForwards, hContentLength:
		return true
	}
	return false
}

// headerOf identifies a header name (a token), long or compact form, in any
// case (RFC 3261 §7.3.1, §7.3.3).
func headerOf(n []byte) hdr {
	switch len(n) {
	case 1:
		switch n[0] | 0x20 {
		case 'v':
			return hVia
		case 'f':
			return hFrom
		case 't':
			return hTo
		case 'i':
			return hCallID
		case 'l':
			return hContentLength
		case 'm':
			return hContact
		case 'c':
			return hContentType
		}
	case 2:
		if eqLower(n, "to") {
			return hTo
		}
	case 3:
		if eqLower(n, "via") {
			return hVia
		}
	case 4:
		if eqLower(n, "from") {
			return hFrom
		}
		if eqLower(n, "cseq") {
			return hCSeq
		}
	case 5:
		if eqLower(n, "route") {
			return hRoute
		}
	case 7:
		switch {
		case eqLower(n, "call-id"):
			return hCallID
		case eqLower(n, "contact"):
			return hContact
		case eqLower(n, "expires"):
			return hExpires
		}
	case 12:
		switch {
		case eqLower(n, "max-forwards"):
			return hMaxForwards
		case eqLower(n, "record-route"):
			return hRecordRoute
		case eqLower(n, "content-type"):
			return hContentType
		}
	case 14:
		if eqLower(n, "content-length") {
			return hContentLength
		}
	}
	return hOther
}

// checker is the state of one Check.
type checker struct {
	d       []byte
	info    Info
	method  Span   // request method
	length  int    // Content-Length value
	pending *Fault // a 416 reported only if nothing else is wrong
	seen    [hCount]uint8
	topVia  bool // the next Via header is the first one
}

// Check validates one whole datagram (UDP): start line, header framing
// (folding, compact forms, case-insensitive names), the grammar of Via,
// From, To, Contact, Route, Record-Route, Call-ID, CSeq, Max-Forwards,
// Content-Length, Content-Type and Expires (RFC 3261 §7, §8.1.1, §20, §25;
// RFC 4475; RFC 5118), control characters everywhere else, Content-Length
// against the datagram (larger than what is there is a fault; trailing bytes
// after the body are ignored, RFC 3261 §18.3), and the limits above. It
// returns the first fault found, or nil. For a stream, call it on the bytes
// Frame delimits: Check(buf[skip:n]).
//
// Info.Kind tells whether an answer is possible: never to Garbage or to a
// Response. A valid message costs no allocation.
func Check(data []byte) (Info, *Fault) {
	c := checker{d: data, topVia: true}
	c.info.MaxForwards = -1
	f := c.check()
	return c.info, f
}

func (c *checker) check() *Fault {
	d := c.d
	s := skipCRLF(d)
	c.info.Start = s
	if s == len(d) {
		return bad("Empty Message")
	}
	end, i := lineEnd(d, s)
	if f := c.startLine(s, end); f != nil {
		return f
	}
	switch {
	case len(d) > MaxMessage:
		return tooLarge("Message Too Large")
	case end-s > MaxHeaderLine:
		return tooLarge("Start Line Too Long")
	case i < len(d) && isWSP(d[i]):
		return bad("Folded Start Line") // a start line cannot be folded
	}
	for n := 0; ; n++ {
		if blank, b := blankLine(d, i); blank {
			c.info.Body = b
			break
		}
		if i == len(d) {
			return bad("Missing Blank Line After Headers")
		}
		if n == MaxHeaders {
			return tooLarge("Too Many Headers")
		}
		f := nextField(d, i)
		switch {
		case f.valEnd-f.start > MaxHeaderLine:
			return tooLarge("Header Too Long")
		case f.next-s > MaxHeaderBlock:
			return tooLarge("Header Block Too Large")
		case !f.ok:
			return bad("Malformed Header") // no colon, or a name that is no token
		}
		if fl := c.header(&f); fl != nil {
			return fl
		}
		if f.valEnd == len(d) {
			return bad("Missing Blank Line After Headers")
		}
		i = f.next
	}
	if f := c.missing(); f != nil {
		return f
	}
	c.info.Length = len(d)
	if c.seen[hContentLength] > 0 {
		if c.length > len(d)-c.info.Body {
			return bad("Content-Length Larger Than Message") // RFC 4475 clerr
		}
		c.info.Length = c.info.Body + c.length
	}
	return c.pending
}

// header checks one header field.
func (c *checker) header(f *field) *Fault {
	d := c.d
	h := headerOf(d[f.start:f.nameEnd])
	if h != hOther {
		if c.seen[h] < 2 {
			c.seen[h]++
		}
		if c.seen[h] > 1 && h.single() {
			return bad("Multiple " + h.name())
		}
	}
	i, e := f.val, f.valEnd
	switch h {
	case hVia:
		top := c.topVia
		c.topVia = false
		return c.via(i, e, top)
	case hFrom, hTo, hContact, hRoute, hRecordRoute:
		_, fl := c.addr(i, e, h)
		return fl
	case hCallID:
		return c.callID(i, e)
	case hCSeq:
		return c.cseq(i, e)
	case hMaxForwards:
		return c.maxForwards(i, e)
	case hContentLength:
		n, fl := contentLength(d, i, e)
		c.length = n
		return fl
	case hExpires:
		return expires(d, i, e)
	case hContentType:
		return contentType(d, i, e)
	}
	if !text(d, i, e) {
		name := d[f.start:f.nameEnd]
		if len(name) > 24 {
			name = name[:24]
		}
		return badIn("Control Character", string(name))
	}
	return nil
}

// missing reports the mandatory headers a message lacks (RFC 3261 §8.1.1,
// RFC 4475 insuf). Max-Forwards may be missing: a proxy adds it (§16.6
// step 3) and RFC 2543 requests lack it (RFC 4475 inv2543).
func (c *checker) missing() *Fault {
	reason := ""
	for _, h := range [...]hdr{hVia, hFrom, hTo, hCallID, hCSeq} {
		if c.seen[h] == 0 {
			if reason == "" {
				reason = "Missing " + h.name()
			} else {
				reason += ", " + h.name()
			}
		}
	}
	if reason != "" {
		return bad(reason)
	}
	return nil
}
