package siptest

import (
	"slices"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestURIAndValues(t *testing.T) {
	if u := URI(t, "sip:alice@sori.test;transport=tcp"); u.User != "alice" || u.Host != "sori.test" || u.UriParams.GetOr("transport", "") != "tcp" {
		t.Fatalf("URI: %+v", u)
	}
	hs := []sip.Header{sip.NewHeader("Route", "<sip:a>"), sip.NewHeader("Route", "<sip:b>")}
	if got := Values(hs); !slices.Equal(got, []string{"<sip:a>", "<sip:b>"}) {
		t.Fatalf("Values: %q", got)
	}
	if got := Values(nil); len(got) != 0 {
		t.Fatalf("Values(nil): %q", got)
	}
}
