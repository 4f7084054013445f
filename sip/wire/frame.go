package wire

import (
	"bytes"
	"errors"
)

// ErrIncomplete is Frame's answer when the buffer does not hold a whole
// message yet: read more and call Frame again.
var ErrIncomplete = errors.New("wire: incomplete message")

// FramingError is a stream that cannot be framed: the next message has no,
// a negative, a non-numeric or several Content-Length headers, or its header
// block or body is over the limits. The caller answers it (Reply) when it
// can, then closes the connection: there is no telling where the next
// message would start.
type FramingError struct {
	Fault
	// End is the offset in the buffer up to which the message's header
	// lines are complete: Reply(buf[skip:End], ...) builds the answer.
	End int
}

func (e *FramingError) Error() string { return "wire: cannot frame stream: " + e.Fault.String() }

// Frame finds the first message in a stream buffer (TCP, TLS; RFC 3261
// §18.3: Content-Length is mandatory on streams).
//
// skip counts the CRLFs (and bare LFs) before the message: keepalives
// between messages (RFC 5626 §3.5.1, RFC 3261 §7.5), which the caller may
// drop now whatever err is (a "\r\n\r\n" ping is skip == 4 with nothing
// after it). When err is nil the message is buf[skip:n]: check it with
// Check(buf[skip:n]), then consume n bytes (skip included). Otherwise n is
// 0 and err is ErrIncomplete (more bytes are needed) or a *FramingError.
//
// Frame only frames: a message it frames may still be invalid, and Check
// says so. It costs one scan of the buffer, so calling it again as bytes
// arrive is linear in what is buffered, at most MaxHeaderBlock before the
// end of the headers is seen.
func Frame(buf []byte) (skip, n int, err error) {
	skip = skipCRLF(buf)
	if skip < len(buf) && buf[skip] == '\r' && skip+1 == len(buf) {
		return skip, 0, ErrIncomplete // half a CRLF
	}
	d := buf[skip:]
	if len(d) == 0 {
		return skip, 0, ErrIncomplete
	}
	end, body := headerEnd(d)
	if end < 0 {
		if len(d) > MaxHeaderBlock {
			return skip, 0, framing(513, "Header Block Too Large", skip+lastLineEnd(d[:MaxHeaderBlock]))
		}
		return skip, 0, ErrIncomplete
	}
	if end > MaxHeaderBlock {
		return skip, 0, framing(513, "Header Block Too Large", skip+lastLineEnd(d[:MaxHeaderBlock]))
	}
	h := d[:end] // start line and header lines, each with its line end
	le, i := lineEnd(h, 0)
	if k, _ := startKind(h, 0, le); k == Garbage {
		return skip, 0, framing(400, "Not a SIP Message", skip+end)
	}
	length, count := 0, 0
	for i < len(h) {
		f := nextField(h, i)
		if f.ok && headerOf(h[f.start:f.nameEnd]) == hContentLength {
			count++
			if count > 1 {
				return skip, 0, framing(400, "Multiple Content-Length", skip+end)
			}
			v, fl := contentLength(h, f.val, f.valEnd)
			if fl != nil {
				return skip, 0, &FramingError{Fault: *fl, End: skip + end}
			}
			length = v
		}
		i = f.next
	}
	if count == 0 {
		return skip, 0, framing(400, "Missing Content-Length", skip+end)
	}
	if body+length > MaxMessage {
		return skip, 0, framing(413, "Content-Length Too Large", skip+end)
	}
	if body+length > len(d) {
		return skip, 0, ErrIncomplete
	}
	return skip, skip + body + length, nil
}

func framing(code int, reason string, end int) *FramingError {
	return &FramingError{Fault: Fault{Code: code, Reason: reason}, End: end}
}

// headerEnd finds the blank line that ends the header block of d: it returns
// the offset just after the last header line's line end and the offset of
// the body, or -1 when the blank line is not in d yet. A folded line starts
// with SP or HTAB, so an LF followed by CRLF or LF is always the end.
func headerEnd(d []byte) (end, body int) {
	for i := 0; ; {
		j := bytes.IndexByte(d[i:], '\n')
		if j < 0 {
			return -1, -1
		}
		i += j + 1
		if blank, b := blankLine(d, i); blank {
			return i, b
		}
	}
}

// lastLineEnd is the offset after the last LF in d (0 without one).
func lastLineEnd(d []byte) int { return bytes.LastIndexByte(d, '\n') + 1 }
