package proxy

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/local"
)

// sender is a Sender that only knows sori's listening addresses; the
// functions under test here never put anything on the wire.
type sender struct{}

func (sender) Request(context.Context, *sip.Request) (sip.ClientTransaction, error) {
	panic("not in unit tests")
}
func (sender) Write(*sip.Request) error { panic("not in unit tests") }
func (sender) Local(transport string) (netip.AddrPort, bool) {
	switch transport {
	case "udp":
		return netip.MustParseAddrPort("127.0.0.1:5060"), true
	case "tcp":
		return netip.MustParseAddrPort("127.0.0.1:5061"), true
	}
	return netip.AddrPort{}, false
}

func newTestProxy(t *testing.T, advertise string) *Proxy {
	t.Helper()
	p := New(Config{
		Self:      local.New("sori.test", "127.0.0.1:5060", "127.0.0.1:5061"),
		Advertise: advertise,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	p.Attach(sender{})
	return p
}

func uri(t *testing.T, s string) sip.Uri {
	t.Helper()
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil {
		t.Fatalf("uri %q: %v", s, err)
	}
	return u
}

func values(hs []sip.Header) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Value()
	}
	return out
}
