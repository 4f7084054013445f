package numbers

import (
	"slices"
	"testing"

	"github.com/emiago/sipgo/sip"
)

var korea = Plan{CountryCode: "82", NationalPrefix: "0", InternationalPrefix: "00"}

func TestE164(t *testing.T) {
	tests := []struct {
		dialled, want string
	}{
		{"+821011112222", "+821011112222"},
		{"+82 10-1111-2222", "+821011112222"},
		{"010-1111-2222", "+821011112222"},
		{"01011112222", "+821011112222"},
		{"(02) 123-4567", "+8221234567"},
		{"02.123.4567", "+8221234567"},
		{"0044 20 7946 0958", "+442079460958"},
		{"+1 (415) 555-0100", "+14155550100"},
		{"+", ""},
		{"alice", ""},
		{"112", ""},               // a short code: not E.164
		{"1234567", ""},           // no prefix: a local number we cannot place
		{"+12345", ""},            // too short
		{"+1234567890123456", ""}, // 16 digits
		{"+82 10 1111 222x", ""},
	}
	for _, tt := range tests {
		got, err := korea.E164(tt.dialled)
		if got != tt.want || (tt.want == "") != (err != nil) {
			t.Errorf("%q: got %q %v, want %q", tt.dialled, got, err, tt.want)
		}
	}
}

func TestFromURI(t *testing.T) {
	tests := []struct {
		uri, want string
		ok        bool
	}{
		{"sip:+821011112222@sori.test", "+821011112222", true},
		{"sip:+821011112222@sori.test;user=phone", "+821011112222", true},
		{"sip:01011112222@sori.test", "+821011112222", true},
		{"sip:010-1111-2222@sori.test;user=phone", "+821011112222", true},
		{"sip:0211112222;phone-context=+82@sori.test;user=phone", "+82211112222", true},
		{"tel:+82-10-1111-2222", "+821011112222", true},
		{"tel:+82-10-1111-2222;phone-context=+82", "+821011112222", true},
		{"sip:alice@sori.test", "", false},
		{"sip:bob2@sori.test", "", false},
	}
	for _, tt := range tests {
		var u sip.Uri
		if err := sip.ParseUri(tt.uri, &u); err != nil {
			t.Fatalf("%s: %v", tt.uri, err)
		}
		got, ok := korea.FromURI(u)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: got %q %v, want %q %v", tt.uri, got, ok, tt.want, tt.ok)
		}
	}
}

func TestLongestPrefix(t *testing.T) {
	table := NewTable([]Route{
		{Prefix: "+82", Trunks: []string{"carrier-a", "carrier-b"}},
		{Prefix: "+8210", Trunks: []string{"mobile-a"}},
		{Prefix: "1", Trunks: []string{"nanp"}},
		{Prefix: "+", Trunks: []string{"world"}},
	})
	tests := []struct {
		number string
		want   []string
	}{
		{"+821011112222", []string{"mobile-a"}},
		{"+8221234567", []string{"carrier-a", "carrier-b"}},
		{"+14155550100", []string{"nanp"}},
		{"+442079460958", []string{"world"}},
	}
	for _, tt := range tests {
		got, ok := table.Lookup(tt.number)
		if !ok || !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v %v, want %v", tt.number, got, ok, tt.want)
		}
	}
	if _, ok := NewTable([]Route{{Prefix: "+82", Trunks: []string{"a"}}}).Lookup("+442079460958"); ok {
		t.Error("a number with no route matched")
	}
}
