package wire

// Limits on what Check and Frame accept. Anything larger is refused with 513
// Message Too Large (RFC 3261 §21.5.14), or 413 Request Entity Too Large
// (§21.4.11) when it is the body that is too large.
const (
	// MaxMessage is the largest message, start line to the end of the body
	// (the largest UDP payload, and sipgo's ParseMaxMessageLength).
	MaxMessage = 65535
	// MaxHeaders is the most header fields a message may carry (RFC 4475
	// longreq, the longest torture message, has 49).
	MaxHeaders = 256
	// MaxHeaderLine is the longest header field, folded lines included.
	MaxHeaderLine = 16 << 10
	// MaxHeaderBlock is the longest start line plus header block. On a stream
	// it bounds what is buffered before the end of the headers is seen.
	MaxHeaderBlock = 32 << 10
)

// Fault is why a message is refused, as the SIP answer to give.
type Fault struct {
	Code   int    // 400, 413, 416, 505, 513
	Reason string // reason phrase naming the fault: short, ASCII, no CR or LF
}

func (f *Fault) String() string { return itoa3(f.Code) + " " + f.Reason }

// Kind of message.
type Kind uint8

const (
	Garbage  Kind = iota // not recognisably SIP: no answer is possible
	Request              // a start line of the form Method SP ...
	Response             // a start line beginning "SIP/"
)

func (k Kind) String() string {
	switch k {
	case Request:
		return "request"
	case Response:
		return "response"
	}
	return "garbage"
}

// Span is data[Start:End] of the checked bytes; the zero Span is empty.
type Span struct{ Start, End int }

// In returns the bytes of s in data.
func (s Span) In(data []byte) []byte { return data[s.Start:s.End] }

// Info is what Check learned, as offsets into the checked bytes. When Check
// faults, the fields it reached before the fault are set.
type Info struct {
	Kind   Kind
	Method string // request method; "" for responses (no copy for the usual methods)
	Status int    // response status code; 0 for requests
	Start  int    // offset of the start line (leading CRLFs are skipped, RFC 3261 §7.5)
	Body   int    // offset of the first body byte
	// Length is where the message ends in data: Body plus Content-Length, or
	// len(data) for a datagram without Content-Length. Bytes after it are
	// not part of the message (RFC 3261 §18.3; RFC 4475 3.1.1.8 dblreq).
	Length      int
	URI         Span   // Request-URI
	CallID      Span   // Call-ID value
	CSeq        uint32 // CSeq sequence number
	CSeqMethod  Span   // CSeq method
	MaxForwards int    // Max-Forwards value; -1 when the header is absent
	Branch      Span   // branch parameter of the top Via; empty when it has none
}

func fault(code int, reason string) *Fault { return &Fault{Code: code, Reason: reason} }

func bad(reason string) *Fault { return &Fault{Code: 400, Reason: reason} }

// badIn is a 400 whose reason names the header (or part) where it was found.
func badIn(what, where string) *Fault { return &Fault{Code: 400, Reason: what + " in " + where} }

func tooLarge(reason string) *Fault { return &Fault{Code: 513, Reason: reason} }

func itoa3(n int) string {
	if n < 100 || n > 999 {
		return "???"
	}
	return string([]byte{byte('0' + n/100), byte('0' + n/10%10), byte('0' + n%10)})
}
