// Package ng speaks rtpengine's "ng" control protocol: UDP datagrams of a
// cookie, a space and a bencoded dictionary. A request carries "command"
// (ping, offer, answer, delete, query, list); the reply repeats the cookie
// and carries "result" (pong, ok, error) and, on error, "error-reason".
// The keys are rtpengine's, so Kamailio's and OpenSIPS's rtpengine modules
// can drive sori-anchor and sori can drive rtpengine.
package ng

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// Dict is one bencoded dictionary: values are string, int64, []any or Dict
// (map[string]any) once decoded by Parse; any of those, or int, when
// encoding. ParseReply (and so a Client's replies) leaves the lists and
// dictionaries inside as Raw: read them with Dict, DictAt, List or Raw,
// which take either form.
type Dict map[string]any

// Errors parsing a datagram.
var (
	ErrNoCookie = errors.New("ng: no cookie")
	ErrNotDict  = errors.New("ng: body is not a dictionary")
)

// Parse splits a datagram into its cookie and dictionary. What it returns
// shares no memory with b.
func Parse(b []byte) (string, Dict, error) {
	return parseOwned(bytes.Clone(b), false)
}

// ParseReply is Parse that decodes only the top dictionary: the lists and
// dictionaries in it stay Raw, checked but decoded when read. A delete
// reply carries rtpengine-style stats for every leg and stream, of which
// sori reads a few fields (anchoring.Quality); decoding them all into maps
// was 12 % of sori's allocated bytes (decodeValue: 16 of 137 MB) and 5 %
// of its objects at 600 anchored calls/s (pprof allocs).
// BenchmarkDeleteReplyQuality (sip/anchoring: a two-leg delete
// reply decoded and read by Quality), Parse → ParseReply on the shared
// 2-core machine: 17-37 → 7-13 µs, 12 472 → 3 000 B, 125 → 13 allocs.
func ParseReply(b []byte) (string, Dict, error) {
	return parseOwned(bytes.Clone(b), true)
}

// parseOwned is Parse on a datagram the caller hands over: the strings
// returned are views of b (see decodeValue), which must not be written
// again.
func parseOwned(b []byte, lazy bool) (string, Dict, error) {
	i := bytes.IndexByte(b, ' ')
	if i <= 0 {
		return "", nil, ErrNoCookie
	}
	cookie := view(b[:i])
	body := b[i+1:]
	if len(body) == 0 || body[0] != 'd' {
		return cookie, nil, ErrNotDict
	}
	v, rest, err := decodeValue(body, 0, lazy)
	if err != nil {
		return cookie, nil, fmt.Errorf("ng: %w", err)
	}
	if len(rest) != 0 {
		return cookie, nil, fmt.Errorf("ng: %d bytes after the dictionary", len(rest))
	}
	return cookie, Dict(v.(map[string]any)), nil
}

// Encode builds a datagram.
func Encode(cookie string, d Dict) ([]byte, error) {
	return encode(make([]byte, 0, 256), cookie, d)
}

// encode is Encode appending to out.
func encode(out []byte, cookie string, d Dict) ([]byte, error) {
	out = append(append(out, cookie...), ' ')
	out, err := appendDict(out, d)
	if err != nil {
		return nil, fmt.Errorf("ng: %w", err)
	}
	return out, nil
}

// Str returns a string value ("" when absent or not a string; integers are
// formatted, as some clients send numbers as integers and some as strings).
func (d Dict) Str(key string) string {
	switch v := d[key].(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return ""
}

// Int returns an integer value, accepting a decimal string.
func (d Dict) Int(key string) (int64, bool) {
	switch v := d[key].(type) {
	case int64:
		return v, true
	case int:
		return int64(v), true
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// List returns a list of strings; a single string counts as a list of one
// (rtpengine accepts both for flags-like keys).
func (d Dict) List(key string) []string {
	v := d[key]
	if r, ok := v.(Raw); ok {
		v = r.decode()
	}
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// Has reports whether the list under key holds s.
func (d Dict) Has(key, s string) bool {
	for _, v := range d.List(key) {
		if v == s {
			return true
		}
	}
	return false
}

// Dict returns a nested dictionary.
func (d Dict) Dict(key string) Dict {
	return asDict(d[key])
}

func asDict(v any) Dict {
	switch m := v.(type) {
	case map[string]any:
		return Dict(m)
	case Dict:
		return m
	case Raw:
		if m, ok := m.decode().(map[string]any); ok {
			return Dict(m)
		}
	}
	return nil
}

// DictAt returns the i-th element of the list under key, when it is a
// dictionary.
func (d Dict) DictAt(key string, i int) Dict {
	switch v := d[key].(type) {
	case []any:
		if i >= 0 && i < len(v) {
			return asDict(v[i])
		}
	case Raw:
		return asDict(v.At(i).decode())
	}
	return nil
}

// Raw returns the value under key in bencode: as it arrived if ParseReply
// left it so, encoded otherwise ("" when absent or not encodable).
func (d Dict) Raw(key string) Raw {
	switch v := d[key].(type) {
	case Raw:
		return v
	case nil:
		return ""
	default:
		b, err := appendValue(nil, v)
		if err != nil {
			return ""
		}
		return Raw(b)
	}
}

// Error is a reply to a request that failed.
func Error(reason string) Dict { return Dict{"result": "error", "error-reason": reason} }

// OK is a successful reply with the given extra keys.
func OK(extra Dict) Dict {
	out := Dict{"result": "ok"}
	for k, v := range extra {
		out[k] = v
	}
	return out
}
