package ng

import (
	"bytes"
	"iter"
	"strconv"
	"unsafe"
)

// Raw is one bencoded value left undecoded: ParseReply leaves the lists and
// dictionaries of a reply so, as views of the datagram (checked when
// parsed, so always well formed). Its methods walk it without building
// maps: reading a few fields of a delete reply's stats this way allocates
// nothing but what is returned.
type Raw string

func (r Raw) bytes() []byte {
	if len(r) == 0 {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(string(r)), len(r))
}

// decode is r decoded one level down (its nested lists and dictionaries
// stay Raw; a dictionary is a map[string]any); nil for an empty or
// malformed r.
func (r Raw) decode() any {
	if len(r) == 0 {
		return nil
	}
	v, _, err := decodeValue(r.bytes(), 0, true)
	if err != nil {
		return nil
	}
	return v
}

// size is the length of the value b starts with, -1 if b does not hold a
// whole one. It trusts what ParseReply checked (the syntax, as skipValue
// does) and only finds the end: no recursion, no integer parsed, strings
// jumped over.
func size(b []byte) int {
	i, depth := 0, 0
	for i < len(b) {
		switch c := b[i]; {
		case c == 'i':
			i++
			for i < len(b) && b[i] != 'e' { // a few digits: no call to IndexByte
				i++
			}
			if i == len(b) {
				return -1
			}
			i++
		case c == 'l' || c == 'd':
			depth++
			i++
			continue
		case c == 'e':
			depth--
			i++
			if depth < 0 {
				return -1
			}
		case c >= '0' && c <= '9':
			n := 0
			for i < len(b) && b[i] >= '0' && b[i] <= '9' && n <= 1<<32 {
				n = n*10 + int(b[i]-'0')
				i++
			}
			if i >= len(b) || b[i] != ':' || n > len(b)-i-1 {
				return -1
			}
			i += 1 + n
		default:
			return -1
		}
		if depth == 0 {
			return i
		}
	}
	return -1
}

// key splits b, at a dictionary's key, into the key and what follows it.
func key(b []byte) (string, []byte, bool) {
	n := size(b)
	if n < 0 || b[0] < '0' || b[0] > '9' {
		return "", nil, false
	}
	colon := bytes.IndexByte(b[:n], ':')
	return view(b[colon+1 : n]), b[n:], true
}

// All yields a dictionary's keys and values, in the order they came.
func (r Raw) All() iter.Seq2[string, Raw] {
	return func(yield func(string, Raw) bool) {
		b := r.bytes()
		if len(b) == 0 || b[0] != 'd' {
			return
		}
		b = b[1:]
		for len(b) > 0 && b[0] != 'e' {
			k, rest, ok := key(b)
			if !ok {
				return
			}
			n := size(rest)
			if n < 0 || !yield(k, Raw(view(rest[:n]))) {
				return
			}
			b = rest[n:]
		}
	}
}

// Get is a dictionary's value under key ("" when absent or r is not a
// dictionary).
func (r Raw) Get(k string) Raw {
	b := r.bytes()
	if len(b) == 0 || b[0] != 'd' {
		return ""
	}
	b = b[1:]
	for len(b) > 0 && b[0] != 'e' {
		s, rest, ok := key(b)
		if !ok {
			return ""
		}
		n := size(rest)
		if n < 0 {
			return ""
		}
		if s == k {
			return Raw(view(rest[:n]))
		}
		b = rest[n:]
	}
	return ""
}

// At is a list's i-th element ("" when absent or r is not a list).
func (r Raw) At(i int) Raw {
	b := r.bytes()
	if len(b) == 0 || b[0] != 'l' || i < 0 {
		return ""
	}
	b = b[1:]
	for len(b) > 0 && b[0] != 'e' {
		n := size(b)
		if n < 0 {
			return ""
		}
		if i == 0 {
			return Raw(view(b[:n]))
		}
		i, b = i-1, b[n:]
	}
	return ""
}

// Str is a string value, or an integer formatted (as Dict.Str).
func (r Raw) Str() string {
	if len(r) == 0 {
		return ""
	}
	switch c := r[0]; {
	case c >= '0' && c <= '9':
		s, _, err := decodeString(r.bytes())
		if err == nil {
			return s
		}
	case c == 'i':
		if n, ok := r.Int(); ok {
			return strconv.FormatInt(n, 10)
		}
	}
	return ""
}

// Int is an integer value, accepting a decimal string (as Dict.Int).
func (r Raw) Int() (int64, bool) {
	if len(r) == 0 {
		return 0, false
	}
	if r[0] == 'i' && r[len(r)-1] == 'e' {
		n, err := strconv.ParseInt(string(r[1:len(r)-1]), 10, 64)
		return n, err == nil
	}
	if s := r.Str(); s != "" && r[0] != 'i' {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// A Reader reads a Raw value in one pass, descending into the lists and
// dictionaries a caller wants and jumping over the rest: walking a delete
// reply's stats with Get and At finds each value's end again at every
// level down (seven passes over a stream's bytes), the Reader once.
// A method called on what is not of its kind skips it.
type Reader struct{ b []byte }

// Reader is a Reader at the start of r.
func (r Raw) Reader() Reader { return Reader{r.bytes()} }

// Skip passes over one value.
func (rd *Reader) Skip() {
	if n := size(rd.b); n > 0 {
		rd.b = rd.b[n:]
		return
	}
	rd.b = nil
}

// Dict reads a dictionary, calling fn with each key: fn reads the key's
// value with one of rd's methods or leaves it, to be skipped. It reports
// whether the value was a dictionary.
func (rd *Reader) Dict(fn func(key string)) bool {
	if len(rd.b) == 0 || rd.b[0] != 'd' {
		rd.Skip()
		return false
	}
	rd.b = rd.b[1:]
	for len(rd.b) > 0 && rd.b[0] != 'e' {
		k, rest, ok := key(rd.b)
		if !ok {
			rd.b = nil
			return true
		}
		rd.b = rest
		if fn(k); len(rd.b) == len(rest) {
			rd.Skip()
		}
	}
	if len(rd.b) > 0 {
		rd.b = rd.b[1:]
	}
	return true
}

// List reads a list as Dict reads a dictionary, calling fn with each
// element's index.
func (rd *Reader) List(fn func(i int)) bool {
	if len(rd.b) == 0 || rd.b[0] != 'l' {
		rd.Skip()
		return false
	}
	rd.b = rd.b[1:]
	for i := 0; len(rd.b) > 0 && rd.b[0] != 'e'; i++ {
		before := len(rd.b)
		if fn(i); len(rd.b) == before {
			rd.Skip()
		}
	}
	if len(rd.b) > 0 {
		rd.b = rd.b[1:]
	}
	return true
}

// Raw reads one value as it is.
func (rd *Reader) Raw() Raw {
	n := size(rd.b)
	if n < 0 {
		rd.b = nil
		return ""
	}
	v := Raw(view(rd.b[:n]))
	rd.b = rd.b[n:]
	return v
}

// Str reads a string (an integer formatted), as Raw.Str.
func (rd *Reader) Str() string { return rd.Raw().Str() }

// Int reads an integer (or a decimal string), as Raw.Int.
func (rd *Reader) Int() (int64, bool) { return rd.Raw().Int() }
