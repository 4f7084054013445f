package weather

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseBy splits a comma-separated list of dimensions; "" is network,hop.
func ParseBy(s string) ([]string, error) {
	if s == "" {
		return []string{DimNetwork, DimHop}, nil
	}
	var by []string
	for _, d := range strings.Split(s, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			return nil, errors.New("an empty dimension in the list")
		}
		by = append(by, d)
	}
	return by, nil
}

// ParseTime reads an RFC 3339 time, "now", or a time relative to now: a
// negative Go duration ("-24h", "-90m") or days ("-7d"). "" is now+def.
func ParseTime(s string, now time.Time, def time.Duration) (time.Time, error) {
	switch {
	case s == "":
		return now.Add(def), nil
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "-"):
		d, err := ParseDuration(s[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not a relative time (-24h, -7d): %v", s, err)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 (2026-12-01T14:00:00Z) nor relative (-24h, -7d)", s)
	}
	return t, nil
}

// ParseDuration is time.ParseDuration with days ("7d", "1d12h").
func ParseDuration(s string) (time.Duration, error) {
	var days int64
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseInt(s[:i], 10, 32)
		if err != nil || n < 0 || n > 100000 { // beyond, the nanoseconds overflow
			return 0, fmt.Errorf("bad days %q", s[:i])
		}
		days, s = n, s[i+1:]
	}
	var d time.Duration
	if s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, err
		}
		if d < 0 {
			return 0, errors.New("negative")
		}
	}
	return d + time.Duration(days)*24*time.Hour, nil
}
