package transport

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/nodes"
)

// vouchGate passes what is vouched for and rejects the rest, recording
// what it was asked.
type vouchGate struct {
	mu    sync.Mutex
	asked []string // "src vouched"
}

func (g *vouchGate) Admit(src netip.Addr, vouched bool, _ time.Time) Verdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	if vouched {
		g.asked = append(g.asked, src.String()+" vouched")
		return Pass
	}
	g.asked = append(g.asked, src.String()+" not")
	if src == netip.MustParseAddr("127.0.0.3") {
		return Pass // a phone within its limits
	}
	return Reject
}

func (g *vouchGate) take() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.asked
	g.asked = nil
	return a
}

// signRaw is raw signed by s as a transport writes it: the signature the
// header section's last line, over every other byte.
func signRaw(t *testing.T, s *nodes.Signer, raw string) string {
	t.Helper()
	end := strings.Index(raw, "\r\n\r\n")
	if end < 0 {
		t.Fatalf("no header section: %q", raw)
	}
	head, rest := raw[:end+2], raw[end+2:]
	return head + nodes.Header + ": " + s.Sign([]byte(head), []byte(rest)) + "\r\n" + rest
}

// A message from another node's address is vouched for by its signature
// alone: signed, the gate is told so and the message keeps the header;
// unsigned, or with a signature that does not hold, it is screened as
// anyone's (here rejected) and never handed up. A node's signature from
// any other address is nothing, and is removed. What the transport
// writes to a node is signed (the answer verifies at that node), and
// nothing it writes elsewhere carries a signature.
func TestNodeSignatures(t *testing.T) {
	secret := []byte("shared-secret-0123456789")
	self := nodes.Address{Transport: "UDP", Addr: netip.MustParseAddrPort("127.0.0.1:5060")}
	peer := nodes.Address{Transport: "UDP", Addr: netip.MustParseAddrPort("127.0.0.2:5060")}
	peers := []nodes.Address{self, peer}
	b := nodes.NewSigner(secret, peer, peers)
	g := &vouchGate{}
	f := start(t, func(o *Options) { o.Gate = g; o.Signer = nodes.NewSigner(secret, self, peers) })
	from := func(ip string) *net.UDPConn {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(f.udp)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	read := func(c *net.UDPConn) string {
		t.Helper()
		buf := make([]byte, 4096)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		return string(buf[:n])
	}
	handed := func() *sip.Request {
		t.Helper()
		select {
		case <-f.h.got:
		case <-time.After(2 * time.Second):
			t.Fatal("not handed up")
		}
		f.h.mu.Lock()
		defer f.h.mu.Unlock()
		return f.h.requests[len(f.h.requests)-1]
	}
	udp := func(raw string) string { return strings.Replace(raw, "SIP/2.0/TCP", "SIP/2.0/UDP", 1) }
	node, phone := from("127.0.0.2"), from("127.0.0.3")

	// Signed, from node b's address.
	_, _ = node.Write([]byte(signRaw(t, b, udp(request("signed", "127.0.0.2:5060")))))
	if req := handed(); req.GetHeader(nodes.Header) == nil {
		t.Fatal("a node's signed request lost its signature")
	}
	if got := g.take(); len(got) != 1 || got[0] != "127.0.0.2 vouched" {
		t.Fatalf("gate asked %v, want 127.0.0.2 vouched", got)
	}
	answer := read(node)
	res, err := sip.NewParser().ParseSIP([]byte(answer))
	if err != nil {
		t.Fatal(err)
	}
	b2 := nodes.NewSigner(secret, peer, peers) // node b checking what it got
	if !strings.HasPrefix(answer, "SIP/2.0 200 OK") || !b2.Verify([]byte(answer)) || len(res.GetHeaders(nodes.Header)) != 1 {
		t.Fatalf("the answer to node b is not signed for it:\n%s", answer)
	}

	// Unsigned, a forged signature, a signature for another message: all
	// from node b's address, none is node b's.
	forged := strings.Replace(udp(request("forged", "127.0.0.2:5060")), "Content-Length", nodes.Header+": t=1;mac=aaaa\r\nContent-Length", 1)
	other := signRaw(t, b, udp(request("other", "127.0.0.2:5060")))
	for name, raw := range map[string]string{
		"unsigned":                    udp(request("unsigned", "127.0.0.2:5060")),
		"forged":                      forged,
		"another message's signature": strings.Replace(other, "Call-ID: other@test", "Call-ID: moved@test", 1),
	} {
		_, _ = node.Write([]byte(raw))
		if got := read(node); !strings.HasPrefix(got, "SIP/2.0 503 Service Unavailable") {
			t.Fatalf("%s from node b's address: answered %q, want the gate's 503", name, got)
		}
		if got := g.take(); len(got) != 1 || got[0] != "127.0.0.2 not" {
			t.Fatalf("%s: gate asked %v, want 127.0.0.2 not", name, got)
		}
	}
	// Garbage from node b's address carries no signature: screened (and
	// kept out) before it would be refused with a 400.
	_, _ = node.Write([]byte("INVITE garbage\r\n\r\n"))
	_, _ = node.Write([]byte(signRaw(t, b, udp(request("after", "127.0.0.2:5060")))))
	if req := handed(); req.CallID().Value() != "after@test" {
		t.Fatalf("handed up %s, want the signed request", req.CallID().Value())
	}
	if got := read(node); !strings.HasPrefix(got, "SIP/2.0 200 OK") {
		t.Fatalf("after garbage from node b's address, the first answer is %q", got)
	}
	if got := g.take(); len(got) != 2 || got[0] != "127.0.0.2 not" || got[1] != "127.0.0.2 vouched" {
		t.Fatalf("gate asked %v, want the garbage not vouched for, the signed request vouched", got)
	}

	// A signed request's bytes sent again from node b's address: over UDP
	// (after its transaction ended, or as a copy of a retransmission) and
	// over TCP, its signature is a replay, and it is screened as anyone's.
	// Its retransmission, which node b's transport signs again, is node
	// b's. Its Request-URI changed, it is anyone's.
	once := udp(request("replayed", "127.0.0.2:5060"))
	replayed := signRaw(t, b, once)
	_, _ = node.Write([]byte(replayed))
	if req := handed(); req.CallID().Value() != "replayed@test" || req.GetHeader(nodes.Header) == nil {
		t.Fatalf("handed up %s, want the signed request, signed", req.CallID().Value())
	}
	if got := read(node); !strings.HasPrefix(got, "SIP/2.0 200 OK") {
		t.Fatalf("a node's signed request: answered %q", got)
	}
	_, _ = node.Write([]byte(replayed))
	if got := read(node); !strings.HasPrefix(got, "SIP/2.0 503 Service Unavailable") {
		t.Fatalf("a replayed signed request from node b's address: answered %q, want the gate's 503", got)
	}
	tcp, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(f.tcp)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	_, _ = tcp.Write([]byte(replayed))
	_ = tcp.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	if n, err := tcp.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 503 Service Unavailable") {
		t.Fatalf("the replay over TCP from node b's address: answered %q (%v), want the gate's 503", buf[:n], err)
	}
	_, _ = node.Write([]byte(signRaw(t, b, once))) // a retransmission, signed again
	if got := read(node); !strings.HasPrefix(got, "SIP/2.0 200 OK") {
		t.Fatalf("a node's retransmission, signed again: answered %q", got)
	}
	_ = handed()
	moved := signRaw(t, b, udp(request("moved-uri", "127.0.0.2:5060")))
	_, _ = node.Write([]byte(strings.Replace(moved, "OPTIONS sip:sori.test", "OPTIONS sip:bob@203.0.113.9", 1)))
	if got := read(node); !strings.HasPrefix(got, "SIP/2.0 503 Service Unavailable") {
		t.Fatalf("a signed request with another Request-URI: answered %q, want the gate's 503", got)
	}
	if got := g.take(); strings.Join(got, ",") != "127.0.0.2 vouched,127.0.0.2 not,127.0.0.2 not,127.0.0.2 vouched,127.0.0.2 not" {
		t.Fatalf("gate asked %v, want the request vouched, its replays over UDP and TCP not, its retransmission vouched, the moved one not", got)
	}

	// What the transport writes to node b again (a retransmission) is
	// signed again: each copy is node b's, once.
	toB, err := f.tp.Conn(t.Context(), "UDP", node.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	out, err := sip.NewParser().ParseSIP([]byte(udp(request("resent", "127.0.0.1:5060"))))
	if err != nil {
		t.Fatal(err)
	}
	var sigs []string
	for range 2 {
		if err := toB.WriteMsg(out); err != nil {
			t.Fatal(err)
		}
		got := read(node)
		if !b2.Verify([]byte(got)) {
			t.Fatalf("a retransmission to node b is not signed for it:\n%s", got)
		}
		m, err := sip.NewParser().ParseSIP([]byte(got))
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, m.GetHeaders(nodes.Header)[0].Value())
	}
	if sigs[0] == sigs[1] {
		t.Fatalf("the transport signed a retransmission with the same signature: %s", sigs[0])
	}

	// Node b's signature from a phone's address: the phone is screened
	// before anything is read, and the header is gone.
	_, _ = phone.Write([]byte(signRaw(t, b, udp(request("copied", "127.0.0.3:5060")))))
	if req := handed(); req.GetHeader(nodes.Header) != nil {
		t.Fatal("a signature from a phone's address reached the handler")
	}
	if got := g.take(); len(got) != 1 || got[0] != "127.0.0.3 not" {
		t.Fatalf("gate asked %v, want 127.0.0.3 not", got)
	}
	if got := read(phone); !strings.HasPrefix(got, "SIP/2.0 200 OK") || strings.Contains(got, nodes.Header) {
		t.Fatalf("answer to the phone:\n%s", got)
	}

	// A node's signed message written on to a phone does not take the
	// signature along.
	c, err := f.tp.Conn(t.Context(), "UDP", phone.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	signed, err := sip.NewParser().ParseSIP([]byte(signRaw(t, b, udp(request("onward", "127.0.0.1:5060")))))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMsg(signed); err != nil {
		t.Fatal(err)
	}
	if got := read(phone); strings.Contains(got, nodes.Header) || !strings.HasPrefix(got, "OPTIONS sip:sori.test") {
		t.Fatalf("written to a phone:\n%s", got)
	}
}
