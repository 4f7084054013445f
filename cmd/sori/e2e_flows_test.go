package main

import (
	"fmt"
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
