// Package siptest is what tests of SIP messages share: URIs parsed or
// the test fails, and header values as text.
package siptest

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

// URI is s parsed; a URI that does not parse fails the test.
func URI(t testing.TB, s string) sip.Uri {
	t.Helper()
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil {
		t.Fatalf("uri %q: %v", s, err)
	}
	return u
}

// Values is each header's value, in order.
func Values(hs []sip.Header) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Value()
	}
	return out
}
