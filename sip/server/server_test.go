package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/transport"
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
	h := chain.HandlerFunc(func(_ context.Context, w chain.ResponseWriter, r *chain.Request) chain.Result {
		req := r.Request
		if strings.HasPrefix(req.CallID().Value(), "slow") {
			entered <- struct{}{}
			<-release
		}
		_ = chain.Reply(w, req, 200, "OK")
		return chain.Done
	})
	s, err := New(Options{
		Listeners:  []transport.Listener{{Transport: "udp", Addr: netip.MustParseAddrPort("127.0.0.1:0")}},
		Product:    "Sori/test",
		RetryAfter: 9,
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(h); err != nil {
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
	s, err := New(Options{
		Listeners: []transport.Listener{{Transport: "udp", Addr: netip.MustParseAddrPort(busy.LocalAddr().String())}},
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(chain.HandlerFunc(func(context.Context, chain.ResponseWriter, *chain.Request) chain.Result { return chain.Done })); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("start on a busy port: %v", err)
	}
}

func register(port int, branch string) string {
	return "REGISTER sip:sori.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:" + fmt.Sprint(port) + ";branch=z9hG4bK-" + branch + ";rport\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:alice@sori.test>;tag=1\r\nTo: <sip:alice@sori.test>\r\nCall-ID: reg-" + branch + "\r\nCSeq: 1 REGISTER\r\n" +
		"Contact: <sip:alice@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n"
}

// REGISTER over UDP is answered without a sipgo transaction; a retransmission
// must still get the same response, without running the chain again.
func TestStatelessRegisterAbsorbsRetransmissions(t *testing.T) {
	var calls atomic.Int64
	h := chain.HandlerFunc(func(_ context.Context, w chain.ResponseWriter, r *chain.Request) chain.Result {
		req := r.Request
		calls.Add(1)
		_ = chain.Reply(w, req, 200, "OK")
		return chain.Done
	})
	s, err := New(Options{
		Listeners: []transport.Listener{{Transport: "udp", Addr: netip.MustParseAddrPort("127.0.0.1:0")}},
		Product:   "Sori/test", RetryAfter: 3, TimerJ: time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(h); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", strings.TrimPrefix(s.Addrs()[0], "udp:"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := c.LocalAddr().(*net.UDPAddr).Port
	read := func() string {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no response: %v", err)
		}
		return string(buf[:n])
	}
	msg := register(port, "r1")
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	first := read()
	if _, err := c.Write([]byte(msg)); err != nil { // a retransmission
		t.Fatal(err)
	}
	second := read()
	if first != second || !strings.HasPrefix(first, "SIP/2.0 200") || !strings.Contains(first, "Server: Sori/test") {
		t.Fatalf("responses differ or are wrong:\n%s\n---\n%s", first, second)
	}
	if !strings.Contains(first, "received=127.0.0.1") || !strings.Contains(first, fmt.Sprintf("rport=%d", port)) {
		t.Fatalf("Via lacks received/rport:\n%s", first)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("chain ran %d times for one request and its retransmission", n)
	}
	// A new transaction (new branch) runs the chain again.
	if _, err := c.Write([]byte(register(port, "r2"))); err != nil {
		t.Fatal(err)
	}
	if got := read(); !strings.HasPrefix(got, "SIP/2.0 200") || calls.Load() != 2 {
		t.Fatalf("second REGISTER: %d calls\n%s", calls.Load(), got)
	}
	// While draining, a new REGISTER gets 503 with Retry-After.
	s.draining.Store(true)
	if _, err := c.Write([]byte(register(port, "r3"))); err != nil {
		t.Fatal(err)
	}
	if got := read(); !strings.HasPrefix(got, "SIP/2.0 503") || !strings.Contains(got, "Retry-After: 3") {
		t.Fatalf("draining:\n%s", got)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRetransCacheGenerations(t *testing.T) {
	var c retransCache
	c.init(50 * time.Millisecond)
	if cached, busy := c.claim("k"); cached != nil || busy {
		t.Fatal("fresh key is cached or busy")
	}
	if _, busy := c.claim("k"); !busy {
		t.Fatal("a key being handled is not reported busy")
	}
	c.store("k", []byte("resp"))
	if cached, _ := c.claim("k"); string(cached) != "resp" {
		t.Fatalf("cached = %q", cached)
	}
	time.Sleep(60 * time.Millisecond) // one rotation: still held
	if cached, _ := c.claim("k"); string(cached) != "resp" {
		t.Fatalf("after one period: %q", cached)
	}
	time.Sleep(120 * time.Millisecond) // two rotations: gone
	if cached, busy := c.claim("k"); cached != nil || busy {
		t.Fatalf("after two periods: %q busy=%v", cached, busy)
	}
}
