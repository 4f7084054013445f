package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// recorder is a Handler that answers every request after a delay, from
// its own goroutine, as the transaction layer would.
type recorder struct {
	mu        sync.Mutex
	requests  []*sip.Request
	responses []*sip.Response
	delay     time.Duration
	got       chan struct{}
}

func (r *recorder) Request(req *sip.Request, c Conn) {
	r.mu.Lock()
	r.requests = append(r.requests, req)
	r.mu.Unlock()
	release := c.Hold()
	go func() {
		defer release()
		time.Sleep(r.delay)
		_ = c.WriteMsg(sip.NewResponseFromRequest(req, 200, "OK", nil))
	}()
	r.got <- struct{}{}
}

func (r *recorder) Response(res *sip.Response, _ Conn) {
	r.mu.Lock()
	r.responses = append(r.responses, res)
	r.mu.Unlock()
	r.got <- struct{}{}
}

type fixture struct {
	tp      *Transport
	h       *recorder
	reg     *prometheus.Registry
	udp     string
	tcp     string
	dialled chan string
}

func start(t *testing.T, mutate func(*Options)) *fixture {
	t.Helper()
	f := &fixture{h: &recorder{got: make(chan struct{}, 64)}, reg: prometheus.NewRegistry(), dialled: make(chan string, 8)}
	o := Options{
		Listeners: []Listener{
			{Transport: "udp", Addr: netip.MustParseAddrPort("127.0.0.1:0")},
			{Transport: "tcp", Addr: netip.MustParseAddrPort("127.0.0.1:0")},
		},
		Handler: f.h, Server: "Sori/test", RetryAfter: 7,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: f.reg,
		// Any dial is recorded, and refused: these tests never ask for one.
		Dial: func(_ context.Context, network, addr string) (net.Conn, error) {
			f.dialled <- network + ":" + addr
			return nil, errors.New("dial refused by the test")
		},
	}
	if mutate != nil {
		mutate(&o)
	}
	f.tp = New(o)
	if err := f.tp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.tp.Close() })
	ap, _ := f.tp.Local("udp")
	f.udp = ap.String()
	ap, _ = f.tp.Local("tcp")
	f.tcp = ap.String()
	return f
}

func (f *fixture) noDial(t *testing.T) {
	t.Helper()
	select {
	case d := <-f.dialled:
		t.Fatalf("the transport dialled %s", d)
	default:
	}
}

// request builds an OPTIONS whose Via names somewhere else than its source:
// an unreachable documentation address, or a name.
func request(branch, viaHost string) string {
	return "OPTIONS sip:sori.test SIP/2.0\r\n" +
		"Via: SIP/2.0/TCP " + viaHost + ";branch=z9hG4bK" + branch + "\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:a@sori.test>;tag=1\r\nTo: <sip:sori.test>\r\n" +
		"Call-ID: " + branch + "@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
}

func readResponses(t *testing.T, r *bufio.Reader, n int) []*sip.Response {
	t.Helper()
	var out []*sip.Response
	for len(out) < n {
		msg, err := readMessage(r)
		if err != nil {
			t.Fatalf("after %d responses: %v", len(out), err)
		}
		res, ok := msg.(*sip.Response)
		if !ok {
			t.Fatalf("not a response: %v", msg)
		}
		out = append(out, res)
	}
	return out
}

// readMessage reads one message framed by Content-Length from a stream.
func readMessage(r *bufio.Reader) (sip.Message, error) {
	var head strings.Builder
	cl := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
		if name, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(name), "Content-Length") {
			_, _ = fmt.Sscanf(strings.TrimSpace(v), "%d", &cl)
		}
	}
	body := make([]byte, cl)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return sip.ParseMessage([]byte(head.String() + string(body)))
}

// A peer that sends two requests, then bytes that cannot be framed, and
// stops sending, still gets both answers on its connection, and the
// framing error its own answer when it can have one; then the connection
// is closed. Nothing is dialled towards the Vias' hosts.
func TestStreamAnswersWhatWasReadBeforeClosing(t *testing.T) {
	for _, c := range []struct {
		name, trailer string
		refused       int // answers to the trailer
	}{
		{"junk", "GARBAGE WITHOUT FRAMING\r\n\r\n", 0},
		{"bad Content-Length", strings.Replace(request("three", "192.0.2.10"), "Content-Length: 0", "Content-Length: -5", 1), 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := start(t, nil)
			f.h.delay = 150 * time.Millisecond // answers come after the peer stopped sending
			conn, err := net.Dial("tcp", f.tcp)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			payload := request("one", "192.0.2.10:5060") + request("two", "attacker.invalid:5060") + c.trailer
			if _, err := conn.Write([]byte(payload)); err != nil {
				t.Fatal(err)
			}
			_ = conn.(*net.TCPConn).CloseWrite()
			r := bufio.NewReader(conn)
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			codes := map[int]int{}
			for _, x := range readResponses(t, r, 2+c.refused) {
				codes[x.StatusCode]++
			}
			if codes[200] != 2 || codes[400] != c.refused {
				t.Fatalf("answers %v", codes)
			}
			if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
				t.Fatalf("connection not closed after the answers: %v", err)
			}
			f.noDial(t)
		})
	}
}

// A TCP peer that is gone when its answer is ready costs nothing: the
// answer is dropped, and no connection is opened to the Via's sent-by.
func TestStreamNeverDialsForAResponse(t *testing.T) {
	f := start(t, nil)
	f.h.delay = 100 * time.Millisecond
	c, err := net.Dial("tcp", f.tcp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(request("gone", "127.0.0.9:5099"))); err != nil {
		t.Fatal(err)
	}
	<-f.h.got
	_ = c.(*net.TCPConn).SetLinger(0)
	c.Close() // reset: the answer cannot be written
	time.Sleep(300 * time.Millisecond)
	f.noDial(t)
}

// UDP answers go to the datagram's source, whatever the Via says.
func TestDatagramAnswersGoToTheSource(t *testing.T) {
	f := start(t, nil)
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := strings.Replace(request("udp1", "192.0.2.10:5060"), "SIP/2.0/TCP", "SIP/2.0/UDP", 1)
	dst, _ := net.ResolveUDPAddr("udp", f.udp)
	if _, err := c.WriteTo([]byte(msg), dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
		t.Fatalf("got %q", buf[:n])
	}
	f.h.mu.Lock()
	src := f.h.requests[0].Source()
	f.h.mu.Unlock()
	if src != c.LocalAddr().String() {
		t.Fatalf("source %s, want %s", src, c.LocalAddr())
	}
}

// A message that fails the checks is answered by the transport, never
// reaches the handler, and is counted.
func TestRefusedMessagesAreAnsweredAndCounted(t *testing.T) {
	f := start(t, nil)
	c, err := net.Dial("udp", f.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Content-Length larger than the datagram: sipgo refuses to parse it.
	bad := strings.Replace(request("bad1", "192.0.2.10"), "Content-Length: 0", "Content-Length: 999", 1)
	bad = strings.Replace(bad, "SIP/2.0/TCP", "SIP/2.0/UDP", 1)
	if _, err := c.Write([]byte(bad)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	res, err := sip.ParseMessage(buf[:n])
	if err != nil || res.(*sip.Response).StatusCode != 400 {
		t.Fatalf("answer %q (%v)", buf[:n], err)
	}
	if got := testutil.ToFloat64(f.tp.bad.counter.WithLabelValues("UDP", "400")); got != 1 {
		t.Fatalf("counted %v", got)
	}
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	if len(f.h.requests) != 0 {
		t.Fatal("the handler saw a refused message")
	}
}

func TestKeepalives(t *testing.T) {
	f := start(t, nil)
	// UDP: a CRLF datagram is absorbed, not answered, not counted as bad.
	u, err := net.Dial("udp", f.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_, _ = u.Write([]byte("\r\n\r\n"))
	// TCP: a double CRLF gets a CRLF (RFC 5626 §4.4.1), split across writes too.
	c, err := net.Dial("tcp", f.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, part := range []string{"\r\n", "\r\n"} {
		_, _ = c.Write([]byte(part))
		time.Sleep(20 * time.Millisecond)
	}
	buf := make([]byte, 16)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "\r\n" {
		t.Fatalf("pong %q %v", buf[:n], err)
	}
	// The connection still carries messages.
	_, _ = c.Write([]byte(request("after-ping", "192.0.2.1")))
	res := readResponses(t, bufio.NewReader(c), 1)
	if res[0].StatusCode != 200 {
		t.Fatal(res[0].StatusCode)
	}
	if got := testutil.CollectAndCount(f.tp.bad.counter); got != 0 {
		t.Fatalf("%d bad-message series after keepalives", got)
	}
}

// A connection holding half a message and then nothing is closed after the
// stall timeout; an idle one after the idle timeout.
func TestStalledAndIdleStreamsAreClosed(t *testing.T) {
	f := start(t, func(o *Options) { o.StallTimeout = 200 * time.Millisecond; o.IdleTimeout = 400 * time.Millisecond })
	for _, c := range []struct {
		name, send string
		within     time.Duration
	}{
		{"stalled", "INVITE sip:a@sori.test SIP/2.0\r\nVia: SIP/2.0/TCP x", time.Second},
		{"idle", "", 2 * time.Second},
	} {
		conn, err := net.Dial("tcp", f.tcp)
		if err != nil {
			t.Fatal(err)
		}
		if c.send != "" {
			_, _ = conn.Write([]byte(c.send))
		}
		_ = conn.SetReadDeadline(time.Now().Add(c.within))
		if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("%s: %v, want the server to close", c.name, err)
		}
		conn.Close()
	}
}

func TestConnRefusesNames(t *testing.T) {
	f := start(t, nil)
	for _, dest := range []string{"attacker.invalid:5060", "localhost:5060", "sori.test", "[::1]"} {
		for _, tr := range []string{"UDP", "TCP"} {
			if _, err := f.tp.Conn(context.Background(), tr, dest); !errors.Is(err, ErrNotAddress) {
				t.Errorf("%s %s: %v, want ErrNotAddress", tr, dest, err)
			}
		}
	}
	f.noDial(t)
}

type gate Verdict

func (g gate) Admit(netip.Addr, bool, time.Time) Verdict { return Verdict(g) }

func TestGate(t *testing.T) {
	for _, c := range []struct {
		v    Verdict
		want string // first line of the answer; "" for none
	}{
		{Pass, "SIP/2.0 200 OK"},
		{Reject, "SIP/2.0 503 Service Unavailable"},
		{Drop, ""},
	} {
		f := start(t, func(o *Options) { o.Gate = gate(c.v) })
		u, err := net.Dial("udp", f.udp)
		if err != nil {
			t.Fatal(err)
		}
		msg := strings.Replace(request("gate", "192.0.2.1"), "SIP/2.0/TCP", "SIP/2.0/UDP", 1)
		_, _ = u.Write([]byte(msg))
		buf := make([]byte, 4096)
		_ = u.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _ := u.Read(buf)
		got := string(buf[:n])
		first, _, _ := strings.Cut(got, "\r\n")
		if first != c.want {
			t.Errorf("verdict %d: answer %q, want %q", c.v, first, c.want)
		}
		if c.v == Reject && !strings.Contains(got, "\r\nRetry-After: 7\r\n") {
			t.Errorf("503 without Retry-After: %q", got)
		}
		u.Close()
	}
}

// What sipgo's parser refuses though RFC 3261 allows it reaches the
// handler: bare LF line ends, an addr-spec after ", " in a Contact list, a
// Contact URI scheme with '.' in it.
func TestParsesWhatSipgoRefuses(t *testing.T) {
	base := strings.Replace(request("lenient", "192.0.2.1"), "SIP/2.0/TCP", "SIP/2.0/UDP", 1)
	for _, c := range []struct {
		name, msg string
		check     func(*sip.Request) error
	}{
		{"bare LF", strings.ReplaceAll(base, "\r\n", "\n"), nil},
		{"Contact list with an addr-spec after a space", strings.Replace(base, "Content-Length", "Contact: <sip:a@192.0.2.1>, sip:b@192.0.2.2;q=0.5\r\nContent-Length", 1),
			func(r *sip.Request) error {
				if n := len(r.GetHeaders("Contact")); n != 2 {
					return fmt.Errorf("%d Contacts", n)
				}
				return nil
			}},
		{"Contact scheme with a dot", strings.Replace(base, "Content-Length", "Contact: <soap.beep://192.0.2.10:3002>\r\nContent-Length", 1),
			func(r *sip.Request) error {
				if h := r.GetHeader("Contact"); h == nil || h.Value() != "<soap.beep://192.0.2.10:3002>" {
					return fmt.Errorf("Contact %v", h)
				}
				return nil
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := start(t, nil)
			u, err := net.Dial("udp", f.udp)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			_, _ = u.Write([]byte(c.msg))
			select {
			case <-f.h.got:
			case <-time.After(2 * time.Second):
				t.Fatal("not handed up")
			}
			f.h.mu.Lock()
			req := f.h.requests[0]
			f.h.mu.Unlock()
			if c.check != nil {
				if err := c.check(req); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// A STUN binding request on the UDP SIP port (RFC 5626 §4.4.2) gets a
// binding success naming where it came from; other STUN messages, and
// requests from a source the gate keeps out, get nothing; SIP goes on.
func TestSTUNKeepalives(t *testing.T) {
	for _, v := range []Verdict{Pass, Drop} {
		f := start(t, func(o *Options) { o.Gate = gate(v) })
		u, err := net.Dial("udp", f.udp)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		indication := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication))
		_, _ = u.Write(indication.Raw) // not answered
		_, _ = u.Write(req.Raw)
		buf := make([]byte, 1500)
		_ = u.SetReadDeadline(time.Now().Add(time.Second))
		n, err := u.Read(buf)
		if v == Drop {
			if err == nil {
				t.Fatalf("a source the gate drops got %d bytes", n)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		res := &stun.Message{Raw: buf[:n]}
		if err := res.Decode(); err != nil || res.Type != stun.BindingSuccess || res.TransactionID != req.TransactionID {
			t.Fatalf("answer %v %v", res, err)
		}
		var mapped stun.XORMappedAddress
		if err := mapped.GetFrom(res); err != nil || mapped.String() != u.LocalAddr().String() {
			t.Fatalf("XOR-MAPPED-ADDRESS %v (%v), want %s", mapped, err, u.LocalAddr())
		}
		if err := stun.Fingerprint.Check(res); err != nil {
			t.Fatal(err)
		}
		msg := strings.Replace(request("after-stun", "192.0.2.1"), "SIP/2.0/TCP", "SIP/2.0/UDP", 1)
		_, _ = u.Write([]byte(msg))
		n, err = u.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 OK") {
			t.Fatalf("SIP after STUN: %q %v", buf[:n], err)
		}
		if got := testutil.CollectAndCount(f.tp.bad.counter); got != 0 {
			t.Fatalf("%d bad-message series after STUN", got)
		}
	}
}

// A request marked ExistingOnly (to a phone's flow) uses an open
// connection, and never dials when there is none.
func TestExistingOnlyNeverDials(t *testing.T) {
	f := start(t, nil)
	c, err := net.Dial("tcp", f.tcp)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte(request("flow", "192.0.2.1")))
	readResponses(t, bufio.NewReader(c), 1)
	remote := c.LocalAddr().String()
	ctx := ExistingOnly(context.Background())
	if conn, err := f.tp.Conn(ctx, "TCP", remote); err != nil || conn.Remote().String() != remote {
		t.Fatalf("the open connection: %v %v", conn, err)
	}
	c.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		_, err := f.tp.Conn(ctx, "TCP", remote)
		if errors.Is(err, ErrFlowClosed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the close: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, tr := range []string{"TCP", "TLS", "WS", "WSS"} {
		if _, err := f.tp.Conn(ctx, tr, "192.0.2.7:5060"); !errors.Is(err, ErrFlowClosed) {
			t.Errorf("%s to a flow never opened: %v", tr, err)
		}
	}
	f.noDial(t)
}
