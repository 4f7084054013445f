package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	client "github.com/icholy/digest"
)

// goNetDebug makes the Go runtime print a line on stderr the first time the
// process looks a name up (GODEBUG netdns, level 2 also names each host).
const goNetDebug = "GODEBUG=netdns=go+2"

var lookupLine = regexp.MustCompile(`(?m)^go package net: .*$`)

// watcher listens, TCP and UDP, on a loopback address nobody talks to, and
// reports anything arriving there: the address sori would reach if it
// followed a Via, a Route or a Contact it was sent.
type watcher struct {
	addr string
	hits chan string
}

func watch(t *testing.T, ip string) *watcher {
	t.Helper()
	for range 20 {
		addr := fmt.Sprintf("%s:%d", ip, freeSIPPort(t))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			ln.Close()
			continue
		}
		w := &watcher{addr: addr, hits: make(chan string, 16)}
		t.Cleanup(func() { ln.Close(); pc.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				w.hits <- "tcp connection from " + c.RemoteAddr().String()
				c.Close()
			}
		}()
		go func() {
			buf := make([]byte, 65535)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				first, _, _ := strings.Cut(string(buf[:n]), "\r\n")
				w.hits <- fmt.Sprintf("udp from %s: %q", from, first)
			}
		}()
		return w
	}
	t.Fatal("no port to watch")
	return nil
}

func (w *watcher) quiet(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case h := <-w.hits:
		t.Errorf("sori sent to %s on a peer's say-so: %s", w.addr, h)
	case <-time.After(within):
	}
}

// Responses go back where their request came from, and nothing a peer
// writes (Via, Route, Request-URI) makes sori look a name up or connect
// anywhere; not even an authenticated user's preloaded Route. Defect: a TCP connection carrying bytes after a request was
// closed, the answers lost, and sori then dialled the top Via's sent-by
// and queried DNS for its host.
func TestNothingLeavesOnAPeersSaySo(t *testing.T) {
	n := startNode(t, nodeConfig{env: []string{goNetDebug}})
	w := watch(t, "127.0.0.9")
	host, port, _ := net.SplitHostPort(w.addr)

	t.Run("tcp: answers before close, no dial to the Via", func(t *testing.T) {
		c, err := net.Dial("tcp", n.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		options := func(branch, via string) string {
			return "OPTIONS sip:sori.test SIP/2.0\r\nVia: SIP/2.0/TCP " + via + ";branch=z9hG4bK-" + branch + "\r\n" +
				"Max-Forwards: 70\r\nFrom: <sip:scan@elsewhere.invalid>;tag=1\r\nTo: <sip:sori.test>\r\n" +
				"Call-ID: " + branch + "@hardening\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
		}
		invite := "INVITE sip:bob@sori.test SIP/2.0\r\nVia: SIP/2.0/TCP attacker.invalid:" + port + ";branch=z9hG4bK-inv1\r\n" +
			"Max-Forwards: 70\r\nFrom: <sip:alice@sori.test>;tag=2\r\nTo: <sip:bob@sori.test>\r\n" +
			"Call-ID: inv1@hardening\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@" + w.addr + ";transport=tcp>\r\nContent-Length: 0\r\n\r\n"
		payload := options("opt1", w.addr) + invite + options("opt2", "attacker.invalid") + "\x00\x01 trailing bytes that frame nothing\r\n\r\n"
		if _, err := c.Write([]byte(payload)); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		got := map[string]int{}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("read: %v (got %v)", err, got)
				}
				break
			}
			if strings.HasPrefix(line, "SIP/2.0 ") {
				got[strings.Fields(line)[1]]++
			}
		}
		if got["200"] != 2 || got["407"] != 1 {
			t.Fatalf("answers on the connection: %v, want two 200 and one 407", got)
		}
	})

	t.Run("tcp: peer gone before its answer", func(t *testing.T) {
		c, err := net.Dial("tcp", n.addr())
		if err != nil {
			t.Fatal(err)
		}
		msg := "MESSAGE sip:bob@sori.test SIP/2.0\r\nVia: SIP/2.0/TCP " + w.addr + ";branch=z9hG4bK-gone1\r\n" +
			"Max-Forwards: 70\r\nFrom: <sip:carol@elsewhere.invalid>;tag=3\r\nTo: <sip:bob@sori.test>\r\n" +
			"Call-ID: gone1@hardening\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
		_, _ = c.Write([]byte(msg))
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close() // reset
	})

	t.Run("udp: no rport, answer to the source anyway", func(t *testing.T) {
		c := dialSIP(t, "udp", n.addr())
		res := c.do("OPTIONS sip:sori.test SIP/2.0\nVia: SIP/2.0/UDP " + w.addr + ";branch=z9hG4bK-udp1\nMax-Forwards: 70\n" +
			"From: <sip:scan@elsewhere.invalid>;tag=4\nTo: <sip:sori.test>\nCall-ID: udp1@hardening\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n")
		if res.StatusCode != 200 {
			t.Fatalf("got %d", res.StatusCode)
		}
	})

	t.Run("names and addresses in requests sori routes", func(t *testing.T) {
		c := dialSIP(t, "udp", n.addr())
		for i, route := range []string{"<sip:attacker.invalid;lr>", "<sip:" + w.addr + ";lr>"} {
			// An in-dialog request from nobody sori knows, routed elsewhere.
			res := c.do(fmt.Sprintf("BYE sip:x@attacker.invalid SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-bye%d;rport\nMax-Forwards: 70\n"+
				"Route: %s\nFrom: <sip:scan@elsewhere.invalid>;tag=5\nTo: <sip:x@attacker.invalid>;tag=6\nCall-ID: bye%d@hardening\nCSeq: 2 BYE\nContent-Length: 0\n\n",
				c.local, i, route, i))
			if res.StatusCode < 400 {
				t.Errorf("route %s: %d", route, res.StatusCode)
			}
		}
		// A REGISTER naming hosts everywhere (it is challenged: never acted on).
		res := c.do(c.register("alice", "reg-names@hardening", 1, "Contact: <sip:alice@attacker.invalid:"+port+">", "Path: <sip:"+host+":"+port+";lr>"))
		if res.StatusCode != 401 {
			t.Errorf("REGISTER: %d", res.StatusCode)
		}
	})

	t.Run("a user's preloaded Route is not followed", func(t *testing.T) {
		// alice is authenticated; her new requests still go where their
		// Request-URI says (bob, known but not registered: 480), not to her
		// Route.
		for _, route := range []string{"<sip:" + w.addr + ";lr>", "<sip:attacker.invalid;lr>", "<sip:" + w.addr + ";lr>, <sip:sori.test;lr>"} {
			alice := newUA(t, n, "udp", "alice")
			alice.authenticated("MESSAGE", "sip:bob@sori.test", "Route: "+route)
			if res := alice.final(); res.StatusCode != 480 {
				t.Errorf("MESSAGE with Route %s: %d %s, want 480 (routed by its Request-URI)", route, res.StatusCode, res.Reason)
			}
		}
	})

	w.quiet(t, time.Second)
	if m := lookupLine.FindAllString(n.log(), -1); len(m) > 0 {
		t.Errorf("sori looked names up:\n%s", strings.Join(m, "\n"))
	}
}

// The lookup detector above works: a sori that must resolve a name (its
// store's host) prints the Go resolver's line.
func TestNameLookupIsDetected(t *testing.T) {
	n := startNode(t, nodeConfig{env: []string{goNetDebug}, store: "redis://localhost:1/0"})
	c := dialSIP(t, "udp", n.addr())
	c.do(c.register("alice", "detector@hardening", 1, "Contact: <sip:alice@127.0.0.1:5099>"))
	deadline := time.Now().Add(5 * time.Second)
	for !lookupLine.MatchString(n.log()) {
		if time.Now().After(deadline) {
			t.Fatalf("no resolver line although sori resolved localhost:\n%s", n.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Credentials computed for another resource than the Request-URI get 400
// (RFC 7616 §3.4.6), for REGISTER (401 path) and INVITE (407 path).
// Defect: they were accepted.
func TestDigestURIMustBeTheRequestURI(t *testing.T) {
	n := startNode(t, nodeConfig{})
	t.Run("REGISTER", func(t *testing.T) {
		c := dialSIP(t, "udp", n.addr())
		res := c.do(c.register("alice", "uri-reg@hardening", 1, "Contact: <sip:alice@"+c.local+">"))
		ch, err := client.ParseChallenge(res.GetHeader("WWW-Authenticate").Value())
		if err != nil {
			t.Fatal(err)
		}
		cr, err := client.Digest(ch, client.Options{Method: "REGISTER", URI: "sip:evil.example.org", Username: "alice", Password: "alice-secret"})
		if err != nil {
			t.Fatal(err)
		}
		res = c.do(c.register("alice", "uri-reg@hardening", 2, "Contact: <sip:alice@"+c.local+">", "Authorization: "+cr.String()))
		if res.StatusCode != 400 {
			t.Fatalf("got %d %s, want 400", res.StatusCode, res.Reason)
		}
	})
	t.Run("INVITE", func(t *testing.T) {
		alice := newUA(t, n, "udp", "alice")
		first := alice.request("INVITE", "sip:bob@sori.test", "uri-inv@hardening", 1)
		res := alice.do(first)
		if res.StatusCode != 407 {
			t.Fatalf("got %d", res.StatusCode)
		}
		alice.send(ackFor(first, res))
		ch, err := client.ParseChallenge(res.GetHeader("Proxy-Authenticate").Value())
		if err != nil {
			t.Fatal(err)
		}
		cr, err := client.Digest(ch, client.Options{Method: "INVITE", URI: "sip:carol@sori.test", Username: "alice", Password: "alice-secret"})
		if err != nil {
			t.Fatal(err)
		}
		res = alice.do(alice.request("INVITE", "sip:bob@sori.test", "uri-inv@hardening", 2, "Proxy-Authorization: "+cr.String()))
		if res.StatusCode != 400 {
			t.Fatalf("got %d %s, want 400", res.StatusCode, res.Reason)
		}
	})
}

// Garbage is counted, answered when it can be, and logged sparingly: a
// few truncated lines, not one per datagram with its whole payload.
// Defect: every unparseable datagram was logged at ERROR in full.
func TestBadInputIsLoggedSparingly(t *testing.T) {
	n := startNode(t, nodeConfig{})
	c, err := net.Dial("udp", n.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	junk := strings.Repeat("X", 20000)
	const rounds = 200
	for i := range rounds {
		_, _ = c.Write([]byte(junk))
		bad := fmt.Sprintf("OPTIONS sip:sori.test SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-junk%d;rport\r\nMax-Forwards: 70\r\n"+
			"From: <sip:j@elsewhere.invalid>;tag=j\r\nTo: <sip:sori.test>\r\nCall-ID: junk%d@hardening\r\nCSeq: many OPTIONS\r\nContent-Length: 0\r\n\r\n",
			c.LocalAddr(), i, i)
		_, _ = c.Write([]byte(bad))
		buf := make([]byte, 65535)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, err := c.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:m]), "SIP/2.0 400 ") {
			t.Fatalf("round %d: answer %q %v", i, buf[:m], err)
		}
	}
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	for _, want := range []string{
		fmt.Sprintf(`sori_sip_bad_messages_total{answer="400",transport="UDP"} %d`, rounds),
		fmt.Sprintf(`sori_sip_bad_messages_total{answer="none",transport="UDP"} %d`, rounds),
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(metrics, "sori_sip_bad_messages_total"))
		}
	}
	lines := strings.Split(n.log(), "\n")
	bad := 0
	for _, l := range lines {
		if len(l) > 1000 {
			t.Errorf("log line of %d bytes: %.200s...", len(l), l)
		}
		if strings.Contains(l, "bad SIP message") {
			bad++
			if strings.Contains(l, "level=ERROR") {
				t.Errorf("bad input logged as an error: %.200s", l)
			}
		}
	}
	if bad == 0 || bad > 20 {
		t.Errorf("%d log lines for %d bad messages, want a few", bad, 2*rounds)
	}
}

// Inside a call, where sori sends is the other side, as sori saw it: a
// party to the call cannot make sori send elsewhere (a BYE to an internal
// address), neither with a Request-URI of its choosing nor with a NAT
// alias it wrote itself. Defect: sori followed an alias the caller put in
// its own Contact, and any Request-URI inside a dialog it had set up.
func TestInDialogTargetIsTheOtherSide(t *testing.T) {
	n := startNode(t, nodeConfig{})
	w := watch(t, "127.0.0.9")
	whost, wport, _ := net.SplitHostPort(w.addr)
	bob := newUA(t, n, "udp", "bob")
	if res := bob.registerAuth("bob", "bob-secret", "tgt-reg@test", 1, "Contact: <sip:bob@"+bob.local+">"); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	alice := newUA(t, n, "udp", "alice")
	forged := "sip:alice@" + alice.local + ";alias=" + whost + "~" + wport + "~1"
	alice.authenticated("INVITE", "sip:bob@sori.test", "Contact: <"+forged+">")
	inv := bob.readRequest()
	got := inv.Contact().Address
	if v, _ := got.UriParams.Get("alias"); strings.HasPrefix(v, whost+"~") || got.Host != "127.0.0.1" {
		t.Fatalf("bob got Contact %s: the caller's own alias went through", got.String())
	}
	bob.respond(inv, 200, "OK", "Contact: <sip:bob@"+bob.local+">")
	res := alice.final()
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", res.StatusCode)
	}
	sendACK(t, alice, bob, 2, res)

	// bob's BYE, by the book: Route the Record-Route, To alice's From.
	var routes []string
	for _, h := range inv.GetHeaders("Record-Route") {
		routes = append(routes, "Route: "+h.Value())
	}
	cseq := 0
	bye := func(ruri string) string {
		cseq++
		bob.seq++
		return fmt.Sprintf("BYE %s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-tgt-%d;rport\nMax-Forwards: 70\n%sFrom: <sip:bob@sori.test>;tag=%s\nTo: %s\nCall-ID: %s\nCSeq: %d BYE\nContent-Length: 0\n\n",
			ruri, bob.local, bob.seq, joinLines(routes), res.To().Params.GetOr("tag", ""), inv.From().Value(), inv.CallID().Value(), cseq)
	}
	byeTo := func(ruri string) *sip.Response { return bob.do(bye(ruri)) }
	sealed := got.String()
	for _, ruri := range []string{
		"sip:alice@" + w.addr,                                               // elsewhere
		strings.Replace(sealed, alice.local, w.addr, 1),                     // elsewhere, sori's alias kept
		"sip:alice@" + alice.local + ";alias=" + whost + "~" + wport + "~1", // an alias without sori's seal
	} {
		if r := byeTo(ruri); r.StatusCode != 403 {
			t.Errorf("BYE to %s: %d %s, want 403", ruri, r.StatusCode, r.Reason)
		}
	}
	w.quiet(t, 500*time.Millisecond)
	// To alice's Contact as sori gave it: she gets it.
	bob.send(bye(sealed))
	got2 := alice.readRequest()
	if got2.Method != sip.BYE {
		t.Fatalf("alice got %s, want the BYE", got2.Method)
	}
	alice.respond(got2, 200, "OK")
	if r := bob.read(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
}
