package main

// End-to-end harness: builds the sori binary once, starts real sori,
// redis-server and sipp processes on 127.0.0.1, and talks SIP to them over
// real sockets. The tests using it are in e2e_*_test.go.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	client "github.com/icholy/digest"

	"github.com/sori-voice/sori/sip/calls"
)

// raceEnabled is set by race_test.go so the binary under test is built the same way.
var raceEnabled bool

type build struct {
	once sync.Once
	path string
	err  error
}

var builds sync.Map // package dir -> *build

// buildBinary builds the command in dir (relative to cmd/sori) once per
// test run, with the race detector when the tests have it.
func buildBinary(t *testing.T, dir, name string) string {
	t.Helper()
	v, _ := builds.LoadOrStore(dir, &build{})
	b := v.(*build)
	b.once.Do(func() {
		tmp, err := os.MkdirTemp("", "sori-e2e-bin")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(tmp, name)
		args := []string{"build", "-o", b.path}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, dir)...).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", dir, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func binary(t *testing.T) string { return buildBinary(t, ".", "sori") }

// freeSIPPort returns a port free for both UDP and TCP on 127.0.0.1. Ports
// come from 20000-31999, below the kernel's ephemeral range (32768+), and
// none is handed out twice in one test run: a port from ":0" can be given
// by the kernel to another socket between our check and the process that
// binds it, which made parallel tests collide.
func freeSIPPort(t *testing.T) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	if nextPort == 0 {
		nextPort = portLo + os.Getpid()*37%(portHi-portLo)
	}
	for range portHi - portLo {
		port := nextPort
		nextPort++
		if nextPort >= portHi {
			nextPort = portLo
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

const portLo, portHi = 20000, 32000

var (
	portMu   sync.Mutex
	nextPort int
)

// node is one running sori process.
type node struct {
	t       *testing.T
	cmd     *exec.Cmd
	port    int
	http    string
	cfgPath string
	logs    *bytes.Buffer
	mu      *sync.Mutex
	exited  chan struct{}
}

func (n *node) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// nodeConfig fills the parts of a config every test needs.
type nodeConfig struct {
	store string   // "memory" or a redis URL
	extra string   // more YAML appended verbatim (e.g. users:)
	sip   string   // more keys under sip:, indented two spaces
	port  int      // 0: pick one
	env   []string // extra environment, e.g. GODEBUG
}

func startNode(t *testing.T, c nodeConfig) *node {
	t.Helper()
	if c.store == "" {
		c.store = "memory"
	}
	return withFreshPorts(t, func() (*node, error) {
		port := c.port
		if port == 0 {
			port = freeSIPPort(t)
		}
		httpAddr := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
		cfg := fmt.Sprintf(`sip:
  domain: sori.test
  listen: ["udp:127.0.0.1:%d", "tcp:127.0.0.1:%d"]
  auth_secret: e2e-shared-secret-0123456789
%sregistrar:
  store: %q
  min_expires: 60
  max_expires: 3600
  default_expires: 3600
  store_timeout: 300ms
  retry_after: 5
http:
  listen: %s
log:
  level: info
%s`, port, port, c.sip, c.store, httpAddr, c.extra)
		if !strings.Contains(c.extra, "users:") {
			cfg += "users:\n  - {name: alice, password: alice-secret}\n  - {name: bob, password: bob-secret}\n"
		}
		return launchNode(t, cfg, port, httpAddr, c.env...)
	})
}

// errPortTaken is sori failing to bind a port freeSIPPort found free: a
// process elsewhere on the machine (another package's tests run at the
// same time) took it in between.
var errPortTaken = errors.New("a port picked for sori was taken before it bound it")

// withFreshPorts runs start, which picks its ports and launches sori,
// again with new ports while sori finds one of them taken (three tries).
func withFreshPorts[T any](t *testing.T, start func() (T, error)) T {
	t.Helper()
	for try := 1; ; try++ {
		v, err := start()
		if err == nil {
			return v
		}
		if !errors.Is(err, errPortTaken) || try == 3 {
			t.Fatal(err)
		}
		t.Logf("try %d: %v; again on other ports", try, err)
	}
}

// runNode starts sori on the configuration cfg, which listens for SIP on
// port and serves /healthz on httpAddr; env is added to its environment.
func runNode(t *testing.T, cfg string, port int, httpAddr string, env ...string) *node {
	t.Helper()
	n, err := launchNode(t, cfg, port, httpAddr, env...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// launchNode is runNode returning errPortTaken when sori could not bind
// one of its ports, for the caller to pick others (withFreshPorts).
func launchNode(t *testing.T, cfg string, port int, httpAddr string, env ...string) (*node, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sori.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, port: port, http: httpAddr, cfgPath: path, logs: &bytes.Buffer{}, mu: &sync.Mutex{}, exited: make(chan struct{})}
	n.cmd = exec.Command(binary(t), "-config", path)
	if len(env) > 0 {
		n.cmd.Env = append(os.Environ(), env...)
	}
	n.cmd.Stdout = lockedWriter{n.mu, n.logs}
	n.cmd.Stderr = lockedWriter{n.mu, n.logs}
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); close(n.exited) }()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("sori log (%s):\n%s", n.addr(), n.log())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if resp, err := http.Get("http://" + httpAddr + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-n.exited:
			if strings.Contains(n.log(), "address already in use") {
				return nil, fmt.Errorf("%w:\n%s", errPortTaken, n.log())
			}
			t.Fatalf("sori exited at start:\n%s", n.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sori did not start:\n%s", n.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return n, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (n *node) log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logs.String()
}

// stop sends SIGTERM and requires a clean exit within 15 s.
func (n *node) stop() {
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		if code := n.cmd.ProcessState.ExitCode(); code != 0 {
			n.t.Errorf("sori exited with %d after SIGTERM", code)
		}
	case <-time.After(15 * time.Second):
		_ = n.cmd.Process.Kill()
		n.t.Errorf("sori did not stop within 15 s of SIGTERM")
	}
}

// sipConn is a UA socket talking to one sori over UDP or TCP.
type sipConn struct {
	t         *testing.T
	transport string
	conn      net.Conn
	reader    *bufio.Reader
	local     string
	seq       int
}

func dialSIP(t *testing.T, transport, addr string) *sipConn {
	t.Helper()
	c, err := net.Dial(transport, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &sipConn{t: t, transport: transport, conn: c, reader: bufio.NewReader(c), local: c.LocalAddr().String()}
}

// send writes one message (LF line ends are fine).
func (c *sipConn) send(raw string) {
	c.t.Helper()
	raw = strings.ReplaceAll(strings.ReplaceAll(raw, "\r\n", "\n"), "\n", "\r\n")
	if _, err := c.conn.Write([]byte(raw)); err != nil {
		c.t.Fatal(err)
	}
}

// do sends one request and returns the first final response.
func (c *sipConn) do(raw string) *sip.Response {
	c.t.Helper()
	c.send(raw)
	for {
		res := c.read()
		if res.StatusCode >= 200 {
			return res
		}
	}
}

// read returns the next message, which must be a response.
func (c *sipConn) read() *sip.Response {
	c.t.Helper()
	res, ok := c.readMessage().(*sip.Response)
	if !ok {
		c.t.Fatal("got a request, not a response")
	}
	return res
}

// readRequest returns the next message, which must be a request.
func (c *sipConn) readRequest() *sip.Request {
	c.t.Helper()
	req, ok := c.readMessage().(*sip.Request)
	if !ok {
		c.t.Fatal("got a response, not a request")
	}
	req.SetSource(c.conn.RemoteAddr().String()) // for received/rport in our responses
	return req
}

func (c *sipConn) readMessage() sip.Message {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var data []byte
	if c.transport == "udp" {
		buf := make([]byte, 65535)
		for len(bytes.TrimSpace(data)) == 0 { // a CRLF keepalive is not a message
			n, err := c.conn.Read(buf)
			if err != nil {
				c.t.Fatalf("nothing received over udp: %v", err)
			}
			data = buf[:n]
		}
	} else {
		var head bytes.Buffer
		length := 0
		for {
			line, err := c.reader.ReadString('\n')
			if err != nil {
				c.t.Fatalf("nothing received over tcp: %v", err)
			}
			if head.Len() == 0 && line == "\r\n" {
				continue // keep-alive
			}
			head.WriteString(line)
			if k, v, ok := strings.Cut(line, ":"); ok && (strings.EqualFold(strings.TrimSpace(k), "Content-Length") || strings.TrimSpace(k) == "l") {
				length, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if line == "\r\n" {
				break
			}
		}
		body := make([]byte, length)
		if _, err := io.ReadFull(c.reader, body); err != nil {
			c.t.Fatal(err)
		}
		data = append(head.Bytes(), body...)
	}
	msg, err := sip.ParseMessage(data)
	if err != nil {
		c.t.Fatalf("unparsable message: %v\n%s", err, data)
	}
	return msg
}

// respond answers req as a UA would: its Vias, From, To with our tag,
// Call-ID, CSeq (Record-Route on 18x/2xx), plus extra header lines.
func (c *sipConn) respond(req *sip.Request, code int, reason string, extra ...string) {
	c.t.Helper()
	c.respondSDP(req, code, reason, "", extra...)
}

// respondSDP is respond with an SDP body (none when sdp is empty).
func (c *sipConn) respondSDP(req *sip.Request, code int, reason, sdp string, extra ...string) {
	c.t.Helper()
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if to := res.To(); code > 100 && !to.Params.Has("tag") {
		to.Params.Add("tag", "uas-"+strconv.Itoa(c.seq))
	}
	for _, e := range extra {
		k, v, _ := strings.Cut(e, ":")
		res.AppendHeader(sip.NewHeader(k, strings.TrimSpace(v)))
	}
	if sdp != "" {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody([]byte(sdp))
	} else {
		res.SetBody(nil)
	}
	c.send(res.String())
}

// register builds a REGISTER from c; headers are extra lines (Contact, Expires, Authorization).
func (c *sipConn) register(user, callID string, cseq int, headers ...string) string {
	c.seq++
	return fmt.Sprintf("REGISTER sip:sori.test SIP/2.0\nVia: SIP/2.0/%s %s;branch=z9hG4bK-%s-%d-%d;rport\nMax-Forwards: 70\nFrom: <sip:%s@sori.test>;tag=t%d\nTo: <sip:%s@sori.test>\nCall-ID: %s\nCSeq: %d REGISTER\n%sContent-Length: 0\n\n",
		strings.ToUpper(c.transport), c.local, sipToken(callID), cseq, c.seq, user, cseq, user, callID, cseq, joinLines(headers))
}

func joinLines(hs []string) string {
	var b strings.Builder
	for _, h := range hs {
		b.WriteString(h)
		b.WriteByte('\n')
	}
	return b.String()
}

// registerAuth runs REGISTER -> 401 -> authenticated REGISTER and returns the final response.
func (c *sipConn) registerAuth(user, password, callID string, cseq int, headers ...string) *sip.Response {
	c.t.Helper()
	res := c.do(c.register(user, callID, cseq, headers...))
	if res.StatusCode != 401 {
		return res
	}
	cr := digestFor(c.t, res, "WWW-Authenticate", "REGISTER", "sip:sori.test", user, password)
	return c.do(c.register(user, callID, cseq+1, append(headers, "Authorization: "+cr)...))
}

func contactValues(res *sip.Response) []string {
	var out []string
	for _, h := range res.GetHeaders("Contact") {
		out = append(out, h.Value())
	}
	return out
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// runSipp runs sipp in dir and fails the test (with its logs) unless it exits 0.
func runSipp(t *testing.T, dir string, timeout time.Duration, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("sipp"); err != nil {
		t.Fatalf("sipp is not installed (make test installs sip-tester): %v", err)
	}
	cmd := exec.Command("timeout", append([]string{"-k", "5", strconv.Itoa(int(timeout.Seconds())), "sipp"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
		var errs strings.Builder
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			errs.Write(b)
		}
		t.Fatalf("sipp %v: %v\n%s\nerrors:\n%s", args, err, tail(string(out), 3000), errs.String())
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// fakeUDPPeer is a SIP peer on 127.0.0.1:port (a carrier gateway, a
// phone): every request but ACK that reaches it, its source set, goes to
// serve, until the test ends. respond answers from the same socket.
func fakeUDPPeer(t *testing.T, port int, serve func(req *sip.Request, respond func(*sip.Response))) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			k, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(buf[:k])
			req, ok := msg.(*sip.Request)
			if err != nil || !ok || req.IsAck() {
				continue
			}
			req.SetSource(from.String())
			serve(req, func(res *sip.Response) { _, _ = c.WriteToUDPAddrPort([]byte(res.String()), from) })
		}
	}()
	return c
}

// waitRecords reads the call records match picks from the CDR file at
// path, waiting until want are there, and requires exactly want.
func waitRecords(t *testing.T, path string, want int, what string, match func(calls.Record) bool) []calls.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out []calls.Record
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var r calls.Record
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					t.Fatalf("bad call record %q: %v", sc.Text(), err)
				}
				if match(r) {
					out = append(out, r)
				}
			}
			f.Close()
		}
		if len(out) >= want || time.Now().After(deadline) {
			if len(out) != want {
				t.Fatalf("%d call records for %s, want %d", len(out), what, want)
			}
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// digestFor answers the challenge in res's header hdr.
func digestFor(t *testing.T, res *sip.Response, hdr, method, uri, user, password string) string {
	t.Helper()
	h := res.GetHeader(hdr)
	if h == nil {
		t.Fatalf("%d without %s", res.StatusCode, hdr)
	}
	ch, err := client.ParseChallenge(h.Value())
	if err != nil {
		t.Fatal(err)
	}
	cr, err := client.Digest(ch, client.Options{Method: method, URI: uri, Username: user, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	return cr.String()
}
