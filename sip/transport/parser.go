package transport

import (
	"bytes"
	"reflect"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// sipgo's parser refuses some messages RFC 3261 allows, which sip/wire has
// already found valid (see sip/wire's sipgo_test.go, which pins each); what
// is worked around here:
//   - bare LF line ends (RFC 3261 §7 lets a receiver accept them): the
//     header block is given CRLFs before it is parsed;
//   - a Contact list with an addr-spec after ", " (sipgo does not skip the
//     space), and a Contact URI whose scheme has '+', '-', '.' or digits
//     (RFC 3261 §25.1 allows them): the first is parsed again without the
//     spaces, the second is kept as a plain header (sori reaches SIP URIs
//     only; the registrar refuses such a binding).

// newParser is sipgo's parser with the lenient Contact parser.
func newParser() *sip.Parser {
	m := make(map[string]sip.HeaderParser, len(sip.DefaultHeadersParser())) // a copy: the default map is sipgo's global
	for k, v := range sip.DefaultHeadersParser() {
		m[k] = v
	}
	contact := m["contact"]
	comma := newCommaProtocol(contact)
	lenient := func(name []byte, value string) (sip.Header, error) {
		h, err := contact(name, value)
		if err == nil || comma.is(err) {
			return h, err
		}
		// What follows a comma in a list comes with its LWS.
		if trimmed := strings.TrimLeft(value, " \t"); len(trimmed) < len(value) {
			h, err := contact(name, trimmed)
			switch {
			case err == nil:
				return h, nil
			case comma.is(err):
				return h, comma.at(comma.index(err) + len(value) - len(trimmed))
			}
		}
		return sip.NewHeader("Contact", value), nil
	}
	m["contact"], m["m"] = lenient, lenient
	return sip.NewParser(sip.WithHeadersParsers(m))
}

// commaProtocol is how a sipgo header parser says a list goes on: it
// returns the header before the comma and an error of an unexported int
// type holding the comma's index, and the parser calls it again on what
// follows. A wrapper that parses a shifted value must shift that index; the
// type is taken from sipgo itself, so it stays right across versions.
type commaProtocol struct{ typ reflect.Type }

func newCommaProtocol(p sip.HeaderParser) commaProtocol {
	_, err := p([]byte("contact"), "<sip:a@b>,<sip:c@d>")
	return commaProtocol{reflect.TypeOf(err)}
}

func (c commaProtocol) is(err error) bool {
	return err != nil && c.typ != nil && reflect.TypeOf(err) == c.typ
}

func (c commaProtocol) index(err error) int { return int(reflect.ValueOf(err).Int()) }

func (c commaProtocol) at(i int) error {
	v := reflect.New(c.typ).Elem()
	v.SetInt(int64(i))
	return v.Interface().(error)
}

// withCRLF returns msg with every bare LF of its header block (before
// body) made CRLF, or msg itself when there is none.
func withCRLF(msg []byte, body int) []byte {
	head := msg[:body]
	if bytes.Count(head, []byte{'\n'}) == bytes.Count(head, []byte{'\r'}) {
		return msg
	}
	out := make([]byte, 0, len(msg)+64)
	for i, c := range head {
		if c == '\n' && (i == 0 || head[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return append(out, msg[body:]...)
}
