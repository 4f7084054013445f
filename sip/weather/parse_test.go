package weather

import (
	"strings"
	"testing"
	"time"
)

var at = time.Date(2026, 12, 1, 14, 30, 0, 0, time.UTC)

func TestParseTime(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"", at.Add(-time.Hour), true},
		{"now", at, true},
		{"-24h", at.Add(-24 * time.Hour), true},
		{"-90m", at.Add(-90 * time.Minute), true},
		{"-7d", at.AddDate(0, 0, -7), true},
		{"-1d12h", at.Add(-36 * time.Hour), true},
		{"2026-11-30T00:00:00Z", time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), true},
		{"2026-11-30T09:00:00+09:00", time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), true},
		{"24h", time.Time{}, false},
		{"--1h", time.Time{}, false},
		{"-d", time.Time{}, false},
		{"2026-11-30", time.Time{}, false},
	} {
		got, err := ParseTime(tt.in, at, -time.Hour)
		if (err == nil) != tt.ok || (tt.ok && !got.Equal(tt.want)) {
			t.Errorf("%q: %v %v, want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseBy(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{"", "[network hop]", true},
		{"network", "[network]", true},
		{" hour , tag:plan ", "[hour tag:plan]", true},
		{"network,", "", false},
		{",", "", false},
	} {
		got, err := ParseBy(tt.in)
		if (err == nil) != tt.ok || (tt.ok && fmtList(got) != tt.want) {
			t.Errorf("%q: %v %v", tt.in, got, err)
		}
	}
}

func fmtList(s []string) string { return "[" + strings.Join(s, " ") + "]" }

func TestParseDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"24h", 24 * time.Hour, true},
		{"7d", 7 * 24 * time.Hour, true},
		{"0d", 0, true},
		{"1d6h", 30 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"d", 0, false},
		{"-1h", 0, false},
		{"1x", 0, false},
		{"99999999999d", 0, false},
		{"200000d", 0, false},
		{"1d-5h", 0, false},
	} {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("%q: %v %v", tt.in, got, err)
		}
	}
}
