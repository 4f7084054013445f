package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/transport"
)

// BenchmarkWriteACK is the ACK for a 2xx that sori relays once per call:
// Server.Write over UDP to a socket nobody reads (the kernel drops what
// overflows).
func BenchmarkWriteACK(b *testing.B) {
	s, err := New(Options{
		Listeners: []transport.Listener{{Transport: "udp", Addr: netip.MustParseAddrPort("127.0.0.1:0")}},
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(chain.HandlerFunc(func(_ context.Context, _ chain.ResponseWriter, _ *chain.Request) chain.Result { return chain.Done })); err != nil {
		b.Fatal(err)
	}
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	msg, err := sip.ParseMessage([]byte("ACK sip:bob@" + sink.LocalAddr().String() + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ack1;rport\r\nMax-Forwards: 70\r\n" +
		"From: <sip:alice@sori.test>;tag=1\r\nTo: <sip:bob@sori.test>;tag=2\r\nCall-ID: ack1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"))
	if err != nil {
		b.Fatal(err)
	}
	ack := msg.(*sip.Request)
	ack.SetDestination(sink.LocalAddr().String())
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Write(ack); err != nil {
			b.Fatal(err)
		}
	}
}
