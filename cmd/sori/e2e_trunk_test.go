package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Calls to phone numbers leave through carrier gateways (SIPp processes
// playing them): by the longest matching prefix, gateway after gateway
// when one is out of service, never past a callee's own answer.
func TestTrunkOutbound(t *testing.T) {
	dir := t.TempDir()
	gw1, gw2, gw3, gw4 := freeSIPPort(t), freeSIPPort(t), freeSIPPort(t), freeSIPPort(t)
	cfg := fmt.Sprintf(`numbering: {country_code: "82", national_prefix: "0", international_prefix: "00"}
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
`, gw2, gw1, gw3, gw4)
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
