// Package numbers turns the forms phones dial into E.164 numbers
// ("+821011112222"), and finds the route for a number by its longest
// matching prefix.
package numbers

import (
	"errors"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Plan is the national numbering of the users (config numbering:).
type Plan struct {
	CountryCode         string // "82"
	NationalPrefix      string // "0": 010-1111-2222 is +82 10 1111 2222
	InternationalPrefix string // "00" (or "001"): 00 44 20... is +44 20...
}

// ErrNotANumber: the user part is not a telephone number.
var ErrNotANumber = errors.New("numbers: not a telephone number")

// E164 normalises a dialled user part: "+82 10-1111-2222", "010-1111-2222"
// (national), "0044..." (international prefix), with RFC 3966 visual
// separators ("-", ".", "(", ")", spaces) removed.
func (p Plan) E164(dialled string) (string, error) {
	d := strings.Map(func(r rune) rune {
		switch r {
		case '-', '.', '(', ')', ' ':
			return -1
		}
		return r
	}, dialled)
	if d == "" {
		return "", ErrNotANumber
	}
	plus := d[0] == '+'
	if plus {
		d = d[1:]
	}
	if d == "" || strings.Trim(d, "0123456789") != "" {
		return "", ErrNotANumber
	}
	switch {
	case plus:
	case p.InternationalPrefix != "" && strings.HasPrefix(d, p.InternationalPrefix):
		d = d[len(p.InternationalPrefix):]
	case p.NationalPrefix != "" && strings.HasPrefix(d, p.NationalPrefix) && p.CountryCode != "":
		d = p.CountryCode + d[len(p.NationalPrefix):]
	default:
		return "", ErrNotANumber // a local user name of digits, or a short code
	}
	if len(d) < 7 || len(d) > 15 { // E.164: at most 15 digits
		return "", ErrNotANumber
	}
	return "+" + d, nil
}

// FromURI reads the number a Request-URI or To URI names: a tel: URI
// (RFC 3966), a sip: URI with user=phone, or a sip: URI whose user part
// is a number ("+82..." or national "0..."); ok is false for user names.
func (p Plan) FromURI(u sip.Uri) (string, bool) {
	user := u.User
	if strings.EqualFold(u.Scheme, "tel") {
		user = u.Raw() // sipgo keeps a tel: URI's number and parameters as they came
	}
	if i := strings.IndexByte(user, ';'); i >= 0 {
		user = user[:i] // tel-URI parameters in a sip: user part (;phone-context=...)
	}
	n, err := p.E164(user)
	return n, err == nil
}
