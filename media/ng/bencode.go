package ng

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unsafe"
)

// A small bencode codec for the ng protocol's values: strings, integers,
// lists and dictionaries. It is hand-written because it is on every call's
// path three times: with github.com/anacrolix/torrent/bencode, decoding
// the anchor's replies took 19 % of sori's CPU at 400 anchored calls/s
// (reflection, and a second pass to accept keys out of order, which
// Kamailio sends and the library refuses). Tests check it against
// hand-written BEP 3 vectors.

const maxDepth = 32

var errSyntax = errors.New("bencode: syntax error")

// decodeValue reads one value from b and returns it with the bytes after it.
// The strings it returns (keys and values) are views of b, not copies: b
// must be the caller's own copy of the datagram, never written again (Parse
// makes one). One copy of a datagram instead of one per string: an anchor's
// reply to an offer holds some 20 strings, and the copies were 13 % of
// sori's allocations (objects and bytes) at 1000 anchored calls/s (pprof
// allocs); BenchmarkParseQueryReply went from 36 to 22 allocs per reply
// (the bytes about the same: 2256 to 2328 B, the datagram's copy).
//
// lazy leaves the lists and dictionaries inside the value (depth > 0) as
// Raw: checked by skipValue, decoded only when read (see ParseReply).
func decodeValue(b []byte, depth int, lazy bool) (any, []byte, error) {
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("%w: unexpected end", errSyntax)
	}
	if depth > maxDepth {
		return nil, nil, fmt.Errorf("%w: nested too deep", errSyntax)
	}
	if lazy && depth > 0 && (b[0] == 'l' || b[0] == 'd') {
		rest, err := skipValue(b, depth)
		if err != nil {
			return nil, nil, err
		}
		return Raw(view(b[:len(b)-len(rest)])), rest, nil
	}
	switch c := b[0]; {
	case c == 'i':
		end := indexByte(b, 'e')
		if end < 0 {
			return nil, nil, fmt.Errorf("%w: unterminated integer", errSyntax)
		}
		n, err := strconv.ParseInt(view(b[1:end]), 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: integer %q", errSyntax, b[1:end])
		}
		return n, b[end+1:], nil
	case c >= '0' && c <= '9':
		s, rest, err := decodeString(b)
		return s, rest, err
	case c == 'l':
		out := []any{}
		b = b[1:]
		for {
			if len(b) == 0 {
				return nil, nil, fmt.Errorf("%w: unterminated list", errSyntax)
			}
			if b[0] == 'e' {
				return out, b[1:], nil
			}
			v, rest, err := decodeValue(b, depth+1, lazy)
			if err != nil {
				return nil, nil, err
			}
			out, b = append(out, v), rest
		}
	case c == 'd':
		out := map[string]any{}
		b = b[1:]
		for {
			if len(b) == 0 {
				return nil, nil, fmt.Errorf("%w: unterminated dictionary", errSyntax)
			}
			if b[0] == 'e' {
				return out, b[1:], nil
			}
			k, rest, err := decodeString(b)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: dictionary key", err)
			}
			v, rest, err := decodeValue(rest, depth+1, lazy)
			if err != nil {
				return nil, nil, err
			}
			out[k], b = v, rest // keys in any order, as rtpengine accepts
		}
	}
	return nil, nil, fmt.Errorf("%w: unexpected %q", errSyntax, b[0])
}

// skipValue checks one value as decodeValue would, without building it,
// and returns the bytes after it.
func skipValue(b []byte, depth int) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: unexpected end", errSyntax)
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: nested too deep", errSyntax)
	}
	switch c := b[0]; {
	case c == 'i':
		end := indexByte(b, 'e')
		if end < 0 {
			return nil, fmt.Errorf("%w: unterminated integer", errSyntax)
		}
		if !plainInt(b[1:end]) {
			if _, err := strconv.ParseInt(view(b[1:end]), 10, 64); err != nil {
				return nil, fmt.Errorf("%w: integer %q", errSyntax, b[1:end])
			}
		}
		return b[end+1:], nil
	case c >= '0' && c <= '9':
		_, rest, err := decodeString(b)
		return rest, err
	case c == 'l', c == 'd':
		b = b[1:]
		for {
			if len(b) == 0 {
				if c == 'l' {
					return nil, fmt.Errorf("%w: unterminated list", errSyntax)
				}
				return nil, fmt.Errorf("%w: unterminated dictionary", errSyntax)
			}
			if b[0] == 'e' {
				return b[1:], nil
			}
			if c == 'd' {
				_, rest, err := decodeString(b)
				if err != nil {
					return nil, fmt.Errorf("%w: dictionary key", err)
				}
				b = rest
			}
			rest, err := skipValue(b, depth+1)
			if err != nil {
				return nil, err
			}
			b = rest
		}
	}
	return nil, fmt.Errorf("%w: unexpected %q", errSyntax, b[0])
}

// plainInt reports whether b is up to 18 digits, after an optional '-':
// an integer strconv.ParseInt takes, checked without it (what it does not
// take, ParseInt judges).
func plainInt(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func decodeString(b []byte) (string, []byte, error) {
	colon := indexByte(b, ':')
	if colon <= 0 {
		return "", nil, fmt.Errorf("%w: string without length", errSyntax)
	}
	n, ok := atoi(b[:colon])
	if !ok || n > len(b)-colon-1 {
		return "", nil, fmt.Errorf("%w: string length %q", errSyntax, b[:colon])
	}
	return view(b[colon+1 : colon+1+n]), b[colon+1+n:], nil
}

// atoi reads a string length as strconv.Atoi would accept it and bencode
// needs it (decimal digits, an optional sign; not negative), without the
// string strconv wants.
func atoi(b []byte) (int, bool) {
	i := 0
	if len(b) > 0 && (b[0] == '+' || b[0] == '-') {
		i = 1
	}
	if i == len(b) {
		return 0, false
	}
	n := 0
	for _, c := range b[i:] {
		if c < '0' || c > '9' || n > 1<<32 {
			return 0, false // past 1<<32 it is longer than any datagram
		}
		n = n*10 + int(c-'0')
	}
	if b[0] == '-' && n != 0 {
		return 0, false
	}
	return n, true
}

// view is b as a string, sharing its bytes (see decodeValue).
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// appendValue encodes v: string, []byte, int, int64, uint64, bool (as
// 0/1), []any, []string, Dict or map[string]any (keys sorted), Raw (as
// it is).
func appendValue(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		b = strconv.AppendInt(b, int64(len(x)), 10)
		return append(append(b, ':'), x...), nil
	case []byte:
		b = strconv.AppendInt(b, int64(len(x)), 10)
		return append(append(b, ':'), x...), nil
	case int:
		return append(strconv.AppendInt(append(b, 'i'), int64(x), 10), 'e'), nil
	case int64:
		return append(strconv.AppendInt(append(b, 'i'), x, 10), 'e'), nil
	case uint64:
		return append(strconv.AppendUint(append(b, 'i'), x, 10), 'e'), nil
	case bool:
		n := int64(0)
		if x {
			n = 1
		}
		return append(strconv.AppendInt(append(b, 'i'), n, 10), 'e'), nil
	case []string:
		b = append(b, 'l')
		for _, s := range x {
			b, _ = appendValue(b, s)
		}
		return append(b, 'e'), nil
	case []any:
		b = append(b, 'l')
		for _, e := range x {
			var err error
			if b, err = appendValue(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, 'e'), nil
	case Raw:
		return append(b, x...), nil // bencode already, checked when parsed
	case Dict:
		return appendDict(b, x)
	case map[string]any:
		return appendDict(b, x)
	case nil:
		return nil, errors.New("bencode: nil value")
	}
	return nil, fmt.Errorf("bencode: cannot encode %T", v)
}

// appendDict writes d's keys sorted. The keys' slice is on the stack up to
// 16 keys and a key is written as a string, not handed to appendValue as an
// any: boxing each key was 8 of the 26 allocations of BenchmarkClientDo (an
// answer, 8 keys).
func appendDict(b []byte, d map[string]any) ([]byte, error) {
	var stack [16]string
	keys := stack[:0]
	for k := range d {
		keys = append(keys, k)
	}
	slices.Sort(keys) // bencode wants them sorted
	b = append(b, 'd')
	for _, k := range keys {
		b = strconv.AppendInt(b, int64(len(k)), 10)
		b = append(append(b, ':'), k...)
		var err error
		if b, err = appendValue(b, d[k]); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
	}
	return append(b, 'e'), nil
}
