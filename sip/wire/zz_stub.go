// TEMPORARY stub until the real package lands; not committed.
package wire

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

type Fault struct {
	Code   int
	Reason string
}

type Kind uint8

const (
	Garbage Kind = iota
	Request
	Response
)

type Info struct {
	Kind   Kind
	Method string
	Status int
	Body   int
	Length int
}

func Check(data []byte) (Info, *Fault) {
	var in Info
	if bytes.HasPrefix(data, []byte("SIP/")) {
		in.Kind = Response
	} else if i := bytes.IndexByte(data, ' '); i > 0 {
		in.Kind = Request
		in.Method = string(data[:i])
	}
	return in, nil
}

var ErrIncomplete = errors.New("wire: incomplete message")

type FramingError struct{ Fault }

func (e *FramingError) Error() string { return e.Reason }

func Frame(buf []byte) (skip, n int, err error) {
	for skip < len(buf) && (buf[skip] == '\r' || buf[skip] == '\n') {
		skip++
	}
	b := buf[skip:]
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return skip, 0, ErrIncomplete
	}
	cl := -1
	for _, line := range strings.Split(string(b[:end]), "\r\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "content-length" || name == "l" {
			x, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || x < 0 {
				return skip, 0, &FramingError{Fault{400, "Bad Content-Length"}}
			}
			cl = x
		}
	}
	if cl < 0 {
		return skip, 0, &FramingError{Fault{400, "Missing Content-Length"}}
	}
	if end+4+cl > len(b) {
		return skip, 0, ErrIncomplete
	}
	return skip, end + 4 + cl, nil
}

func Reply(data []byte, code int, reason, server string) []byte {
	if bytes.HasPrefix(data, []byte("SIP/")) || bytes.HasPrefix(data, []byte("ACK ")) {
		return nil
	}
	var out strings.Builder
	out.WriteString("SIP/2.0 " + strconv.Itoa(code) + " " + reason + "\r\n")
	hasVia := false
	for _, line := range strings.Split(string(data), "\r\n") {
		if line == "" {
			break
		}
		name, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "via", "v":
			hasVia = true
			out.WriteString(line + "\r\n")
		case "from", "f", "call-id", "i", "cseq":
			out.WriteString(line + "\r\n")
		case "to", "t":
			if !strings.Contains(line, "tag=") {
				line += ";tag=stub"
			}
			out.WriteString(line + "\r\n")
		}
	}
	if !hasVia {
		return nil
	}
	if server != "" {
		out.WriteString("Server: " + server + "\r\n")
	}
	out.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(out.String())
}
