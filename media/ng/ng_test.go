package ng

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseWhatKamailioSends(t *testing.T) {
	// An offer as Kamailio's rtpengine module builds it (rtpengine_offer with
	// "replace-origin replace-session-connection ICE=remove RTP/AVP").
	raw := "5368_3 d3:ICE6:remove7:call-id12:abc@10.0.0.17:command5:offer5:flagsl13:trust-addresse8:from-tag4:f1a213:received-froml3:IP48:10.0.0.1e7:replacel6:origin18:session-connectione3:sdp9:v=0\r\no=..18:transport-protocol7:RTP/AVP10:via-branch10:z9hG4bK.01e"
	cookie, d, err := Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if cookie != "5368_3" || d.Str("command") != "offer" || d.Str("call-id") != "abc@10.0.0.1" || d.Str("from-tag") != "f1a2" {
		t.Fatalf("%s %v", cookie, d)
	}
	if !d.Has("replace", "origin") || !d.Has("replace", "session-connection") || !d.Has("flags", "trust-address") || d.Has("flags", "strict-source") {
		t.Fatalf("lists %v", d)
	}
	if got := d.List("received-from"); len(got) != 2 || got[1] != "10.0.0.1" {
		t.Fatalf("received-from %v", got)
	}
	if d.Str("ICE") != "remove" || d.Str("transport-protocol") != "RTP/AVP" || d.Str("sdp") != "v=0\r\no=.." {
		t.Fatalf("%v", d)
	}
}

func TestParseUnsortedKeys(t *testing.T) {
	// Kamailio 5.6's rtpengine module, as captured on the wire: keys in the
	// order it adds them, not sorted.
	raw := "0_6449_1 d8:supportsl10:load limite3:sdp4:v=0\n3:ICE6:remove7:replacel6:origin18:session-connectione7:call-id16:1-6455@127.0.0.113:received-froml3:IP49:127.0.0.1e8:from-tag6:6455P17:command5:offere"
	_, d, err := Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if d.Str("command") != "offer" || d.Str("call-id") != "1-6455@127.0.0.1" || !d.Has("supports", "load limit") || !d.Has("replace", "origin") || d.Str("sdp") != "v=0\n" {
		t.Fatalf("%v", d)
	}
	if _, nested, err := Parse([]byte("c d1:zd1:b1:x1:a1:yee")); err != nil || nested.Dict("z").Str("a") != "y" {
		t.Fatalf("nested unsorted dictionary: %v %v", nested, err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	in := Dict{"result": "ok", "sdp": "v=0\r\n", "totals": Dict{"RTP": Dict{"packets": 12, "bytes": int64(1200)}}, "calls": []any{"a", "b"}}
	b, err := Encode("c00kie", in)
	if err != nil {
		t.Fatal(err)
	}
	// Keys come out sorted, as bencode requires.
	if want := "c00kie d5:callsl1:a1:be6:result2:ok3:sdp5:v=0\r\n6:totalsd3:RTPd5:bytesi1200e7:packetsi12eeee"; string(b) != want {
		t.Fatalf("encoded %q", b)
	}
	cookie, out, err := Parse(b)
	if err != nil || cookie != "c00kie" {
		t.Fatal(cookie, err)
	}
	if n, ok := out.Dict("totals").Dict("RTP").Int("packets"); !ok || n != 12 || out.Str("result") != "ok" || len(out.List("calls")) != 2 {
		t.Fatalf("%v", out)
	}
}

func TestParseRejects(t *testing.T) {
	for name, tt := range map[string]struct {
		raw    string
		cookie string
		want   error
	}{
		"no cookie":     {"d7:command4:pinge", "", ErrNoCookie},
		"list body":     {"c1 l4:pinge", "c1", ErrNotDict},
		"bad bencode":   {"c2 d7:command4:pin", "c2", nil},
		"empty body":    {"c3 ", "c3", nil},
		"leading blank": {" d7:command4:pinge", "", ErrNoCookie},
	} {
		t.Run(name, func(t *testing.T) {
			cookie, _, err := Parse([]byte(tt.raw))
			if err == nil || cookie != tt.cookie || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("cookie %q err %v", cookie, err)
			}
		})
	}
}

func TestDictAccessorsAcceptBothSpellings(t *testing.T) {
	d := Dict{"limit": "5", "n": int64(7), "one": "trust-address", "none": int64(1)}
	if v, ok := d.Int("limit"); !ok || v != 5 {
		t.Fatal("decimal string not read as an integer")
	}
	if d.Str("n") != "7" || !d.Has("one", "trust-address") || d.List("none") != nil || d.Dict("n") != nil {
		t.Fatalf("%v", d)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startServer(t *testing.T, h Handler) *Server {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(conn, quiet())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx, h); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func TestServerAnswersRetransmissionsFromItsCache(t *testing.T) {
	var runs atomic.Int32
	s := startServer(t, HandlerFunc(func(_ context.Context, cmd string, req Dict, _ netip.AddrPort) Dict {
		runs.Add(1)
		return OK(Dict{"echo": req.Str("call-id")})
	}))
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(s.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req, _ := Encode("r1", Dict{"command": "offer", "call-id": "x"})
	buf := make([]byte, 1500)
	var first string
	for i := 0; i < 3; i++ {
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = string(buf[:n])
		} else if string(buf[:n]) != first {
			t.Fatalf("retransmission got %q, first reply %q", buf[:n], first)
		}
	}
	if runs.Load() != 1 || first != "r1 d4:echo1:x6:result2:oke" {
		t.Fatalf("%d runs, reply %q", runs.Load(), first)
	}
	// No command, and garbage with a cookie: errors, and the server lives on.
	bad, _ := Encode("r2", Dict{"call-id": "x"})
	for _, msg := range [][]byte{bad, []byte("r3 not bencode")} {
		_, _ = c.Write(msg)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		_, d, err := Parse(buf[:n])
		if err != nil || d.Str("result") != "error" || d.Str("error-reason") == "" {
			t.Fatalf("%q", buf[:n])
		}
	}
}

func TestClientRetriesAndTakesNotifications(t *testing.T) {
	var drops atomic.Int32
	s := startServer(t, HandlerFunc(func(_ context.Context, cmd string, _ Dict, from netip.AddrPort) Dict {
		return Dict{"result": "pong"}
	}))
	// A lossy path: a relay that drops the first request.
	relay, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	go func() {
		buf := make([]byte, 1500)
		var client netip.AddrPort
		for {
			n, from, err := relay.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if from == s.Addr() {
				_, _ = relay.WriteToUDPAddrPort(buf[:n], client)
				continue
			}
			client = from
			if drops.Add(1) == 1 {
				continue
			}
			_, _ = relay.WriteToUDPAddrPort(buf[:n], s.Addr())
		}
	}()
	notes := make(chan Dict, 1)
	c, err := NewClient("127.0.0.1:0", 50*time.Millisecond, quiet(), func(_ netip.AddrPort, d Dict) { notes <- d })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := c.Do(ctx, relay.LocalAddr().(*net.UDPAddr).AddrPort(), Dict{"command": "ping"})
	if err != nil || res.Str("result") != "pong" || drops.Load() < 2 {
		t.Fatalf("%v %v after %d sends", res, err, drops.Load())
	}
	if err := s.Send(c.conn.LocalAddr().(*net.UDPAddr).AddrPort(), "n1", Dict{"command": "media-timeout", "call-id": "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-notes:
		if d.Str("call-id") != "x" {
			t.Fatalf("%v", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("notification not delivered")
	}
	// A server that never answers.
	dead, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer dead.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := c.Do(ctx2, dead.LocalAddr().(*net.UDPAddr).AddrPort(), Dict{"command": "ping"}); !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v", err)
	}
}
