package main

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// A phone registered over a connection is reached down that connection
// only. Once it is closed the binding is dead at once: a call goes to the
// user's other live bindings, and with none left the caller gets 480 in
// well under a second, not after timer C; nothing is dialled towards the
// phone.
func TestClosedConnectionBindingIsDeadAtOnce(t *testing.T) {
	n := startNode(t, nodeConfig{sip: "  timer_c: 30s\n"})
	bobTCP := newUA(t, n, "tcp", "bob")
	// A private Contact, as a phone behind NAT sends: reached over the connection.
	if res := bobTCP.registerAuth("bob", "bob-secret", "flow-tcp@test", 1, "Contact: <sip:bob@192.168.1.20:5060;transport=tcp>"); res.StatusCode != 200 {
		t.Fatalf("REGISTER over TCP: %d", res.StatusCode)
	}
	alice := newUA(t, n, "udp", "alice")

	// While the connection is open, the call comes down it.
	invite := alice.call("sip:bob@sori.test")
	inv := bobTCP.readRequest()
	if inv.Method != sip.INVITE {
		t.Fatalf("bob got %s", inv.Method)
	}
	bobTCP.respond(inv, 486, "Busy Here")
	if ack := bobTCP.readRequest(); ack.Method != sip.ACK {
		t.Fatalf("bob got %s, want ACK", ack.Method)
	}
	busy := alice.final()
	if busy.StatusCode != 486 {
		t.Fatalf("INVITE: %d", busy.StatusCode)
	}
	alice.send(ackFor(invite, busy))

	// The phone's connection goes away: 480 at once, nothing dialled
	// (sip/transport's TestExistingOnlyNeverDials).
	bobTCP.conn.Close()
	time.Sleep(100 * time.Millisecond) // the close reaching sori is not an event the test can see
	start := time.Now()
	invite = alice.call("sip:bob@sori.test")
	res := alice.final()
	if res.StatusCode != 480 || time.Since(start) > time.Second {
		t.Fatalf("call to a closed flow: %d %s after %s, want 480 within 1s", res.StatusCode, res.Reason, time.Since(start))
	}
	alice.send(ackFor(invite, res))

	// With another live binding, the call reaches it.
	bobUDP := newUA(t, n, "udp", "bob")
	if res := bobUDP.registerAuth("bob", "bob-secret", "flow-udp@test", 1, fmt.Sprintf("Contact: <sip:bob@%s>", bobUDP.local)); res.StatusCode != 200 {
		t.Fatalf("REGISTER over UDP: %d", res.StatusCode)
	}
	start = time.Now()
	alice.authenticated("INVITE", "sip:bob@sori.test")
	inv = bobUDP.readRequest()
	if inv.Method != sip.INVITE || time.Since(start) > time.Second {
		t.Fatalf("bob's UDP phone got %s after %s", inv.Method, time.Since(start))
	}
	bobUDP.respond(inv, 200, "OK", "Contact: <sip:bob@"+bobUDP.local+">")
	if res := alice.final(); res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", res.StatusCode)
	}
}

// SIP Outbound (RFC 5626): one device registers two flows (two
// connections, reg-id 1 and 2). A call goes down one flow only, the
// newest; when it is closed the next call reaches the other flow at once;
// with no flow left the caller gets 480 within a second.
func TestOutboundFlowsOfOneDevice(t *testing.T) {
	n := startNode(t, nodeConfig{sip: "  timer_c: 30s\n"})
	const inst = `;+sip.instance="<urn:uuid:00000000-0000-1000-8000-00005e005301>"`
	flow := func(regID int) *ua {
		u := newUA(t, n, "tcp", "bob")
		res := u.registerAuth("bob", "bob-secret", fmt.Sprintf("ob-%d@test", regID), 1, "Supported: outbound",
			fmt.Sprintf("Contact: <sip:bob@192.168.1.20:5060;transport=tcp;ob>%s;reg-id=%d", inst, regID))
		if res.StatusCode != 200 || res.GetHeader("Require") == nil || res.GetHeader("Require").Value() != "outbound" || res.GetHeader("Flow-Timer") == nil {
			t.Fatalf("outbound REGISTER (reg-id %d): %d, Require %v, Flow-Timer %v", regID, res.StatusCode, res.GetHeader("Require"), res.GetHeader("Flow-Timer"))
		}
		return u
	}
	first := flow(1)
	time.Sleep(10 * time.Millisecond) // the second flow is the newer one
	second := flow(2)
	alice := newUA(t, n, "udp", "alice")

	ring := func(phone, idle *ua) {
		t.Helper()
		start := time.Now()
		invite := alice.call("sip:bob@sori.test")
		inv := phone.readRequest()
		if inv.Method != sip.INVITE || time.Since(start) > time.Second {
			t.Fatalf("got %s after %s", inv.Method, time.Since(start))
		}
		phone.respond(inv, 486, "Busy Here")
		if ack := phone.readRequest(); ack.Method != sip.ACK {
			t.Fatalf("got %s, want ACK", ack.Method)
		}
		res := alice.final()
		if res.StatusCode != 486 {
			t.Fatalf("INVITE: %d", res.StatusCode)
		}
		alice.send(ackFor(invite, res))
		if idle != nil {
			// Not forked to the device's other flow: one device, one INVITE.
			_ = idle.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if line, err := idle.reader.ReadString('\n'); err == nil {
				t.Fatalf("the other flow got %q too", line)
			}
		}
	}
	// sori_sip_flows counts the device's open flows; a closed connection
	// leaves it at once.
	flowsOpen := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			got := nodeMetric(t, n, `sori_sip_flows{transport="tcp"}`)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("sori_sip_flows{transport=\"tcp\"} = %q, want %s", got, want)
			}
		}
	}
	flowsOpen("2")
	ring(second, first)

	second.conn.Close()
	flowsOpen("1")
	ring(first, nil)

	first.conn.Close()
	flowsOpen("0")
	start := time.Now()
	invite := alice.call("sip:bob@sori.test")
	res := alice.final()
	if res.StatusCode != 480 || time.Since(start) > time.Second {
		t.Fatalf("no flow left: %d after %s, want 480 within 1s", res.StatusCode, time.Since(start))
	}
	alice.send(ackFor(invite, res))
}

// A UDP phone behind NAT without SIP Outbound gets an OPTIONS keepalive
// every sip.nat_ping.interval at the address its REGISTER came from; once
// it stops answering, after max_misses pings its binding is removed, and
// a call to it gets 480 instead of ringing nowhere.
func TestNATPingsKeepAndDropBindings(t *testing.T) {
	n := startNode(t, nodeConfig{sip: "  nat_ping: {interval: 1s, max_misses: 2}\n"})
	bob := newUA(t, n, "udp", "bob")
	// A private Contact from a public source: behind NAT.
	if res := bob.registerAuth("bob", "bob-secret", "natping@test", 1, "Contact: <sip:bob@192.168.1.20:5060>"); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	for i := 0; i < 2; i++ { // answered pings keep it
		ping := bob.readRequest()
		if ping.Method != sip.OPTIONS || ping.Recipient.String() != "sip:bob@192.168.1.20:5060" {
			t.Fatalf("got %s %s, want sori's OPTIONS to the contact", ping.Method, ping.Recipient.String())
		}
		bob.respond(ping, 200, "OK")
	}
	// The phone is gone: its pings go unanswered.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := httpGet(t, "http://"+n.http+"/metrics")
		if v, ok := sampleIn(body, "sori_nat_ping_bindings_dropped_total"); ok && v == 1 {
			if a, _ := sampleIn(body, `sori_nat_pings_total{result="answered"}`); a < 2 {
				t.Fatalf("answered pings %v", a)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("binding not dropped:\n%s", grepLines(body, "nat_ping"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	alice := newUA(t, n, "udp", "alice")
	invite := alice.call("sip:bob@sori.test")
	res := alice.final()
	if res.StatusCode != 480 {
		t.Fatalf("call after the drop: %d, want 480", res.StatusCode)
	}
	alice.send(ackFor(invite, res))
}

// sip.nat_ping.method crlf: the phone behind NAT gets a double CRLF from
// sori's SIP port every interval, never an OPTIONS, and its binding stays
// although nothing answers.
func TestNATPingsCRLF(t *testing.T) {
	n := startNode(t, nodeConfig{sip: "  nat_ping: {method: crlf, interval: 1s, max_misses: 1}\n"})
	bob := newUA(t, n, "udp", "bob")
	if res := bob.registerAuth("bob", "bob-secret", "natping-crlf@test", 1, "Contact: <sip:bob@192.168.1.20:5060>"); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	udp := bob.conn.(*net.UDPConn)
	buf := make([]byte, 2048)
	for i := 0; i < 3; i++ {
		_ = udp.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, from, err := udp.ReadFromUDP(buf)
		if err != nil || string(buf[:k]) != "\r\n\r\n" || from.String() != n.addr() {
			t.Fatalf("keepalive %d: %q from %v (%v), want a double CRLF from %s", i, buf[:k], from, err, n.addr())
		}
	}
	if got := nodeMetric(t, n, `sori_nat_pings_total{result="sent"}`); got == "" || got == "0" {
		t.Fatalf("sori_nat_pings_total{result=\"sent\"} = %q", got)
	}
	if got := nodeMetric(t, n, "sori_nat_ping_bindings_dropped_total"); got != "0" {
		t.Fatalf("%s bindings dropped", got)
	}
	alice := newUA(t, n, "udp", "alice")
	invite := alice.call("sip:bob@sori.test")
	inv := bob.readRequest()
	if inv.Method != sip.INVITE {
		t.Fatalf("bob got %s, want the INVITE", inv.Method)
	}
	bob.respond(inv, 486, "Busy Here")
	res := alice.final()
	if res.StatusCode != 486 {
		t.Fatalf("call: %d, want bob's 486", res.StatusCode)
	}
	alice.send(ackFor(invite, res))
}

// SIGTERM with a call ringing: after a short grace sori ends it, the
// callee gets CANCEL, the caller 503 with Retry-After (to try another
// node), and sori exits 0 at once instead of holding the shutdown.
func TestShutdownEndsARingingCall(t *testing.T) {
	n := startNode(t, nodeConfig{})
	bob := newUA(t, n, "udp", "bob")
	if res := bob.registerAuth("bob", "bob-secret", "shutdown-reg@test", 1, "Contact: <sip:bob@"+bob.local+">"); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	alice := newUA(t, n, "udp", "alice")
	invite := alice.call("sip:bob@sori.test")
	inv := bob.readRequest()
	bob.respond(inv, 180, "Ringing")
	start := time.Now()
	stopped := make(chan struct{})
	go func() { n.stop(); close(stopped) }()
	var res *sip.Response
	for res == nil || res.StatusCode < 200 {
		res = alice.read()
	}
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("caller got %d %s (Retry-After %v) after %s, want 503 within the grace", res.StatusCode, res.Reason, res.GetHeader("Retry-After"), time.Since(start))
	}
	alice.send(ackFor(invite, res))
	if cancel := bob.readRequest(); cancel.Method != sip.CANCEL {
		t.Fatalf("callee got %s, want CANCEL", cancel.Method)
	}
	<-stopped
	if took := time.Since(start); took > 8*time.Second {
		t.Fatalf("sori took %s to stop", took)
	}
}
