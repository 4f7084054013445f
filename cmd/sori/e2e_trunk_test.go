package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	client "github.com/icholy/digest"
)

// Calls to phone numbers leave through carrier gateways (SIPp processes
// playing them): by the longest matching prefix, gateway after gateway
// when one is out of service, never past a callee's own answer.
func TestTrunkOutbound(t *testing.T) {
	dir := t.TempDir()
	gw1, gw2, gw3, gw4 := freeSIPPort(t), freeSIPPort(t), freeSIPPort(t), freeSIPPort(t)
	cdr := filepath.Join(dir, "cdr.jsonl")
	an := startAnchor(t)
	cfg := fmt.Sprintf(`cdr: {file: %q}
media: {anchors: [%q]}
numbering: {country_code: "82", national_prefix: "0", international_prefix: "00"}
trunks:
  - name: carrier-a
    gateways:
      - {address: "udp:127.0.0.1:%d", priority: 2, weight: 1}
      - {address: "udp:127.0.0.1:%d", priority: 1, weight: 1}
  - name: carrier-b
    gateways:
      - {address: "udp:127.0.0.1:%d", priority: 1, weight: 1}
      - {address: "udp:127.0.0.1:%d", priority: 2, weight: 1}
routes:
  - {prefix: "+82", trunks: [carrier-a]}
  - {prefix: "+1", trunks: [carrier-b]}
users:
  - {name: alice, password: alice-secret, numbers: ["+821011112222"]}
  - {name: bob, password: bob-secret, numbers: ["+821055556666"]}
`, cdr, an.ng, gw2, gw1, gw3, gw4)
	n := startNode(t, nodeConfig{extra: cfg})

	t.Run("the first gateway is out of service, the next one answers", func(t *testing.T) {
		waitDown := sippUAS(t, dir, "gateway-503.xml", gw1, 2, "-trace_msg", "-message_file", "gw1.msg")
		waitUp := sippUAS(t, dir, "call-uas.xml", gw2, 2)
		// Dialled in the national form, as phones do.
		sippUAC(t, n, dir, "call-uac.xml", "010-9999-8888", "-m", "2", "-r", "10", "-d", "100")
		waitDown()
		waitUp()
		msgs, err := os.ReadFile(filepath.Join(dir, "gw1.msg"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(msgs), "INVITE sip:+821099998888@127.0.0.1:"+strconv.Itoa(gw1)+";user=phone SIP/2.0") {
			t.Fatalf("the carrier did not get the E.164 number:\n%s", tail(string(msgs), 2000))
		}
		if !strings.Contains(string(msgs), "P-Asserted-Identity: <sip:+821011112222@sori.test;user=phone>") {
			t.Fatalf("no P-Asserted-Identity with alice's number:\n%s", tail(string(msgs), 2000))
		}
		// The carrier is offered the anchor's media address, never the phone's.
		m := regexp.MustCompile(`m=audio (\d+) `).FindStringSubmatch(string(msgs))
		if len(m) < 2 {
			t.Fatal("the carrier got no SDP")
		}
		if port, _ := strconv.Atoi(m[1]); port < an.minPort || port > an.maxPort {
			t.Fatalf("the carrier's SDP is not the anchor's: %v", m)
		}
		for _, r := range records(t, cdr, "010-9999-8888", 2) {
			if r.Number != "+821099998888" || r.CallerNumber != "+821011112222" || r.Trunk != "carrier-a" || r.Branches != 2 ||
				r.Disposition != "answered" || !strings.Contains(r.Callee, ":"+strconv.Itoa(gw2)) || r.Gateway != "UDP:127.0.0.1:"+strconv.Itoa(gw2) {
				t.Fatalf("call record %+v: want the number, the trunk, 2 gateways tried, answered by the second", r)
			}
		}
	})

	t.Run("a callee's busy is final: no other gateway is tried", func(t *testing.T) {
		never, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: gw4})
		if err != nil {
			t.Fatal(err)
		}
		defer never.Close()
		wait := sippUAS(t, dir, "call-uas-busy.xml", gw3, 2)
		rejected(t, n, dir, "+14155550100", 486)
		wait()
		_ = never.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, _, err := never.ReadFromUDP(make([]byte, 2048)); err == nil {
			t.Fatal("the second gateway was tried after a 486")
		}
	})

	t.Run("a number of ours reaches its user", func(t *testing.T) {
		port := freeSIPPort(t)
		sippRegister(t, n, dir, "bob", port)
		wait := sippUAS(t, dir, "call-uas.xml", port, 1)
		sippUAC(t, n, dir, "call-uac.xml", "+821055556666", "-m", "1", "-d", "100")
		wait()
	})

	t.Run("no route, and nobody calls out unauthenticated", func(t *testing.T) {
		rejected(t, n, dir, "+442079460958", 404)
		c := dialSIP(t, "udp", n.addr())
		res := c.do(fmt.Sprintf("INVITE sip:+821099998888@sori.test SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-fraud;rport\nMax-Forwards: 70\n"+
			"From: <sip:carol@carrier.invalid>;tag=f\nTo: <sip:+821099998888@sori.test>\nCall-ID: fraud@test\nCSeq: 1 INVITE\nContent-Length: 0\n\n", c.local))
		if res.StatusCode != 403 {
			t.Fatalf("an unauthenticated call out got %d %s", res.StatusCode, res.Reason)
		}
	})
}

// Calls from the phone network: a carrier's INVITE from an address in its
// trunk's ACL is trusted without digest and reaches the user who owns the
// number; the trunk's call limit answers 503; a number we do not have gets
// 404; the same INVITE from outside every ACL gets 403.
func TestTrunkInbound(t *testing.T) {
	an := startAnchor(t)
	trunkCfg := func(acl string) string {
		return fmt.Sprintf(`media: {anchors: [%q]}
numbering: {country_code: "82", national_prefix: "0"}
trunks:
  - name: carrier-a
    gateways: [{address: "udp:127.0.0.1:9"}]
    inbound_acl: [%q]
    max_calls: 1
users:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret, numbers: ["+821055556666"]}
`, an.ng, acl)
	}
	n := startNode(t, nodeConfig{extra: trunkCfg("127.0.0.1/32")})
	bob := newUA(t, n, "udp", "bob")
	if res := bob.registerAuth("bob", "bob-secret", "trunk-reg@test", 1, "Contact: <sip:bob@"+bob.local+">"); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	carrier := newUA(t, n, "udp", "carrier")
	number := "sip:+821055556666@" + n.addr() + ";user=phone"
	invite := func(callID string) string { return carrier.request("INVITE", number, callID, 1) }

	// The caller asked for privacy: the carrier's asserted identity does
	// not reach bob's phone.
	first := carrier.request("INVITE", number, "in-1@carrier", 1, "P-Asserted-Identity: <tel:+82212345678>", "Privacy: id")
	carrier.send(first)
	inv := bob.readRequest()
	if inv.Recipient.User != "bob" || inv.GetHeader("Proxy-Authorization") != nil {
		t.Fatalf("bob got %s", inv.Recipient.String())
	}
	if inv.GetHeader("P-Asserted-Identity") != nil {
		t.Fatal("a private identity reached the phone")
	}
	bob.respond(inv, 200, "OK", "Contact: <sip:bob@"+bob.local+">")
	res := carrier.final()
	if res.StatusCode != 200 {
		t.Fatalf("carrier call: %d", res.StatusCode)
	}
	carrier.send(carrier.inDialog("ACK", 1, res))
	bob.readRequest()

	// The trunk holds one call: the next is refused while it lasts.
	if r := carrier.do(invite("in-2@carrier")); r.StatusCode != 503 {
		t.Fatalf("second call on a full trunk: %d %s", r.StatusCode, r.Reason)
	}
	carrier.send(carrier.inDialog("BYE", 2, res))
	bob.respond(bob.readRequest(), 200, "OK")
	carrier.final()
	carrier.send(invite("in-3@carrier"))
	if again := bob.readRequest(); again.Method != "INVITE" {
		t.Fatalf("after the first call ended, bob got %s", again.Method)
	} else {
		bob.respond(again, 486, "Busy Here")
		carrier.final()
	}

	if r := carrier.do(carrier.request("INVITE", "sip:+821099990000@"+n.addr()+";user=phone", "in-4@carrier", 1)); r.StatusCode != 404 {
		t.Fatalf("a number we do not have: %d", r.StatusCode)
	}

	// The same with SIPp on both ends: a carrier's calls reach a SIPp UAS
	// registered as bob.
	if r := newUA(t, n, "udp", "bob").registerAuth("bob", "bob-secret", "trunk-unreg@test", 1, "Contact: *", "Expires: 0"); r.StatusCode != 200 {
		t.Fatalf("un-REGISTER: %d", r.StatusCode)
	}
	dir := t.TempDir()
	port := freeSIPPort(t)
	sippRegister(t, n, dir, "bob", port)
	wait := sippUAS(t, dir, "call-uas.xml", port, 2)
	runSipp(t, dir, 60*time.Second, n.addr(), "-sf", filepath.Join(sippDir(t), "plain-uac.xml"), "-s", "+821055556666",
		"-key", "domain", "carrier.invalid", "-i", "127.0.0.1", "-p", strconv.Itoa(freeSIPPort(t)), "-m", "2", "-l", "1", "-r", "5",
		"-d", "100", "-nostdin", "-trace_err", "-timeout", "30s")
	wait()

	// The trunk's limit with SIPp: one carrier call held for 3 s, a second
	// one meanwhile gets 503.
	held := sippUAS(t, dir, "call-uas.xml", port, 1)
	longCall := make(chan struct{})
	go func() {
		defer close(longCall)
		cmd := exec.Command("timeout", "30", "sipp", n.addr(), "-sf", filepath.Join(sippDir(t), "plain-uac.xml"), "-s", "+821055556666",
			"-key", "domain", "carrier.invalid", "-i", "127.0.0.1", "-p", strconv.Itoa(freeSIPPort(t)), "-m", "1", "-d", "3000", "-nostdin", "-timeout", "20s")
		cmd.Dir = dir
		_ = cmd.Run()
	}()
	time.Sleep(time.Second)
	sippRefused(t, n, dir, "+821055556666", 503)
	<-longCall
	held()

	// A carrier's INVITE from outside every ACL, with SIPp.
	stranger := startNode(t, nodeConfig{extra: trunkCfg("10.0.0.0/8")})
	sippRefused(t, stranger, dir, "+821055556666", 403)
}

// sippRefused has SIPp, as a carrier, call number at n and checks the call
// was refused with code.
func sippRefused(t *testing.T, n *node, dir, number string, code int) {
	t.Helper()
	file := fmt.Sprintf("refused-%d.msg", code)
	runSipp(t, dir, 30*time.Second, n.addr(), "-sf", filepath.Join(sippDir(t), "plain-uac-reject.xml"), "-s", number,
		"-key", "domain", "carrier.invalid", "-i", "127.0.0.1", "-p", strconv.Itoa(freeSIPPort(t)), "-m", "1",
		"-nostdin", "-trace_err", "-timeout", "20s", "-trace_msg", "-message_file", file)
	msgs, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msgs), "SIP/2.0 "+strconv.Itoa(code)+" ") {
		t.Fatalf("want %d:\n%s", code, tail(string(msgs), 2000))
	}
}

// fakeGateway answers OPTIONS with 200 and each INVITE with the next of
// codes (the last one repeats), with the extra header lines.
func fakeGateway(t *testing.T, port int, codes []int, extra string) *net.UDPConn {
	t.Helper()
	invites := 0 // the peer serves one request at a time
	return fakeUDPPeer(t, port, func(req *sip.Request, respond func(*sip.Response)) {
		code, reason := 200, "OK"
		if req.IsInvite() {
			code = codes[min(invites, len(codes)-1)]
			invites++
			reason = "Gateway Says"
		}
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		if code >= 300 && extra != "" {
			k, v, _ := strings.Cut(extra, ":")
			res.AppendHeader(sip.NewHeader(k, strings.TrimSpace(v)))
		}
		res.SetBody(nil)
		respond(res)
	})
}

// Gateways are pinged with OPTIONS: one that does not answer is skipped
// (state in metrics and `sori trunk status`); one that answers a call
// 503 with Retry-After is taken out for that long.
func TestTrunkGatewayHealth(t *testing.T) {
	dir := t.TempDir()
	dead, alive := freeSIPPort(t), freeSIPPort(t)
	cdr := filepath.Join(dir, "cdr.jsonl")
	an := startAnchor(t)
	n := startNode(t, nodeConfig{sip: "  trunk_ping: 500ms\n", extra: fmt.Sprintf(`cdr: {file: %q}
media: {anchors: [%q]}
trunks:
  - name: carrier-a
    gateways:
      - {address: "udp:127.0.0.1:%d", priority: 1}
      - {address: "udp:127.0.0.1:%d", priority: 2}
routes:
  - {prefix: "+82", trunks: [carrier-a]}
users:
  - {name: alice, password: alice-secret, numbers: ["+821011112222"]}
`, cdr, an.ng, dead, alive)})
	fakeGateway(t, alive, []int{486, 486, 503}, "Retry-After: 60")

	deadGW := fmt.Sprintf("UDP:127.0.0.1:%d", dead)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, body := httpGet(t, "http://"+n.http+"/metrics")
		if strings.Contains(body, `sori_trunk_gateway_up{gateway="`+deadGW+`",trunk="carrier-a"} 0`) &&
			strings.Contains(body, fmt.Sprintf(`sori_trunk_gateway_up{gateway="UDP:127.0.0.1:%d",trunk="carrier-a"} 1`, alive)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway state not in metrics:\n%s", body)
		}
	}
	out, err := exec.Command(binary(t), "-config", n.cfgPath, "trunk", "status").CombinedOutput()
	if err != nil || !strings.Contains(string(out), deadGW) || !regexp.MustCompile(deadGW+`\s+1\s+0\s+down`).Match(out) {
		t.Fatalf("sori trunk status: %v\n%s", err, out)
	}

	// The dead gateway is skipped: the call goes straight to the live one.
	rejected(t, n, dir, "+821099998888", 486)
	for _, r := range records(t, cdr, "+821099998888", 2) {
		if r.Branches != 1 || r.Code != 486 || r.Trunk != "" && r.Trunk != "carrier-a" {
			t.Fatalf("record %+v: want only the live gateway tried", r)
		}
	}
	// Now it is out of service for 60 s: its 503 reaches the caller as 500
	// (RFC 3261 §16.7), and takes it out; with nothing left, the next call
	// gets sori's own 503.
	alice := newUA(t, n, "udp", "alice")
	for _, tt := range []struct {
		number string
		code   int
	}{{"+821077776666", 500}, {"+821055554444", 503}} {
		alice.authenticated("INVITE", "sip:"+tt.number+"@sori.test")
		if res := alice.final(); res.StatusCode != tt.code {
			t.Fatalf("call to %s: %d %s, want %d", tt.number, res.StatusCode, res.Reason, tt.code)
		}
	}
}

// A trunk with register: true: sori registers to the carrier, answers its
// digest challenge, and refreshes the registration before it expires.
func TestTrunkRegistersToCarrier(t *testing.T) {
	port := freeSIPPort(t)
	carrier, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer carrier.Close()
	const challenge = `Digest realm="carrier.example", nonce="n0nce-42", algorithm=MD5, qop="auth"`
	ch, _ := client.ParseChallenge(challenge)
	accepted := make(chan string, 10)
	go func() {
		buf := make([]byte, 65535)
		for {
			k, from, err := carrier.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(buf[:k])
			req, ok := msg.(*sip.Request)
			if err != nil || !ok {
				continue
			}
			req.SetSource(from.String())
			var res *sip.Response
			switch h := req.GetHeader("Authorization"); {
			case req.Method == sip.OPTIONS:
				res = sip.NewResponseFromRequest(req, 200, "OK", nil)
			case req.Method != sip.REGISTER:
				continue
			case h == nil:
				res = sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
				res.AppendHeader(sip.NewHeader("WWW-Authenticate", challenge))
			default:
				cr, err := client.ParseCredentials(h.Value())
				want, err2 := client.Digest(ch, client.Options{Method: "REGISTER", URI: cr.URI, Username: "acct", Password: "secret", Cnonce: cr.Cnonce, Count: cr.Nc})
				if err != nil || err2 != nil || cr.Username != "acct" || cr.Response != want.Response {
					res = sip.NewResponseFromRequest(req, 403, "Forbidden", nil)
					break
				}
				res = sip.NewResponseFromRequest(req, 200, "OK", nil)
				c := req.Contact()
				res.AppendHeader(sip.NewHeader("Contact", "<"+c.Address.String()+">;expires=2"))
				accepted <- req.Contact().Address.String()
			}
			res.SetBody(nil)
			_, _ = carrier.WriteToUDPAddrPort([]byte(res.String()), from)
		}
	}()
	an := startAnchor(t)
	startNode(t, nodeConfig{extra: fmt.Sprintf(`media: {anchors: [%q]}
trunks:
  - name: carrier-a
    gateways: [{address: "udp:127.0.0.1:%d"}]
    auth: {username: acct, password: secret}
    register: true
`, an.ng, port)})
	for i := 0; i < 2; i++ { // the registration, then its refresh before the 2 s run out
		select {
		case contact := <-accepted:
			if !strings.HasPrefix(contact, "sip:acct@127.0.0.1:") {
				t.Fatalf("Contact %s", contact)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("registration %d did not reach the carrier", i+1)
		}
	}
}
