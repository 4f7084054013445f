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
// (map[string]any) once decoded; any of those, or int, when encoding.
type Dict map[string]any

// Errors parsing a datagram.
var (
	ErrNoCookie = errors.New("ng: no cookie")
	ErrNotDict  = errors.New("ng: body is not a dictionary")
)

// Parse splits a datagram into its cookie and dictionary. What it returns
// shares no memory with b.
func Parse(b []byte) (string, Dict, error) {
	return parseOwned(bytes.Clone(b))
}

// parseOwned is Parse on a datagram the caller hands over: the strings
// returned are views of b (see decodeValue), which must not be written
// again.
func parseOwned(b []byte) (string, Dict, error) {
	i := bytes.IndexByte(b, ' ')
	if i <= 0 {
		return "", nil, ErrNoCookie
	}
	cookie := view(b[:i])
	body := b[i+1:]
	if len(body) == 0 || body[0] != 'd' {
		return cookie, nil, ErrNotDict
	}
	v, rest, err := decodeValue(body, 0)
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
	out := make([]byte, 0, 256)
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
	switch v := d[key].(type) {
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
	if m, ok := d[key].(map[string]any); ok {
		return Dict(m)
	}
	if m, ok := d[key].(Dict); ok {
		return m
	}
	return nil
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
