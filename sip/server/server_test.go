package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/sip/chain"
)

func options(callID string) string {
	return "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-" + callID + ";rport\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:t@sori.test>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: " + callID + "\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
}

func exchange(t *testing.T, c net.Conn, raw string) *sip.Response {
	t.Helper()
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	msg, err := sip.ParseMessage(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*sip.Response)
}

func TestServeAddsServerHeaderAndDrainsOnShutdown(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	h := chain.HandlerFunc(func(_ context.Context, w chain.ResponseWriter, req *sip.Request) {
		if strings.HasPrefix(req.CallID().Value(), "slow") {
			entered <- struct{}{}
			<-release
		}
		_ = chain.Reply(w, req, 200, "OK")
	})
	s, err := New(h, Options{
		Listeners:  []config.Listener{{Transport: "udp", Addr: netip.MustParseAddrPort("127.0.0.1:0")}},
		Product:    "Sori/test",
		RetryAfter: 9,
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(s.Addrs()[0], "udp:")
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	res := exchange(t, c, options("fast"))
	if res.StatusCode != 200 || res.GetHeader("Server") == nil || res.GetHeader("Server").Value() != "Sori/test" {
		t.Fatalf("response %v", res)
	}

	// A request in flight when shutdown starts still gets its answer...
	slow, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte(options("slow"))); err != nil {
		t.Fatal(err)
	}
	<-entered
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)

	// ...while a new one is refused with 503 and Retry-After.
	res = exchange(t, c, options("late"))
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil || res.GetHeader("Retry-After").Value() != "9" {
		t.Fatalf("during drain: %v", res)
	}
	select {
	case err := <-done:
		t.Fatalf("shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	_ = slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65535)
	n, err := slow.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
		t.Fatalf("in-flight request: %v %q", err, buf[:n])
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestStartFailsOnBusyPort(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s, err := New(chain.HandlerFunc(func(context.Context, chain.ResponseWriter, *sip.Request) {}), Options{
		Listeners: []config.Listener{{Transport: "udp", Addr: netip.MustParseAddrPort(busy.LocalAddr().String())}},
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("start on a busy port: %v", err)
	}
}
