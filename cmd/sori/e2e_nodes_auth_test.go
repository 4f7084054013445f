package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/nodes"
	"github.com/sori-voice/sori/sip/siptest"
)

// Two nodes talking in the clear (TCP), on 127.0.0.1 and 127.0.0.2, with
// a tight rate limit (10/s, burst 20, security.action reject); the
// phones' addresses are trusted networks, so only the nodes' addresses
// are limited. A node's address is no credential: node b takes only what
// carries node a's signature for node a's.
//
//   - From node a's address, another socket (another process on node a's
//     host, or spoofed datagrams) sends node b what node a would: bob's
//     flow token in a Route. Out of a dialog it is challenged (407), in
//     one refused (403 Not From A Node), and bob gets neither.
//   - The same socket floods node b with OPTIONS: past the burst they
//     are dropped (no 503, security.action reject or not: it would go to
//     node a on a spoofer's word), and node b bans 127.0.0.1.
//   - alice, on node a, then sends bob on node b as many MESSAGEs as
//     fast: node a forwards each to node b from 127.0.0.1, banned, and
//     over any rate limit, and every one reaches bob and is answered 200:
//     node a's signed messages are neither limited nor banned.
func TestNodesSignedPastRateLimits(t *testing.T) {
	rs := redistest.Start(t)
	ips := []string{"127.0.0.1", "127.0.0.2"}
	ports := []int{freeSIPPort(t), freeSIPPort(t)}
	start := func(i int, id string) *sipNode {
		return nodeSpec{id: id, ip: ips[i], port: ports[i], nodes: nodeAddrs("tcp", ips, ports), store: rs.URL(),
			registrar: "  retry_after: 5\n",
			sections: `security:
  action: reject
  trusted: ["127.0.0.10/32", "127.0.0.11/32"]
  rate_limit: {rate: 10, burst: 20, ban_time: 1m}
`}.start(t)
	}
	a, b := start(0, "a"), start(1, "b")

	const contact = "sip:bob@192.168.1.20:5060;transport=tcp"
	bob := &ua{sipConn: dialFrom(t, "tcp", "127.0.0.11", b.sipAddr()), user: "bob", password: "bob-secret"}
	if res := bob.registerAuth("bob", "bob-secret", "bob-signed-nodes", 1, "Contact: <"+contact+">", "Expires: 600"); res.StatusCode != 200 {
		t.Fatalf("bob's REGISTER on node b: %d", res.StatusCode)
	}
	alice := &ua{sipConn: dialFrom(t, "udp", "127.0.0.10", a.sipAddr()), user: "alice", password: "alice-secret"}
	var route string // node b's Record-Route, bob's flow token in it
	callAndHangUp(t, alice, bob, contact, func(inv *sip.Request) {
		if v := inv.GetHeaders("Via"); len(v) != 3 || !strings.Contains(v[1].Value(), a.sipAddr()) {
			t.Fatalf("the INVITE did not come through node a: Via %v", siptest.Values(v))
		}
		if inv.GetHeader("X-Sori-Node") != nil {
			t.Fatal("node a's signature reached bob's phone")
		}
		for _, h := range inv.GetHeaders("Record-Route") {
			var u sip.Uri
			if err := sip.ParseUri(strings.Trim(h.Value(), "<>"), &u); err == nil && u.Host == "127.0.0.2" && strings.HasPrefix(u.User, "f1") {
				route = h.Value()
			}
		}
	})
	if route == "" {
		t.Fatal("no Record-Route of node b's with a flow token")
	}

	// 1. What node a would send, from node a's address, unsigned.
	spoof := dialFrom(t, "udp", "127.0.0.1", b.sipAddr())
	message := func(n int, inDialog bool) (string, string) {
		toTag := ""
		if inDialog {
			toTag = ";tag=bob-dialog"
		}
		callID := fmt.Sprintf("spoofed-%d", n)
		return fmt.Sprintf("MESSAGE %[1]s SIP/2.0\nVia: SIP/2.0/UDP %[2]s;branch=z9hG4bK-spoof-%[3]d;rport\nRoute: %[4]s\nMax-Forwards: 69\n"+
			"From: <sip:alice@sori.test>;tag=spoof-%[3]d\nTo: <sip:bob@sori.test>%[5]s\nCall-ID: %[6]s\nCSeq: 1 MESSAGE\n"+
			"X-Sori-Node: t=1;mac=forged\nContent-Type: text/plain\nContent-Length: 2\n\nhi", contact, spoof.local, n, route, toTag, callID), callID
	}
	raw, _ := message(1, false)
	if res := spoof.do(raw); res.StatusCode != 407 {
		t.Fatalf("from node a's address, unsigned, out of a dialog: %d %s, want 407 (a phone's)", res.StatusCode, res.Reason)
	}
	raw, _ = message(2, true)
	if res := spoof.do(raw); res.StatusCode != 403 || res.Reason != "Forbidden: Not From A Node" {
		t.Fatalf("from node a's address, unsigned, in a dialog: %d %s, want 403 Not From A Node", res.StatusCode, res.Reason)
	}

	// 2. A flood from node a's address, unsigned: limited, then banned,
	// and what is refused is dropped, even with security.action reject:
	// a 503 would reach node a on the word of whoever spoofed its address.
	kept := func() float64 {
		return metricValue(t, b.node, `sori_abuse_dropped_total{reason="rate_limit"}`) + metricValue(t, b.node, `sori_abuse_dropped_total{reason="banned"}`)
	}
	flood := dialUDPFrom(t, "127.0.0.1", b.sipAddr())
	const n = 60
	floodStart := kept()
	for i := range n {
		if _, err := flood.conn.Write(crlf(flood.options("flood-"+strconv.Itoa(i), ""))); err != nil {
			t.Fatal(err)
		}
	}
	codes := map[int]int{}
	buf := make([]byte, 65535)
	for deadline := time.Now().Add(2 * time.Second); kept()-floodStart < n/2 || time.Now().Before(deadline); {
		if time.Now().After(deadline.Add(8 * time.Second)) {
			t.Fatalf("the unsigned flood from node a's address: %v dropped, answers %v", kept()-floodStart, codes)
		}
		_ = flood.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if k, err := flood.conn.Read(buf); err == nil {
			if res, ok := parsedResponse(buf[:k]); ok && res.StatusCode >= 200 {
				codes[res.StatusCode]++
			}
		}
	}
	t.Logf("%d OPTIONS from node a's address, unsigned: answers %v, %v dropped", n, codes, kept()-floodStart)
	if codes[503] != 0 || codes[200] == 0 || codes[200] > 25 {
		t.Fatalf("the unsigned flood from node a's address: answers %v, want the burst's 200s and no 503", codes)
	}
	if ban, ok := findBan(listBans(t, b.node), "127.0.0.1"); !ok || ban.Reason != "rate limit" {
		t.Fatalf("node b's bans: %+v, want 127.0.0.1 for the rate limit", listBans(t, b.node))
	}
	before := kept()

	// 3. As many MESSAGEs as fast through node a, from 127.0.0.1 too:
	// each is bob's, and the first he gets since the spoofed ones.
	for i := range n {
		alice.authenticated("MESSAGE", "sip:bob@sori.test", "Content-Type: text/plain")
		msg := bob.readRequest()
		if msg.Method != sip.MESSAGE || msg.From().Address.User != "alice" || strings.HasPrefix(msg.CallID().Value(), "spoofed-") {
			t.Fatalf("MESSAGE %d: bob got %s %s from %s", i, msg.Method, msg.CallID().Value(), msg.From().Address.String())
		}
		if msg.GetHeader("X-Sori-Node") != nil {
			t.Fatalf("MESSAGE %d: node a's signature reached bob's phone", i)
		}
		bob.respond(msg, 200, "OK")
		if res := alice.final(); res.StatusCode != 200 {
			t.Fatalf("MESSAGE %d through node b, whose bans hold 127.0.0.1: %d %s", i, res.StatusCode, res.Reason)
		}
	}
	if after := kept(); after != before {
		t.Fatalf("node b kept out %v packets during node a's forwarding", after-before)
	}
	// Still banned: the forwarding went past the ban, not around it.
	if _, ok := findBan(listBans(t, b.node), "127.0.0.1"); !ok {
		t.Fatal("127.0.0.1 no longer banned at node b")
	}
	callID := "flood-after"
	if res := flood.transact(flood.options(callID, ""), callID, 1, time.Second); res != nil || kept() <= before {
		t.Fatalf("unsigned OPTIONS from node a's address after the forwarding: answered %v, %v kept out, want dropped", res, kept()-before)
	}
}

// Two nodes in the clear (TCP), as in TestNodesSignedPastRateLimits. A
// socket on node a's address (another process on node a's host) sends
// node b what node a would, with node a's signature made with the
// service's secret: bob's flow token in a Route, out of a dialog and in
// one. Each is node a's and reaches bob, once: the same bytes sent again
// (captured and replayed after their transaction ended, over TCP or UDP)
// are a phone's, challenged (407) out of the dialog and refused (403 Not
// From A Node) in it, and bob gets neither. A copy signed afresh (a
// retransmission, as node a's transport signs each) is node a's again;
// one whose Request-URI was changed after it was signed is a phone's.
func TestNodesSignedReplay(t *testing.T) {
	rs := redistest.Start(t)
	const secret = "e2e-shared-secret-0123456789"
	ips := []string{"127.0.0.1", "127.0.0.2"}
	ports := []int{freeSIPPort(t), freeSIPPort(t)}
	var addrs, peers []string
	for i, ip := range ips {
		peers = append(peers, fmt.Sprintf("tcp:%s:%d", ip, ports[i]))
		addrs = append(addrs, fmt.Sprintf("%q", peers[i]))
	}
	start := func(i int, id string) *sipNode {
		httpAddr := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
		cfg := fmt.Sprintf(`sip:
  domain: sori.test
  listen: ["udp:%[1]s:%[2]d", "tcp:%[1]s:%[2]d"]
  auth_secret: %[7]s
  node_id: %[3]s
  node_address: tcp:%[1]s:%[2]d
  nodes: [%[4]s]
registrar:
  store: %[5]q
  store_timeout: 300ms
  retry_after: 5
security:
  action: reject
  trusted: ["127.0.0.10/32", "127.0.0.11/32"]
  rate_limit: {rate: 50, burst: 100, ban_time: 1m}
http:
  listen: %[6]s
log:
  level: debug
users:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
`, ips[i], ports[i], id, strings.Join(addrs, ", "), rs.URL(), httpAddr, secret)
		return &sipNode{node: runNode(t, cfg, ports[i], httpAddr), id: id, ip: ips[i]}
	}
	a, b := start(0, "a"), start(1, "b")

	const contact = "sip:bob@192.168.1.20:5060;transport=tcp"
	bob := &ua{sipConn: dialFrom(t, "tcp", "127.0.0.11", b.sipAddr()), user: "bob", password: "bob-secret"}
	if res := bob.registerAuth("bob", "bob-secret", "bob-signed-replay", 1, "Contact: <"+contact+">", "Expires: 600"); res.StatusCode != 200 {
		t.Fatalf("bob's REGISTER on node b: %d", res.StatusCode)
	}
	alice := &ua{sipConn: dialFrom(t, "udp", "127.0.0.10", a.sipAddr()), user: "alice", password: "alice-secret"}
	var route string // node b's Record-Route, bob's flow token in it
	callAndHangUp(t, alice, bob, contact, func(inv *sip.Request) {
		for _, h := range inv.GetHeaders("Record-Route") {
			var u sip.Uri
			if err := sip.ParseUri(strings.Trim(h.Value(), "<>"), &u); err == nil && u.Host == "127.0.0.2" && strings.HasPrefix(u.User, "f1") {
				route = h.Value()
			}
		}
	})
	if route == "" {
		t.Fatal("no Record-Route of node b's with a flow token")
	}

	var all []nodes.Address
	for _, p := range peers {
		ad, err := nodes.ParseAddress(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ad)
	}
	nodeA := nodes.NewSigner([]byte(secret), all[0], all) // the service's secret: node a's signatures
	// sign is raw as node a's transport writes it to node b.
	sign := func(raw string) string {
		end := strings.Index(raw, "\r\n\r\n")
		head, rest := raw[:end+2], raw[end+2:]
		return head + nodes.Header + ": " + nodeA.Sign([]byte(head), []byte(rest)) + "\r\n" + rest
	}
	conn := dialFrom(t, "tcp", "127.0.0.1", b.sipAddr())
	message := func(n int, inDialog bool) string {
		toTag := ""
		if inDialog {
			toTag = ";tag=bob-dialog"
		}
		return fmt.Sprintf("MESSAGE %[1]s SIP/2.0\r\nVia: SIP/2.0/TCP %[2]s;branch=z9hG4bK-replay-%[3]d\r\nRoute: %[4]s\r\nMax-Forwards: 69\r\n"+
			"From: <sip:alice@sori.test>;tag=replay-%[3]d\r\nTo: <sip:bob@sori.test>%[5]s\r\nCall-ID: replay-%[3]d\r\nCSeq: 1 MESSAGE\r\n"+
			"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi", contact, conn.local, n, route, toTag)
	}
	// delivered sends raw, signed, from node a's address: bob gets it.
	delivered := func(what, raw string, n int) {
		t.Helper()
		conn.send(raw)
		msg := bob.readRequest()
		if msg.Method != sip.MESSAGE || msg.CallID().Value() != fmt.Sprintf("replay-%d", n) {
			t.Fatalf("%s: bob got %s %s", what, msg.Method, msg.CallID().Value())
		}
		if msg.GetHeader(nodes.Header) != nil {
			t.Fatalf("%s: node a's signature reached bob's phone", what)
		}
		bob.respond(msg, 200, "OK")
		if res := conn.read(); res.StatusCode != 200 {
			t.Fatalf("%s: %d %s, want bob's 200", what, res.StatusCode, res.Reason)
		}
		time.Sleep(300 * time.Millisecond) // its transaction ends (TCP: timer J is 0)
	}
	again := dialFrom(t, "tcp", "127.0.0.1", b.sipAddr()) // another connection
	for i, c := range []struct {
		name     string
		inDialog bool
		code     int
		reason   string
	}{
		{"out of a dialog", false, 407, ""},
		{"in a dialog", true, 403, "Forbidden: Not From A Node"},
	} {
		raw := sign(message(i, c.inDialog))
		delivered(c.name, raw, i)
		for _, replay := range []*sipConn{conn, again} {
			if res := replay.do(raw); res.StatusCode != c.code || c.reason != "" && res.Reason != c.reason {
				t.Fatalf("%s, replayed: %d %s, want %d %s (a phone's)", c.name, res.StatusCode, res.Reason, c.code, c.reason)
			}
			time.Sleep(300 * time.Millisecond) // while a transaction lives, it absorbs a copy
		}
		// The same request signed again, as node a's transport signs a
		// retransmission: node a's (its transaction over, a new one).
		delivered(c.name+", signed again", sign(message(i, c.inDialog)), i)
	}
	// Signed, then sent to another Request-URI: a phone's.
	moved := strings.Replace(sign(message(9, false)), "MESSAGE "+contact, "MESSAGE sip:bob@127.0.0.11:5060;transport=tcp", 1)
	if res := conn.do(moved); res.StatusCode != 407 {
		t.Fatalf("a signed MESSAGE sent to another Request-URI: %d %s, want 407 (a phone's)", res.StatusCode, res.Reason)
	}
	// bob got nothing but what node a's signatures vouched for, once.
	_ = bob.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if more, err := bob.reader.Peek(1); err == nil || len(more) > 0 {
		t.Fatalf("bob got more than node a's signed requests, once each (%d bytes)", bob.reader.Buffered())
	}
}

// parsedResponse is b as a SIP response.
func parsedResponse(b []byte) (*sip.Response, bool) {
	msg, err := sip.ParseMessage(b)
	res, ok := msg.(*sip.Response)
	return res, err == nil && ok
}
