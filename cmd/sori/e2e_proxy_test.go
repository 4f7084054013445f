package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

// The proxy's edge cases that SIPp scenarios cannot express, with raw SIP
// from sockets the test controls (phones, and a misbehaving next hop).

// ua is a phone: one socket, one user.
type ua struct {
	*sipConn
	user, password string
	authAs         string // digest user name; empty: user
	calls          int
	sdp            string // body of the requests it builds; empty: none
}

func newUA(t *testing.T, n *node, transport, user string) *ua {
	return &ua{sipConn: dialSIP(t, transport, n.addr()), user: user, password: user + "-secret"}
}

// request builds an out-of-dialog request from the UA's user; an extra
// line replaces the default header of the same name.
func (u *ua) request(method, ruri, callID string, cseq int, extra ...string) string {
	u.seq++
	tok := sipToken(callID)
	lines := []string{
		fmt.Sprintf("Via: SIP/2.0/%s %s;branch=z9hG4bK-%s-%d-%d;rport", strings.ToUpper(u.transport), u.local, tok, cseq, u.seq),
		"Max-Forwards: 70",
		fmt.Sprintf("From: <sip:%s@sori.test>;tag=%s-tag", u.user, tok),
		fmt.Sprintf("To: <%s>", ruri),
		"Call-ID: " + callID,
		fmt.Sprintf("CSeq: %d %s", cseq, method),
		fmt.Sprintf("Contact: <sip:%s@%s;transport=%s>", u.user, u.local, u.transport),
	}
	for _, e := range extra {
		name, _, _ := strings.Cut(e, ":")
		replaced := false
		for i, l := range lines {
			if n, _, _ := strings.Cut(l, ":"); strings.EqualFold(n, name) {
				lines[i], replaced = e, true
			}
		}
		if !replaced {
			lines = append(lines, e)
		}
	}
	if u.sdp == "" {
		return method + " " + ruri + " SIP/2.0\n" + joinLines(lines) + "Content-Length: 0\n\n"
	}
	body := strings.ReplaceAll(strings.ReplaceAll(u.sdp, "\r\n", "\n"), "\n", "\r\n")
	return method + " " + ruri + " SIP/2.0\n" + joinLines(lines) + fmt.Sprintf("Content-Type: application/sdp\nContent-Length: %d\n\n", len(body)) + u.sdp
}

// sipToken is s as a SIP token (RFC 3261 §25.1), for a tag or branch
// made from a Call-ID: '@' is not a token character, and a strict
// parser (JsSIP) drops the whole message for it.
func sipToken(s string) string { return strings.ReplaceAll(s, "@", ".") }

// authenticated sends method to ruri, answers the 407 (ACKing it for an
// INVITE) and sends the request again with credentials; the caller reads
// what comes back.
func (u *ua) authenticated(method, ruri string, extra ...string) {
	u.t.Helper()
	u.calls++
	callID := fmt.Sprintf("%s-%s-%d@test", strings.ToLower(method), u.user, u.calls)
	first := u.request(method, ruri, callID, 1, extra...)
	res := u.do(first)
	if res.StatusCode != 407 {
		u.t.Fatalf("%s %s: want 407 first, got %d %s", method, ruri, res.StatusCode, res.Reason)
	}
	if method == "INVITE" {
		u.send(ackFor(first, res))
	}
	user := u.authAs
	if user == "" {
		user = u.user
	}
	cr := digestFor(u.t, res, "Proxy-Authenticate", method, ruri, user, u.password)
	u.send(u.request(method, ruri, callID, 2, append(extra, "Proxy-Authorization: "+cr)...))
}

// final reads responses until a final one.
func (u *ua) final() *sip.Response {
	u.t.Helper()
	for {
		if res := u.read(); res.StatusCode >= 200 {
			return res
		}
	}
}

// ackFor builds the ACK of a non-2xx final response: same branch, same
// Request-URI, the response's To (RFC 3261 §17.1.1.3).
func ackFor(invite string, res *sip.Response) string {
	var b strings.Builder
	head, _, _ := strings.Cut(invite, "\n\n")
	for _, line := range strings.Split(head, "\n") {
		switch {
		case strings.HasPrefix(line, "Content-Type:"):
		case strings.HasPrefix(line, "Content-Length:"):
			b.WriteString("Content-Length: 0\n")
		case strings.HasPrefix(line, "INVITE "):
			b.WriteString("ACK " + strings.TrimPrefix(line, "INVITE ") + "\n")
		case strings.HasPrefix(line, "To:"):
			b.WriteString("To: " + res.To().Value() + "\n")
		case strings.HasPrefix(line, "CSeq:"):
			b.WriteString("CSeq: " + strings.Fields(line)[1] + " ACK\n")
		case strings.HasPrefix(line, "Contact:"), strings.HasPrefix(line, "Proxy-Authorization:"):
		default:
			b.WriteString(line + "\n")
		}
	}
	return strings.TrimRight(b.String(), "\n") + "\n\n"
}

// inDialog builds ACK or BYE for an answered INVITE: Request-URI the
// remote Contact, Route the Record-Route reversed, the 200's To.
func (u *ua) inDialog(method string, cseq int, res *sip.Response) string {
	var routes []string
	rrs := res.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		routes = append(routes, "Route: "+rrs[i].Value())
	}
	u.seq++
	return fmt.Sprintf("%s %s SIP/2.0\nVia: SIP/2.0/%s %s;branch=z9hG4bK-dlg-%d;rport\nMax-Forwards: 70\n%sFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: %d %s\nContent-Length: 0\n\n",
		method, res.Contact().Address.String(), strings.ToUpper(u.transport), u.local, u.seq, joinLines(routes),
		res.From().Value(), res.To().Value(), res.CallID().Value(), cseq, method)
}

func TestProxyEdgeCases(t *testing.T) {
	n := startNode(t, nodeConfig{})

	t.Run("Max-Forwards 0 gets 483 before any challenge", func(t *testing.T) {
		alice := newUA(t, n, "udp", "alice")
		inv := alice.request("INVITE", "sip:bob@sori.test", "mf0@test", 1, "Max-Forwards: 0")
		res := alice.do(inv)
		if res.StatusCode != 483 {
			t.Fatalf("got %d %s", res.StatusCode, res.Reason)
		}
		alice.send(ackFor(inv, res))
	})

	t.Run("a request coming back to sori is a loop: 482", func(t *testing.T) {
		// A next hop that routes the request straight back, as a
		// misconfigured peer would.
		peer := dialSIP(t, "udp", n.addr())
		alice := newUA(t, n, "udp", "alice")
		alice.authenticated("MESSAGE", "sip:carol@"+peer.local)
		req := peer.readRequest()
		if v := req.Via(); !strings.HasPrefix(v.Params.GetOr("branch", ""), "z9hG4bKsR") {
			t.Fatalf("top Via is not sori's: %s", v.Value())
		}
		back := req.Clone()
		via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: portOf(t, peer.local), Params: sip.NewParams()}
		via.Params.Add("branch", "z9hG4bK-peer-1")
		back.PrependHeader(via)
		peer.send(back.String())
		if looped := peer.read(); looped.StatusCode != 482 {
			t.Fatalf("the looped request got %d %s", looped.StatusCode, looped.Reason)
		}
		peer.respond(req, 482, "Loop Detected")
		if res := alice.final(); res.StatusCode != 482 {
			t.Fatalf("the caller got %d %s", res.StatusCode, res.Reason)
		}
	})

	t.Run("From another user than the one authenticated: 403", func(t *testing.T) {
		mallory := newUA(t, n, "udp", "alice") // From alice, credentials of bob
		mallory.authAs, mallory.password = "bob", "bob-secret"
		mallory.authenticated("INVITE", "sip:bob@sori.test")
		if res := mallory.final(); res.StatusCode != 403 {
			t.Fatalf("got %d %s", res.StatusCode, res.Reason)
		}
	})

	t.Run("another domain relaying through sori: 404 (RFC 3261 §21.4.5)", func(t *testing.T) {
		c := dialSIP(t, "udp", n.addr())
		for i, ruri := range []string{"sip:dave@elsewhere.invalid", "sip:dave@127.0.0.1:9"} {
			res := c.do(fmt.Sprintf("MESSAGE %s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-relay-%d;rport\nMax-Forwards: 70\n"+
				"From: <sip:carol@carrier.invalid>;tag=r\nTo: <%s>\nCall-ID: relay-%d@test\nCSeq: 1 MESSAGE\nContent-Length: 0\n\n", ruri, c.local, i, ruri, i))
			if res.StatusCode != 404 {
				t.Fatalf("%s: got %d %s", ruri, res.StatusCode, res.Reason)
			}
		}
	})

	t.Run("a callee registered over TCP is reached over its connection", func(t *testing.T) {
		bob := newUA(t, n, "tcp", "bob")
		// The Contact names an address where nothing listens, as a phone
		// behind NAT does: only the connection reaches it.
		contact := "sip:bob@192.168.1.20:5060;transport=tcp"
		if res := bob.registerAuth("bob", "bob-secret", "tcp-reg@test", 1, "Contact: <"+contact+">"); res.StatusCode != 200 {
			t.Fatalf("REGISTER over TCP: %d", res.StatusCode)
		}
		defer bob.registerAuth("bob", "bob-secret", "tcp-reg@test", 10, "Contact: *", "Expires: 0")
		alice := newUA(t, n, "udp", "alice")
		alice.authenticated("INVITE", "sip:bob@sori.test")
		inv := bob.readRequest()
		if inv.Method != sip.INVITE || inv.Recipient.String() != contact {
			t.Fatalf("bob got %s %s", inv.Method, inv.Recipient.String())
		}
		rr := inv.GetHeaders("Record-Route")
		if len(rr) != 2 || !strings.Contains(rr[0].Value(), "transport=tcp") || strings.Contains(rr[1].Value(), "transport") {
			t.Fatalf("want a double Record-Route (TCP, then UDP), got %v", rr)
		}
		bob.respond(inv, 180, "Ringing", "Contact: <"+contact+">")
		bob.respond(inv, 200, "OK", "Contact: <"+contact+">")
		res := alice.final()
		if res.StatusCode != 200 {
			t.Fatalf("alice got %d", res.StatusCode)
		}
		sendACK(t, alice, bob, 2, res)
		alice.send(alice.inDialog("BYE", 3, res))
		bye := bob.readRequest()
		if bye.Method != sip.BYE || bye.Recipient.String() != contact {
			t.Fatalf("bob got %s %s", bye.Method, bye.Recipient.String())
		}
		bob.respond(bye, 200, "OK")
		if res := alice.final(); res.StatusCode != 200 || res.CSeq().MethodName != sip.BYE {
			t.Fatalf("BYE: %d %s", res.StatusCode, res.CSeq().MethodName)
		}
	})

	t.Run("MESSAGE and OPTIONS reach the user's phone", func(t *testing.T) {
		bob := newUA(t, n, "udp", "bob")
		if res := bob.registerAuth("bob", "bob-secret", "udp-reg@test", 1, "Contact: <sip:bob@"+bob.local+">"); res.StatusCode != 200 {
			t.Fatalf("REGISTER: %d", res.StatusCode)
		}
		defer bob.registerAuth("bob", "bob-secret", "udp-reg@test", 10, "Contact: *", "Expires: 0")
		alice := newUA(t, n, "udp", "alice")
		for _, tt := range []struct {
			method string
			code   int
		}{{"MESSAGE", 202}, {"OPTIONS", 200}} {
			alice.authenticated(tt.method, "sip:bob@sori.test")
			req := bob.readRequest()
			if req.Method.String() != tt.method || req.From().Address.User != "alice" || req.GetHeader("Proxy-Authorization") != nil {
				t.Fatalf("bob got %s from %s", req.Method, req.From().Address.String())
			}
			if req.RecordRoute() != nil {
				t.Fatalf("%s starts no dialog, yet got Record-Route", tt.method)
			}
			bob.respond(req, tt.code, "OK")
			if res := alice.final(); res.StatusCode != tt.code {
				t.Fatalf("%s: alice got %d", tt.method, res.StatusCode)
			}
		}
	})
}

// With the Redis store, every node's call records land in one Redis Stream.
func TestCallRecordInRedisStream(t *testing.T) {
	rs := redistest.Start(t)
	n := startNode(t, nodeConfig{store: rs.URL()})
	bob := newUA(t, n, "udp", "bob")
	if res := bob.registerAuth("bob", "bob-secret", "reg@test", 1, "Contact: <sip:bob@"+bob.local+">"); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	alice := newUA(t, n, "udp", "alice")
	alice.authenticated("INVITE", "sip:bob@sori.test")
	inv := bob.readRequest()
	bob.respond(inv, 200, "OK", "Contact: <sip:bob@"+bob.local+">")
	res := alice.final()
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", res.StatusCode)
	}
	alice.send(alice.inDialog("ACK", 2, res))
	bob.readRequest()
	// bob hangs up: his BYE goes to alice's Contact through sori.
	bye := fmt.Sprintf("BYE %s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-bob-bye;rport\nMax-Forwards: 70\n%sFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: 1 BYE\nContent-Length: 0\n\n",
		inv.Contact().Address.String(), bob.local, routeSet(inv), res.To().Value(), res.From().Value(), res.CallID().Value())
	bob.send(bye)
	if req := alice.readRequest(); req.Method != sip.BYE {
		t.Fatalf("alice got %s", req.Method)
	} else {
		alice.respond(req, 200, "OK")
	}
	if r := bob.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}

	client := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer client.Close()
	var msgs []redis.XMessage
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var err error
		if msgs, err = client.XRange(t.Context(), "sori:cdr", "-", "+").Result(); err == nil && len(msgs) > 0 {
			break
		}
	}
	if len(msgs) != 1 {
		t.Fatalf("%d entries in sori:cdr", len(msgs))
	}
	v := msgs[0].Values
	if v["call_id"] != res.CallID().Value() || v["caller"] != "alice" || v["code"] != "200" || v["disposition"] != "answered" ||
		v["hangup_by"] != "callee" || v["answer"] == nil || v["callee"] != "sip:bob@"+bob.local {
		t.Fatalf("record %v", v)
	}
}

// routeSet is the callee's route set: the INVITE's Record-Route, in order.
func routeSet(inv *sip.Request) string {
	var b strings.Builder
	for _, h := range inv.GetHeaders("Record-Route") {
		b.WriteString("Route: " + h.Value() + "\n")
	}
	return b.String()
}

func portOf(t *testing.T, hostport string) int {
	t.Helper()
	var port int
	if _, err := fmt.Sscanf(hostport[strings.LastIndex(hostport, ":")+1:], "%d", &port); err != nil {
		t.Fatal(err)
	}
	return port
}

// Timer C: a callee that rings and never answers is cancelled, and the
// caller gets 480 No Answer.
func TestTimerC(t *testing.T) {
	n := startNode(t, nodeConfig{sip: "  timer_c: 1s\n"})
	bob := newUA(t, n, "udp", "bob")
	if res := bob.registerAuth("bob", "bob-secret", "tc-reg@test", 1, "Contact: <sip:bob@"+bob.local+">"); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	alice := newUA(t, n, "udp", "alice")
	start := time.Now()
	alice.authenticated("INVITE", "sip:bob@sori.test")
	inv := bob.readRequest()
	bob.respond(inv, 180, "Ringing", "Contact: <sip:bob@"+bob.local+">")
	cancel := bob.readRequest()
	if cancel.Method != sip.CANCEL {
		t.Fatalf("bob got %s, want CANCEL", cancel.Method)
	}
	bob.respond(cancel, 200, "OK")
	bob.respond(inv, 487, "Request Terminated")
	res := alice.final()
	if res.StatusCode != 480 || time.Since(start) < time.Second {
		t.Fatalf("alice got %d %s after %v", res.StatusCode, res.Reason, time.Since(start))
	}
}
