package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/emiago/sipgo/sip"
)

// wsPhone is a SIP client over a WebSocket (RFC 7118), as a browser is:
// one SIP message per WebSocket message.
type wsPhone struct {
	t    *testing.T
	c    *websocket.Conn
	host string // the Via and Contact host a browser makes up (RFC 7118 §5.2)
}

// registeredWSPhone is bob's browser on a WebSocket to url (trusting
// caFile), its made-up host host, registered (401, then 200 with his
// credentials); tag sets its REGISTERs' Call-ID, branches and From tags
// apart.
func registeredWSPhone(t *testing.T, url, caFile, host, tag string) *wsPhone {
	t.Helper()
	c, _, err := dialWS(t, url, caFile, "sip")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	bob := &wsPhone{t: t, c: c, host: host}
	register := func(cseq int, auth string) string {
		return fmt.Sprintf("REGISTER sip:sori.test SIP/2.0\nVia: SIP/2.0/WSS %[1]s;branch=z9hG4bK-%[2]s-%[3]d\nMax-Forwards: 70\nFrom: <sip:bob@sori.test>;tag=%[2]s%[3]d\nTo: <sip:bob@sori.test>\nCall-ID: %[2]s-reg@test\nCSeq: %[3]d REGISTER\nContact: <sip:bob@%[1]s;transport=ws>\nExpires: 600\n%[4]sContent-Length: 0\n\n",
			host, tag, cseq, auth)
	}
	bob.send(register(1, ""))
	res := bob.final()
	if res.StatusCode != 401 {
		t.Fatalf("the browser's REGISTER: %d", res.StatusCode)
	}
	bob.send(register(2, "Authorization: "+digestFor(t, res, "WWW-Authenticate", "REGISTER", "sip:sori.test", "bob", "bob-secret")+"\n"))
	if res := bob.final(); res.StatusCode != 200 {
		t.Fatalf("the browser's REGISTER with credentials: %d %s", res.StatusCode, res.Reason)
	}
	return bob
}

func dialWS(t *testing.T, url, caFile string, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: subprotocols,
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: trusting(t, caFile)}}})
}

func (p *wsPhone) send(raw string) {
	p.t.Helper()
	raw = strings.ReplaceAll(strings.ReplaceAll(raw, "\r\n", "\n"), "\n", "\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.c.Write(ctx, websocket.MessageText, []byte(raw)); err != nil {
		p.t.Fatal(err)
	}
}

func (p *wsPhone) readRaw() []byte {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, data, err := p.c.Read(ctx)
	if err != nil {
		p.t.Fatalf("nothing received over the WebSocket: %v", err)
	}
	return data
}

func (p *wsPhone) read() sip.Message {
	p.t.Helper()
	data := p.readRaw()
	m, err := sip.ParseMessage(data)
	if err != nil {
		p.t.Fatalf("unparsable: %v\n%s", err, data)
	}
	return m
}

func (p *wsPhone) final() *sip.Response {
	p.t.Helper()
	for {
		if res, ok := p.read().(*sip.Response); ok && res.StatusCode >= 200 {
			return res
		}
	}
}

// A browser-like client over WSS registers, is called by a UDP phone and
// answers on its WebSocket, and sends and receives MESSAGE; a double CRLF
// gets a CRLF; a client that does not offer the sip subprotocol is refused.
func TestWebSocketPhone(t *testing.T) {
	dir := t.TempDir()
	port, wssPort := freeSIPPort(t), freeSIPPort(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	n := runNode(t, fmt.Sprintf(`sip:
  domain: sori.test
  listen: ["udp:127.0.0.1:%d", "wss:127.0.0.1:%d"]
  tls: {cert: %q, key: %q, self_signed: true}
registrar: {store: memory}
http: {listen: %s}
users:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
`, port, wssPort, cert, key, httpAddr), port, httpAddr)
	url := fmt.Sprintf("wss://127.0.0.1:%d/", wssPort)

	if c, res, err := dialWS(t, url, cert); err == nil {
		// Without the sip subprotocol sori closes it (RFC 7118 §4.1).
		_, _, rerr := c.Read(context.Background())
		if websocket.CloseStatus(rerr) != websocket.StatusPolicyViolation {
			t.Fatalf("a WebSocket without the sip subprotocol: %v (HTTP %v)", rerr, res.Status)
		}
	}

	bob := registeredWSPhone(t, url, cert, "df7jal23ls0d.invalid", "ws")

	bob.send("\r\n\r\n")
	if pong := bob.readRaw(); string(pong) != "\r\n" {
		t.Fatalf("pong %q", pong)
	}

	// A UDP phone calls the WebSocket client.
	alice := newUA(t, n, "udp", "alice")
	if res := alice.registerAuth("alice", "alice-secret", "alice-reg@test", 1, "Contact: <sip:alice@"+alice.local+">"); res.StatusCode != 200 {
		t.Fatalf("alice REGISTER: %d", res.StatusCode)
	}
	alice.authenticated("INVITE", "sip:bob@sori.test")
	inv, ok := bob.read().(*sip.Request)
	if !ok || inv.Method != sip.INVITE {
		t.Fatalf("bob got %v, want the INVITE", inv)
	}
	if rr := inv.GetHeaders("Record-Route"); len(rr) != 2 || !strings.Contains(rr[0].Value(), "transport=wss") {
		t.Fatalf("Record-Route %v: want sori's WSS side first", rr)
	}
	answer := sip.NewResponseFromRequest(inv, 200, "OK", nil)
	answer.To().Params.Add("tag", "bob-ws")
	answer.AppendHeader(sip.NewHeader("Contact", "<sip:bob@"+bob.host+";transport=ws>"))
	answer.SetBody(nil)
	bob.send(answer.String())
	ok200 := alice.final()
	if ok200.StatusCode != 200 {
		t.Fatalf("INVITE: %d", ok200.StatusCode)
	}
	alice.send(alice.inDialog("ACK", 2, ok200))
	if ack, ok := bob.read().(*sip.Request); !ok || ack.Method != sip.ACK {
		t.Fatal("bob got no ACK")
	}
	alice.send(alice.inDialog("BYE", 3, ok200))
	bye, ok := bob.read().(*sip.Request)
	if !ok || bye.Method != sip.BYE {
		t.Fatal("bob got no BYE")
	}
	byeOK := sip.NewResponseFromRequest(bye, 200, "OK", nil)
	byeOK.SetBody(nil)
	bob.send(byeOK.String())
	if r := alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}

	// MESSAGE both ways.
	alice.authenticated("MESSAGE", "sip:bob@sori.test", "Content-Type: text/plain")
	msg, ok := bob.read().(*sip.Request)
	if !ok || msg.Method != sip.MESSAGE {
		t.Fatal("bob got no MESSAGE")
	}
	mOK := sip.NewResponseFromRequest(msg, 200, "OK", nil)
	mOK.SetBody(nil)
	bob.send(mOK.String())
	if r := alice.final(); r.StatusCode != 200 {
		t.Fatalf("MESSAGE to the WebSocket: %d", r.StatusCode)
	}
	message := func(cseq int, auth string) string {
		return fmt.Sprintf("MESSAGE sip:alice@sori.test SIP/2.0\nVia: SIP/2.0/WSS %s;branch=z9hG4bK-wsm-%d\nMax-Forwards: 70\nFrom: <sip:bob@sori.test>;tag=wsm\nTo: <sip:alice@sori.test>\nCall-ID: ws-msg@test\nCSeq: %d MESSAGE\n%sContent-Type: text/plain\nContent-Length: 2\n\nhi",
			bob.host, cseq, cseq, auth)
	}
	bob.send(message(1, ""))
	res := bob.final()
	if res.StatusCode != 407 {
		t.Fatalf("MESSAGE from the WebSocket: %d, want 407 first", res.StatusCode)
	}
	bob.send(message(2, "Proxy-Authorization: "+digestFor(t, res, "Proxy-Authenticate", "MESSAGE", "sip:alice@sori.test", "bob", "bob-secret")+"\n"))
	got := alice.readRequest()
	if got.Method != sip.MESSAGE || string(got.Body()) != "hi" {
		t.Fatalf("alice got %s %q", got.Method, got.Body())
	}
	alice.respond(got, 200, "OK")
	if r := bob.final(); r.StatusCode != 200 {
		t.Fatalf("MESSAGE from the WebSocket: %d", r.StatusCode)
	}
}
