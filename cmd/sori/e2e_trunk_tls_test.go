package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// tlsGateway is a carrier gateway that speaks SIP over TLS with its own
// certificate: it answers OPTIONS, INVITE (200 with a Contact) and BYE.
type tlsGateway struct {
	got chan *sip.Request // every request, as it arrived
}

func startTLSGateway(t *testing.T, cert, key string) (*tlsGateway, int) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	port := freeSIPPort(t)
	ln, err := tls.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	g := &tlsGateway{got: make(chan *sip.Request, 32)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go g.serve(t, c, port)
		}
	}()
	return g, port
}

func (g *tlsGateway) serve(t *testing.T, c net.Conn, port int) {
	defer c.Close()
	sc := &sipConn{t: t, transport: "tls", conn: c, reader: bufio.NewReader(c), local: c.LocalAddr().String()}
	for {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := sc.reader.Peek(1)
		if err != nil || len(line) == 0 {
			return
		}
		req, ok := readMsgQuiet(sc).(*sip.Request)
		if !ok {
			return
		}
		req.SetSource(c.RemoteAddr().String())
		g.got <- req
		if req.IsAck() {
			continue
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		if req.IsInvite() {
			res.To().Params.Add("tag", "tls-gw")
			res.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<sip:gw@127.0.0.1:%d;transport=tls>", port)))
		}
		res.SetBody(nil)
		if _, err := c.Write([]byte(res.String())); err != nil {
			return
		}
	}
}

// readMsgQuiet is sipConn.readMessage without failing the test (the
// gateway's goroutine outlives it).
func readMsgQuiet(sc *sipConn) (m sip.Message) {
	defer func() {
		if recover() != nil {
			m = nil
		}
	}()
	var head strings.Builder
	length := 0
	for {
		line, err := sc.reader.ReadString('\n')
		if err != nil {
			return nil
		}
		if head.Len() == 0 && line == "\r\n" {
			continue
		}
		head.WriteString(line)
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
			fmt.Sscanf(strings.TrimSpace(v), "%d", &length)
		}
		if line == "\r\n" {
			break
		}
	}
	body := make([]byte, length)
	if _, err := sc.reader.Read(body); err != nil && length > 0 {
		return nil
	}
	msg, err := sip.ParseMessage(append([]byte(head.String()), body...))
	if err != nil {
		return nil
	}
	return msg
}

// A carrier reached over TLS: sori verifies the gateway's certificate
// against the trunk's tls.ca, pings it with OPTIONS over TLS, and a call to
// a number goes out over TLS with sori's TLS Via and Record-Route; the BYE
// follows on the same connection. A gateway whose certificate the CA did
// not sign gets nothing.
func TestTrunkOverTLS(t *testing.T) {
	dir := t.TempDir()
	gwCert, gwKey := filepath.Join(dir, "gw.crt"), filepath.Join(dir, "gw.key")
	if err := selfSigned(gwCert, gwKey, []string{"gw.carrier.test"}, []net.IP{net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	stranger, strangerKey := filepath.Join(dir, "other.crt"), filepath.Join(dir, "other.key")
	if err := selfSigned(stranger, strangerKey, []string{"gw.carrier.test"}, []net.IP{net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	gw, gwPort := startTLSGateway(t, gwCert, gwKey)
	impostor, impostorPort := startTLSGateway(t, stranger, strangerKey) // signed by another key
	an := startAnchor(t)
	tlsPort := freeSIPPort(t)
	port := freeSIPPort(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
	n := runNode(t, fmt.Sprintf(`sip:
  domain: sori.test
  listen: ["udp:127.0.0.1:%d", "tls:127.0.0.1:%d"]
  tls: {cert: %q, key: %q, self_signed: true}
  trunk_ping: 500ms
registrar: {store: memory}
http: {listen: %s}
media: {anchors: [%q]}
numbering: {country_code: "82", national_prefix: "0", international_prefix: "00"}
trunks:
  - name: carrier-tls
    tls: {ca: %q}
    gateways:
      - {address: "tls:127.0.0.1:%d", priority: 1}
  - name: carrier-impostor
    tls: {ca: %q}
    gateways:
      - {address: "tls:127.0.0.1:%d", priority: 1}
routes:
  - {prefix: "+82", trunks: [carrier-tls]}
users:
  - {name: alice, password: alice-secret, numbers: ["+821011112222"]}
`, port, tlsPort, filepath.Join(dir, "sori.crt"), filepath.Join(dir, "sori.key"), httpAddr, an.ng, gwCert, gwPort, gwCert, impostorPort), port, httpAddr)

	// OPTIONS pings over TLS: up.
	select {
	case ping := <-gw.got:
		if ping.Method != sip.OPTIONS || !strings.EqualFold(ping.Via().Transport, "TLS") {
			t.Fatalf("gateway got %s over %s", ping.Method, ping.Via().Transport)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OPTIONS over TLS")
	}
	select {
	case r := <-impostor.got:
		t.Fatalf("a gateway with a certificate the CA did not sign got %s", r.Method)
	case <-time.After(time.Second):
	}

	alice := newUA(t, n, "udp", "alice")
	alice.authenticated("INVITE", "sip:01099998888@sori.test")
	var inv *sip.Request
	for inv == nil {
		select {
		case r := <-gw.got:
			if r.IsInvite() {
				inv = r
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no INVITE at the TLS gateway")
		}
	}
	if !strings.HasPrefix(inv.Recipient.String(), "sip:+821099998888@127.0.0.1:") || !strings.Contains(inv.Recipient.String(), "transport=tls") ||
		!strings.EqualFold(inv.Via().Transport, "TLS") || !strings.Contains(inv.GetHeader("Record-Route").Value(), "transport=tls") {
		t.Fatalf("INVITE %s via %s, Record-Route %s", inv.Recipient.String(), inv.Via().Transport, inv.GetHeader("Record-Route").Value())
	}
	res := alice.final()
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", res.StatusCode)
	}
	alice.send(alice.inDialog("ACK", 2, res))
	alice.send(alice.inDialog("BYE", 3, res))
	for {
		select {
		case r := <-gw.got:
			if r.Method == sip.BYE {
				if r := alice.final(); r.StatusCode != 200 {
					t.Fatalf("BYE: %d", r.StatusCode)
				}
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no BYE at the TLS gateway")
		}
	}
}
