package transaction

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/gopool"
)

// peer is a transport.Conn that records what is written to it.
type peer struct {
	written chan sip.Message
	held    atomic.Int32 // holds not released
}

func newPeer() *peer { return &peer{written: make(chan sip.Message, 32)} }

func (p *peer) LocalAddr() net.Addr          { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060} }
func (p *peer) WriteMsg(m sip.Message) error { p.written <- m; return nil }
func (p *peer) Ref(int) int                  { return 1 }
func (p *peer) TryClose() (int, error)       { return 1, nil }
func (p *peer) Close() error                 { return nil }
func (p *peer) Transport() string            { return "UDP" }
func (p *peer) Remote() netip.AddrPort       { return netip.MustParseAddrPort("127.0.0.1:5099") }
func (p *peer) Write([]byte) error           { return nil }
func (p *peer) Hold() func() {
	p.held.Add(1)
	var once sync.Once
	return func() { once.Do(func() { p.held.Add(-1) }) }
}

func (p *peer) next(t *testing.T) sip.Message {
	t.Helper()
	select {
	case m := <-p.written:
		return m
	case <-time.After(2 * time.Second):
		t.Fatal("nothing written")
		return nil
	}
}

// user records what the layer hands up.
type user struct {
	requests chan delivered
	strays   chan *sip.Response
}

type delivered struct {
	req *sip.Request
	tx  *sip.ServerTx
}

func newUser() *user {
	return &user{requests: make(chan delivered, 32), strays: make(chan *sip.Response, 32)}
}

func (u *user) Request(req *sip.Request, tx *sip.ServerTx) { u.requests <- delivered{req, tx} }
func (u *user) Stray(res *sip.Response)                    { u.strays <- res }

func (u *user) next(t *testing.T) delivered {
	t.Helper()
	select {
	case d := <-u.requests:
		return d
	case <-time.After(2 * time.Second):
		t.Fatal("no request handed up")
		return delivered{}
	}
}

func (u *user) none(t *testing.T) {
	t.Helper()
	select {
	case d := <-u.requests:
		t.Fatalf("unexpected request handed up: %s", d.req.StartLine())
	case <-time.After(100 * time.Millisecond):
	}
}

func parse(t *testing.T, lines ...string) *sip.Request {
	t.Helper()
	m, err := sip.ParseMessage([]byte(strings.Join(lines, "\r\n") + "\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	req := m.(*sip.Request)
	req.SetTransport("UDP")
	req.SetSource("127.0.0.1:5099")
	return req
}

func req(t *testing.T, method, branch, cseq string, extra ...string) *sip.Request {
	t.Helper()
	lines := []string{
		method + " sip:bob@sori.test SIP/2.0",
		"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=" + branch,
		"Max-Forwards: 70",
		"From: <sip:alice@sori.test>;tag=a1",
		"To: <sip:bob@sori.test>",
		"Call-ID: tx-test@sori",
		"CSeq: " + cseq,
	}
	return parse(t, append(append(lines, extra...), "Content-Length: 0")...)
}

func newLayer() (*Layer, *user) {
	u := newUser()
	return New(u, gopool.New(4, 16, time.Second), slog.New(slog.NewTextHandler(io.Discard, nil))), u
}

func TestRetransmissionGetsTheSameAnswer(t *testing.T) {
	l, u := newLayer()
	defer l.Close()
	p := newPeer()
	l.Request(req(t, "OPTIONS", "z9hG4bK-r1", "1 OPTIONS"), p)
	d := u.next(t)
	if d.tx == nil {
		t.Fatal("no transaction")
	}
	if err := d.tx.Respond(sip.NewResponseFromRequest(d.req, 200, "OK", nil)); err != nil {
		t.Fatal(err)
	}
	if res := p.next(t).(*sip.Response); res.StatusCode != 200 {
		t.Fatal(res.StatusCode)
	}
	l.Request(req(t, "OPTIONS", "z9hG4bK-r1", "1 OPTIONS"), p) // the client did not get it
	if res := p.next(t).(*sip.Response); res.StatusCode != 200 {
		t.Fatalf("retransmission answered %d", res.StatusCode)
	}
	u.none(t)
}

// RFC 3261 §17.2.3: a request matches a transaction by its own method. A
// request reusing an INVITE's branch with another method is a transaction
// of its own, whatever its CSeq says.
func TestMatchingUsesTheRequestMethod(t *testing.T) {
	l, u := newLayer()
	defer l.Close()
	p := newPeer()
	l.Request(req(t, "INVITE", "z9hG4bK-m1", "1 INVITE"), p)
	inv := u.next(t)
	l.Request(req(t, "OPTIONS", "z9hG4bK-m1", "1 INVITE"), p)
	opt := u.next(t)
	if opt.tx == nil || opt.tx == inv.tx || opt.req.Method != sip.OPTIONS {
		t.Fatalf("OPTIONS matched the INVITE transaction")
	}
}

func TestCancel(t *testing.T) {
	l, u := newLayer()
	defer l.Close()
	p := newPeer()
	l.Request(req(t, "INVITE", "z9hG4bK-c1", "1 INVITE"), p)
	inv := u.next(t)
	cancelled := make(chan struct{})
	inv.tx.OnCancel(func(*sip.Request) { close(cancelled) })
	l.Request(req(t, "CANCEL", "z9hG4bK-c1", "1 CANCEL"), p)
	first := p.next(t).(*sip.Response)
	if first.StatusCode != 200 || first.CSeq().MethodName != sip.CANCEL {
		t.Fatalf("first answer %d %s, want 200 to the CANCEL", first.StatusCode, first.CSeq().MethodName)
	}
	second := p.next(t).(*sip.Response)
	if second.StatusCode != 487 || second.CSeq().MethodName != sip.INVITE {
		t.Fatalf("second answer %d %s, want 487 to the INVITE", second.StatusCode, second.CSeq().MethodName)
	}
	select {
	case <-cancelled:
	case <-time.After(time.Second):
		t.Fatal("the INVITE's handler was not told")
	}
	u.none(t)

	// A CANCEL that matches nothing goes up as its own transaction.
	l.Request(req(t, "CANCEL", "z9hG4bK-nothing", "1 CANCEL"), p)
	if d := u.next(t); d.req.Method != sip.CANCEL || d.tx == nil {
		t.Fatalf("unmatched CANCEL: %v", d)
	}
}

func TestAcks(t *testing.T) {
	l, u := newLayer()
	defer l.Close()
	p := newPeer()
	l.Request(req(t, "INVITE", "z9hG4bK-a1", "1 INVITE"), p)
	inv := u.next(t)
	if err := inv.tx.Respond(sip.NewResponseFromRequest(inv.req, 486, "Busy Here", nil)); err != nil {
		t.Fatal(err)
	}
	p.next(t)
	// The ACK of a non-2xx final response ends in its transaction.
	l.Request(req(t, "ACK", "z9hG4bK-a1", "1 ACK"), p)
	u.none(t)
	// The ACK of a 2xx is a request of its own, with no transaction.
	l.Request(req(t, "ACK", "z9hG4bK-a2", "1 ACK"), p)
	if d := u.next(t); d.req.Method != sip.ACK || d.tx != nil {
		t.Fatalf("2xx ACK: %+v", d)
	}
}

// RFC 2543 peers send no magic cookie: their retransmissions still match.
func TestRFC2543Matching(t *testing.T) {
	l, u := newLayer()
	defer l.Close()
	p := newPeer()
	old := func(method, cseq string) *sip.Request {
		return parse(t, method+" sip:bob@sori.test SIP/2.0", "Via: SIP/2.0/UDP 127.0.0.1:5099",
			"From: <sip:alice@sori.test>;tag=a1", "To: <sip:bob@sori.test>", "Call-ID: old@sori", "CSeq: "+cseq, "Content-Length: 0")
	}
	l.Request(old("INVITE", "7 INVITE"), p)
	inv := u.next(t)
	l.Request(old("INVITE", "7 INVITE"), p)
	u.none(t)
	_ = inv.tx.Respond(sip.NewResponseFromRequest(inv.req, 404, "Not Found", nil))
	p.next(t)
	l.Request(old("ACK", "7 ACK"), p) // absorbed by the INVITE's transaction
	u.none(t)
	l.Request(old("INVITE", "8 INVITE"), p) // a new CSeq: a new transaction
	if d := u.next(t); d.tx == nil || d.tx == inv.tx {
		t.Fatal("new request matched the old transaction")
	}
}

// A stream connection is held from the moment a request is handed in
// until its server transaction ends.
func TestServerTransactionHoldsItsConnection(t *testing.T) {
	l, u := newLayer()
	defer l.Close()
	p := newPeer()
	l.Request(req(t, "MESSAGE", "z9hG4bK-h1", "1 MESSAGE"), p)
	if p.held.Load() == 0 {
		t.Fatal("not held when Request returned")
	}
	d := u.next(t)
	if p.held.Load() == 0 {
		t.Fatal("not held while the transaction lives")
	}
	d.tx.Terminate()
	deadline := time.Now().Add(time.Second)
	for p.held.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d holds left after the transaction ended", p.held.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClientTransactions(t *testing.T) {
	l, u := newLayer()
	defer l.Close()
	p := newPeer()
	out := req(t, "OPTIONS", "z9hG4bK-out1", "5 OPTIONS")
	tx, err := l.Send(context.Background(), out, p)
	if err != nil {
		t.Fatal(err)
	}
	if m := p.next(t).(*sip.Request); m.Method != sip.OPTIONS {
		t.Fatal(m.StartLine())
	}
	if _, err := l.Send(context.Background(), out, p); err == nil {
		t.Fatal("a second transaction with the same branch")
	}
	// A response to another branch, or to the same branch with another
	// method, is a stray.
	for _, other := range []*sip.Request{req(t, "OPTIONS", "z9hG4bK-elsewhere", "5 OPTIONS"), req(t, "INFO", "z9hG4bK-out1", "5 INFO")} {
		l.Response(sip.NewResponseFromRequest(other, 200, "OK", nil), p)
		select {
		case <-u.strays:
		case <-time.After(time.Second):
			t.Fatalf("%s: not a stray", other.CSeq())
		}
	}
	l.Response(sip.NewResponseFromRequest(out, 200, "OK", nil), p)
	select {
	case res := <-tx.Responses():
		if res.StatusCode != 200 {
			t.Fatal(res.StatusCode)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("response not delivered")
	}
	if _, c := l.Counts(); c > 1 {
		t.Fatalf("%d client transactions", c)
	}
}
