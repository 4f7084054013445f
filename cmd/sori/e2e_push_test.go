package main

import (
	"bufio"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/push/webhook"
)

// pushGateway plays an operator's push gateway (sori's webhook provider)
// on HTTPS: every push it gets, signature checked, arrives on pushes.
type pushGateway struct {
	url, ca string
	pushes  chan webhook.Body
}

const pushSecret = "push-gateway-secret"

func startPushGateway(t *testing.T) *pushGateway {
	t.Helper()
	g := &pushGateway{pushes: make(chan webhook.Body, 16)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts := r.Header.Get(webhook.TimestampHeader)
		if r.Method != http.MethodPost || r.Header.Get(webhook.SignatureHeader) != webhook.Sign([]byte(pushSecret), ts, body) {
			http.Error(w, "bad signature", http.StatusForbidden)
			t.Errorf("push with a bad signature: %s %q", r.Method, body)
			return
		}
		var b webhook.Body
		if err := json.Unmarshal(body, &b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		g.pushes <- b
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	g.url = srv.URL
	g.ca = filepath.Join(t.TempDir(), "gateway-ca.pem")
	if err := os.WriteFile(g.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *pushGateway) next(t *testing.T, within time.Duration) webhook.Body {
	t.Helper()
	select {
	case b := <-g.pushes:
		return b
	case <-time.After(within):
		t.Fatal("no push reached the gateway")
		return webhook.Body{}
	}
}

func (g *pushGateway) yaml(wait string) string {
	return fmt.Sprintf("push:\n  wait: %s\n  providers:\n    - {name: sori-push, type: webhook, url: %q, ca: %q, secret: %s}\n", wait, g.url, g.ca, pushSecret)
}

// openUDP is a phone's UDP socket that takes requests from anyone (any
// node), as a phone's does, and answers whoever sent last.
func openUDP(t *testing.T, n *node) *sipConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	to, _ := net.ResolveUDPAddr("udp", n.addr())
	u := &anyPeer{UDPConn: c, peer: to}
	return &sipConn{t: t, transport: "udp", conn: u, reader: bufio.NewReader(u), local: c.LocalAddr().String()}
}

type anyPeer struct {
	*net.UDPConn
	peer *net.UDPAddr
}

func (a *anyPeer) Read(b []byte) (int, error) {
	n, from, err := a.ReadFromUDP(b)
	if err == nil {
		a.peer = from
	}
	return n, err
}
func (a *anyPeer) Write(b []byte) (int, error) { return a.WriteToUDP(b, a.peer) }
func (a *anyPeer) RemoteAddr() net.Addr        { return a.peer }

// bob's app: its Contact carries the push parameters of its device.
const bobDevice = "pn-provider=sori-push;pn-prid=bob-device-1;pn-param=com.example.sori"

// app is bob's app on its device; requests that arrive while it waits
// for its REGISTER's 200 (a held INVITE can) are kept for nextRequest.
type app struct {
	*ua
	early []*sip.Request
}

// answer responds to req where it came from (on UDP the app's socket
// takes requests from any node).
func (a *app) answer(req *sip.Request, code int, reason string, extra ...string) {
	if p, ok := a.conn.(*anyPeer); ok {
		if to, err := net.ResolveUDPAddr("udp", req.Source()); err == nil {
			p.peer = to
		}
	}
	a.respond(req, code, reason, extra...)
}

func (a *app) nextRequest() *sip.Request {
	if len(a.early) > 0 {
		r := a.early[0]
		a.early = a.early[1:]
		return r
	}
	return a.readRequest()
}

// registerApp registers bob's app, push parameters in its Contact, from a
// new connection (TCP) or socket (UDP).
func registerApp(t *testing.T, n *node, transport, callID string, cseq int) *app {
	t.Helper()
	bob := &app{ua: newUA(t, n, transport, "bob")}
	if transport == "udp" {
		bob.ua = &ua{sipConn: openUDP(t, n), user: "bob", password: "bob-secret"}
	}
	contact := fmt.Sprintf("Contact: <sip:bob@%s;transport=%s;%s>", bob.local, transport, bobDevice)
	res := bob.do(bob.register("bob", callID, cseq, contact))
	if res.StatusCode != 401 {
		t.Fatalf("REGISTER: %d, want 401", res.StatusCode)
	}
	cr := digestFor(t, res, "WWW-Authenticate", "REGISTER", "sip:sori.test", "bob", "bob-secret")
	bob.send(bob.register("bob", callID, cseq+1, contact, "Authorization: "+cr))
	for {
		switch m := bob.readMessage().(type) {
		case *sip.Request:
			m.SetSource(bob.conn.RemoteAddr().String())
			bob.early = append(bob.early, m)
			continue
		case *sip.Response:
			if m.StatusCode < 200 {
				continue
			}
			if m.StatusCode != 200 {
				t.Fatalf("REGISTER with push parameters: %d %s", m.StatusCode, m.Reason)
			}
			if fc := m.GetHeader("Feature-Caps"); fc == nil || !strings.Contains(fc.Value(), `+sip.pns="sori-push"`) {
				t.Fatalf("200 without Feature-Caps +sip.pns: %v", fc)
			}
		}
		return bob
	}
}

// A call to a sleeping app (RFC 8599): bob's app registered over TCP with
// its push parameters and went to sleep (its connection closed). alice's
// INVITE makes sori push; when the push arrives the app wakes and
// registers again from a new connection, and the held INVITE goes to it
// there: the call is answered and media flows through the anchor.
func TestPushWakesTheApp(t *testing.T) {
	gw := startPushGateway(t)
	an := startAnchor(t)
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	n := startNode(t, nodeConfig{extra: gw.yaml("5s") + fmt.Sprintf("media:\n  anchors: [%q]\ncdr: {file: %q}\n", an.ng, cdr)})

	asleep := registerApp(t, n, "tcp", "bob-app@test", 1)
	asleep.conn.Close() // the app is suspended

	ma, mb := newMediaSocket(t), newMediaSocket(t)
	alice := newUA(t, n, "udp", "alice")
	alice.sdp = ma.sdp(1001)
	start := time.Now()
	alice.authenticated("INVITE", "sip:bob@sori.test")
	p := gw.next(t, 5*time.Second)
	if p.Provider != "sori-push" || p.PRID != "bob-device-1" || p.Param != "com.example.sori" || p.Method != "INVITE" || p.From != "sip:alice@sori.test" || !strings.HasPrefix(p.CallID, "invite-alice-") {
		t.Fatalf("push %+v", p)
	}
	woken := registerApp(t, n, "tcp", "bob-app@test", 3) // the woken app, from a new connection
	inv := woken.nextRequest()
	if inv.Method != sip.INVITE || strings.Contains(inv.Recipient.String(), "pn-prid") {
		t.Fatalf("woken app got %s %s (the device token must not be in it)", inv.Method, inv.Recipient.String())
	}
	woken.respondSDP(inv, 200, "OK", mb.sdp(2002), "Contact: <sip:bob@"+woken.local+";transport=tcp>")
	res := alice.final()
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", res.StatusCode)
	}
	t.Logf("INVITE to 200 OK through a push wake-up: %s", time.Since(start).Round(time.Millisecond))
	alice.sdp = ""
	alice.send(alice.inDialog("ACK", 2, res))
	if ack := woken.readRequest(); ack.Method != sip.ACK {
		t.Fatalf("woken app got %s, want ACK", ack.Method)
	}
	toBob, toAlice := mediaTarget(t, inv.Body()), mediaTarget(t, res.Body())
	streamBothWays(t, ma, toAlice, mb, toBob, 0xa1, 0xb0, 5)
	alice.send(alice.inDialog("BYE", 3, res))
	bye := woken.readRequest()
	woken.respond(bye, 200, "OK")
	if r := alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}

	recs := waitRecords(t, cdr, 1, "bob", func(r calls.Record) bool { return r.To == "sip:bob@sori.test" })
	if r := recs[0]; r.Disposition != calls.Answered || r.Push == nil || r.Push.Sent != 1 || r.Push.WakeMS <= 0 {
		t.Fatalf("record %+v push %+v", r, r.Push)
	}
	for _, m := range []string{`sori_push_notifications_total{provider="sori-push",purpose="call",result="sent"}`, "sori_push_calls_answered_total", "sori_push_wake_seconds_count"} {
		if got := nodeMetric(t, n, m); got != "1" {
			t.Errorf("%s = %q, want 1", m, got)
		}
	}
}

// CANCEL while sori waits for the app: the caller gets 487, and the app,
// when it wakes, gets nothing. Nobody wakes: 480 after push.wait, and the
// record says a push was sent and nobody woke.
func TestPushWaitEnds(t *testing.T) {
	gw := startPushGateway(t)
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	n := startNode(t, nodeConfig{extra: gw.yaml("2s") + fmt.Sprintf("cdr: {file: %q}\n", cdr)})
	registerApp(t, n, "tcp", "bob-app@test", 1).conn.Close()

	t.Run("CANCEL during the wait", func(t *testing.T) {
		alice := newUA(t, n, "udp", "alice")
		invite := alice.call("sip:bob@sori.test")
		gw.next(t, 5*time.Second)
		alice.send(cancelOf(invite))
		var codes []int
		for len(codes) < 2 {
			res := alice.read()
			if res.StatusCode >= 200 {
				codes = append(codes, res.StatusCode)
			}
		}
		if !(codes[0] == 200 && codes[1] == 487 || codes[0] == 487 && codes[1] == 200) {
			t.Fatalf("CANCEL and INVITE answered %v, want 200 and 487", codes)
		}
		woken := registerApp(t, n, "tcp", "bob-app@test", 3)
		_ = woken.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if line, err := woken.reader.ReadString('\n'); err == nil {
			t.Fatalf("the woken app got %q after the caller cancelled", line)
		}
		woken.conn.Close()
	})

	t.Run("nobody wakes: 480 after push.wait", func(t *testing.T) {
		alice := newUA(t, n, "udp", "alice")
		start := time.Now()
		invite := alice.call("sip:bob@sori.test")
		gw.next(t, 5*time.Second)
		res := alice.final()
		took := time.Since(start)
		alice.send(ackFor(invite, res))
		if res.StatusCode != 480 || took < 2*time.Second || took > 4*time.Second {
			t.Fatalf("%d after %s, want 480 after push.wait (2s)", res.StatusCode, took)
		}
		recs := waitRecords(t, cdr, 2, "bob", func(r calls.Record) bool { return r.To == "sip:bob@sori.test" })
		r := recs[len(recs)-1]
		if r.Code != 480 || r.Push == nil || r.Push.Sent != 1 || r.Push.WakeMS != 0 {
			t.Fatalf("record %+v push %+v", r, r.Push)
		}
	})
}

// Two nodes sharing Redis: the INVITE arrives at node A, the woken app
// registers at node B, and A hears of it through Redis and sends it the
// INVITE: the call connects.
func TestPushWakeAcrossNodes(t *testing.T) {
	gw := startPushGateway(t)
	rs := redistest.Start(t)
	a := startNode(t, nodeConfig{store: rs.URL(), extra: gw.yaml("5s")})
	b := startNode(t, nodeConfig{store: rs.URL(), extra: gw.yaml("5s")})
	registerApp(t, b, "udp", "bob-app@test", 1) // then asleep

	alice := newUA(t, a, "udp", "alice")
	invite := alice.call("sip:bob@sori.test")
	if p := gw.next(t, 5*time.Second); p.PRID != "bob-device-1" {
		t.Fatalf("push %+v", p)
	}
	woken := registerApp(t, b, "udp", "bob-app@test", 3) // a new socket, at node B
	inv := woken.nextRequest()
	if inv.Method != sip.INVITE || !strings.Contains(inv.Via().Value(), ":"+strconv.Itoa(a.port)) {
		t.Fatalf("woken app got %s via %s, want the INVITE from node A", inv.Method, inv.Via().Value())
	}
	woken.answer(inv, 200, "OK", "Contact: <sip:bob@"+woken.local+">")
	res := alice.final()
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", res.StatusCode)
	}
	_ = invite
	alice.send(alice.inDialog("ACK", 2, res))
	if ack := woken.readRequest(); ack.Method != sip.ACK {
		t.Fatalf("got %s, want ACK", ack.Method)
	}
	alice.send(alice.inDialog("BYE", 3, res))
	bye := woken.readRequest()
	woken.answer(bye, 200, "OK")
	if r := alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
	if got := nodeMetric(t, a, "sori_push_calls_answered_total"); got != "1" {
		t.Errorf("node A's sori_push_calls_answered_total = %q", got)
	}
}
