package wire

import (
	"hash/fnv"
	"strconv"
)

// Reply builds the response to a faulty request from its raw header lines
// (RFC 3261 §8.2.6.2): the status line, every Via header in order, From, To
// (with a tag added when it has none and code > 100), Call-ID and CSeq, then
// "Server: <server>" when server is not empty, "Content-Length: 0" and the
// blank line. Headers are found in compact or long form, any case, folded
// or not; each is copied as received, its folds turned into single spaces,
// so the client can match the answer to its transaction even when the
// header copied is the faulty one (a bad CSeq is answered with that CSeq).
// The first From, To, Call-ID and CSeq are copied when there are several.
//
// The To tag is derived from the request (the same request always gets the
// same tag, as a stateless UAS must give, §8.2.7). A To that does not parse
// is copied without a tag: there is no telling where one would go.
//
// extra are more header lines ("Retry-After: 5"), written after Server.
//
// reason, server and extra are sanitised: control characters and non-ASCII
// octets are dropped, so no CR or LF can reach the output. An empty reason is
// replaced by the standard phrase for code.
//
// Reply returns nil when no answer is possible: code outside 100-699, data
// not a request, an ACK (never answered, §17.1.1.3), or no Via at all. A
// request without From, To, Call-ID or CSeq is answered with what there is
// (RFC 4475 insuf prefers a 400 to silence). For a stream, pass the bytes up
// to FramingError.End, or the message Frame delimited.
func Reply(data []byte, code int, reason, server string, extra ...string) []byte {
	if code < 100 || code > 699 {
		return nil
	}
	s := skipCRLF(data)
	end, i := lineEnd(data, s)
	if k, m := startKind(data, s, end); k != Request || string(data[s:m]) == "ACK" {
		return nil // responses and ACKs are never answered
	}
	var (
		vias                   []Span
		from, to, callID, cseq Span
	)
	for n := 0; i < len(data) && n < MaxHeaders && i-s <= MaxHeaderBlock; n++ {
		if blank, _ := blankLine(data, i); blank {
			break
		}
		f := nextField(data, i)
		i = f.next
		if !f.ok {
			continue
		}
		v := trimLWS(data, f.val, f.valEnd)
		if v.Start == v.End {
			continue
		}
		switch headerOf(data[f.start:f.nameEnd]) {
		case hVia:
			vias = append(vias, v)
		case hFrom:
			from = first(from, v)
		case hTo:
			to = first(to, v)
		case hCallID:
			callID = first(callID, v)
		case hCSeq:
			cseq = first(cseq, v)
		}
	}
	if len(vias) == 0 {
		return nil
	}

	size := 256 + len(reason) + len(server)
	for _, x := range extra {
		size += 2 + len(x)
	}
	for _, v := range vias {
		size += 8 + v.End - v.Start
	}
	for _, v := range [...]Span{from, to, callID, cseq} {
		size += 16 + v.End - v.Start
	}
	out := make([]byte, 0, size)
	out = append(out, "SIP/2.0 "...)
	out = strconv.AppendInt(out, int64(code), 10)
	out = append(out, ' ')
	if r := appendClean(out, reason); len(r) > len(out) {
		out = r
	} else {
		out = append(out, phrase(code)...)
	}
	out = append(out, "\r\n"...)
	for _, v := range vias {
		out = appendHeader(out, "Via: ", data, v)
	}
	if from.End > from.Start {
		out = appendHeader(out, "From: ", data, from)
	}
	if to.End > to.Start {
		out = appendHeader(out, "To: ", data, to)
		if code > 100 {
			c := checker{d: data}
			if tag, f := c.addr(to.Start, to.End, hTo); f == nil && tag.End == tag.Start {
				out = out[:len(out)-2]
				out = append(out, ";tag="...)
				out = strconv.AppendUint(out, toTag(data, vias[0], from, callID, cseq), 16)
				out = append(out, "\r\n"...)
			}
		}
	}
	if callID.End > callID.Start {
		out = appendHeader(out, "Call-ID: ", data, callID)
	}
	if cseq.End > cseq.Start {
		out = appendHeader(out, "CSeq: ", data, cseq)
	}
	if server != "" {
		if r := appendClean(append(out, "Server: "...), server); len(r) > len(out)+len("Server: ") {
			out = append(r, "\r\n"...)
		}
	}
	for _, x := range extra {
		if r := appendClean(out, x); len(r) > len(out) {
			out = append(r, "\r\n"...)
		}
	}
	return append(out, "Content-Length: 0\r\n\r\n"...)
}

func first(had, v Span) Span {
	if had.End > had.Start {
		return had
	}
	return v
}

// trimLWS drops the LWS at both ends of data[i:e].
func trimLWS(data []byte, i, e int) Span {
	i = skipLWS(data, i, e)
	for e > i && (isWSP(data[e-1]) || data[e-1] == '\r' || data[e-1] == '\n') {
		e--
	}
	return Span{i, e}
}

// appendHeader appends name, the value with each fold (and any stray CR or
// LF) turned into one space, and CRLF.
func appendHeader(out []byte, name string, data []byte, v Span) []byte {
	out = append(out, name...)
	for i := v.Start; i < v.End; i++ {
		c := data[i]
		if c != '\r' && c != '\n' {
			out = append(out, c)
			continue
		}
		for i+1 < v.End && (data[i+1] == '\r' || data[i+1] == '\n' || isWSP(data[i+1])) {
			i++
		}
		out = append(out, ' ')
	}
	return append(out, "\r\n"...)
}

// appendClean appends the printable ASCII of s, trimmed, at most 128 bytes.
func appendClean(out []byte, s string) []byte {
	n := len(out)
	for i := 0; i < len(s) && len(out)-n < 128; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f && (c != ' ' || len(out) > n) {
			out = append(out, c)
		}
	}
	for len(out) > n && out[len(out)-1] == ' ' {
		out = out[:len(out)-1]
	}
	return out
}

// toTag derives the To tag from the request's top Via, From, Call-ID and
// CSeq, so that a retransmission gets the same one.
func toTag(data []byte, spans ...Span) uint64 {
	h := fnv.New64a()
	for _, s := range spans {
		_, _ = h.Write(data[s.Start:s.End])
		_, _ = h.Write([]byte{0})
	}
	return h.Sum64()
}

// phrase is the RFC 3261 §21 reason phrase of the codes sori answers with.
func phrase(code int) string {
	switch code {
	case 100:
		return "Trying"
	case 400:
		return "Bad Request"
	case 413:
		return "Request Entity Too Large"
	case 416:
		return "Unsupported URI Scheme"
	case 420:
		return "Bad Extension"
	case 483:
		return "Too Many Hops"
	case 500:
		return "Server Internal Error"
	case 501:
		return "Not Implemented"
	case 503:
		return "Service Unavailable"
	case 505:
		return "Version Not Supported"
	case 513:
		return "Message Too Large"
	}
	return "" // an empty Reason-Phrase is valid
}
