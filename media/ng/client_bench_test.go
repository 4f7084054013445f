package ng

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"testing"
	"time"
)

// BenchmarkClientDo is one command as sori sends an answer to its anchor:
// encoded, sent over loopback, the reply (with an SDP) read and matched.
// The anchor is a bare UDP echo of a fixed reply, allocating nothing.
func BenchmarkClientDo(b *testing.B) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	sdp := "v=0\r\no=- 1545997027 1 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\n" +
		"m=audio 30000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\na=rtcp:30001\r\na=ptime:20\r\n"
	reply, _ := Encode("", Dict{"result": "ok", "sdp": sdp}) // " d…": what follows the cookie
	go func() {
		buf := make([]byte, 65535)
		out := make([]byte, 0, 65535)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			i := bytes.IndexByte(buf[:n], ' ')
			out = append(append(out[:0], buf[:i]...), reply...)
			_, _ = srv.WriteToUDPAddrPort(out, from)
		}
	}()
	c, err := NewClient("127.0.0.1:0", time.Second, quiet(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	to := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		req := Dict{"command": "answer", "call-id": "3848276298220188511@198.51.100.7", "from-tag": "as7d8f9g0h",
			"to-tag": "kq2w3e4r5t", "sdp": sdp, "replace": []any{"origin", "session-connection"}, "ICE": "remove",
			"received-from": []any{"IP4", "203.0.113.9"}}
		res, err := c.DoWithin(ctx, to, req, time.Second)
		if err != nil || res.Str("result") != "ok" {
			b.Fatal(res, err)
		}
	}
}

// A reply sent twice reaches its own command only: the channel it went to
// is reused by the next command (pooled) but emptied first.
func TestDuplicateRepliesStayWithTheirCommand(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			cookie, req, err := Parse(buf[:n])
			if err != nil {
				continue
			}
			out, _ := Encode(cookie, Dict{"result": "ok", "echo": req.Str("call-id")})
			_, _ = srv.WriteToUDPAddrPort(out, from)
			_, _ = srv.WriteToUDPAddrPort(out, from)
		}
	}()
	c, err := NewClient("127.0.0.1:0", time.Second, quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	for i := range 300 {
		id := strconv.Itoa(i)
		res, err := c.DoWithin(context.Background(), to, Dict{"command": "query", "call-id": id}, time.Second)
		if err != nil || res.Str("echo") != id {
			t.Fatalf("command %d: %v %v", i, res, err)
		}
	}
}
