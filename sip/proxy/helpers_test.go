package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
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
func (s sender) SentBy(transport string) (string, int, error) {
	switch transport {
	case "UDP", "udp":
		return "127.0.0.1", 5060, nil
	case "TCP", "tcp":
		return "127.0.0.1", 5061, nil
	}
	return "", 0, fmt.Errorf("no %s listener", transport)
}

func newTestProxy(t *testing.T, advertise string) *Proxy {
	t.Helper()
	var s Sender = sender{}
	if advertise != "" {
		s = advertised{advertise}
	}
	return New(Config{
		Self:   local.New("sori.test", "127.0.0.1:5060", "127.0.0.1:5061"),
		Sender: s,
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

// advertised is a sender whose sip.advertise is set (sip/server applies it).
type advertised struct{ hostport string }

func (advertised) Request(context.Context, *sip.Request) (sip.ClientTransaction, error) {
	panic("not in unit tests")
}
func (advertised) Write(*sip.Request) error { panic("not in unit tests") }
func (a advertised) SentBy(string) (string, int, error) {
	host, port, err := net.SplitHostPort(a.hostport)
	if err != nil {
		return a.hostport, 5060, nil
	}
	n, _ := strconv.Atoi(port)
	return host, n, nil
}

// aliceInvite is alice's INVITE to bob from 192.0.2.1 over UDP, with its
// Call-ID and CSeq, carrying sdp ("": none, a delayed offer).
func aliceInvite(callID string, cseq uint32, sdp string) *sip.Request {
	in := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "bob", Host: "sori.test"})
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "192.0.2.1", Port: 5060, Params: sip.NewParams()}
	via.Params.Add("branch", "z9hG4bK-caller")
	in.AppendHeader(via)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "sori.test"}, Params: sip.NewParams()}
	from.Params.Add("tag", "alice-tag")
	in.AppendHeader(from)
	in.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "sori.test"}, Params: sip.NewParams()})
	in.AppendHeader(sip.NewHeader("Call-ID", callID))
	in.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.INVITE})
	if sdp != "" {
		in.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		in.SetBody([]byte(sdp))
	}
	in.SetSource("192.0.2.1:5060")
	in.SetTransport("UDP")
	return in
}
