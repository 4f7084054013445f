package wire

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

var uris = []string{
	"sip:bob@sori.test", "sip:alice@198.51.100.7:5080;transport=tcp;ob", "sips:[2001:db8::1]:5061",
	"sip:+4930123@gw.example;user=phone?X-Foo=bar", "tel:+4930123", "sip:sori.test", "urn:service:sos",
}

func TestURIStringIsSipgos(t *testing.T) {
	for _, s := range uris {
		var u sip.Uri
		if err := sip.ParseUri(s, &u); err != nil {
			t.Fatal(s, err)
		}
		if got, want := URIString(&u), u.String(); got != want {
			t.Fatalf("%q, sipgo %q", got, want)
		}
	}
	if got := URIString(&sip.Uri{}); got != (&sip.Uri{}).String() {
		t.Fatalf("zero URI: %q", got)
	}
}

func benchURI(b *testing.B) *sip.Uri {
	var u sip.Uri
	if err := sip.ParseUri("sip:alice@198.51.100.7:5080;transport=tcp;ob", &u); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	return &u
}

func BenchmarkURIString(b *testing.B) {
	u := benchURI(b)
	for b.Loop() {
		_ = URIString(u)
	}
}

func BenchmarkSipgoURIString(b *testing.B) {
	u := benchURI(b)
	for b.Loop() {
		_ = u.String()
	}
}
