package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
)

// stunnel is a TLS client in front of a plain TCP program: Debian's sipp is
// built without TLS, so its TCP connection is carried to sori's tls
// listener by stunnel (OpenSSL), which trusts only caFile and checks that
// the certificate names sori.test. It listens on accept, the address to
// point sipp at: sori must know it as one of its sip.aliases, as SIPp
// computes its digest-uri from the address it sends to.
func stunnel(t *testing.T, dir, accept, tlsAddr, caFile string) {
	t.Helper()
	bin, err := exec.LookPath("stunnel4")
	if err != nil {
		if bin, err = exec.LookPath("stunnel"); err != nil {
			t.Fatalf("stunnel is not installed (make test installs stunnel4): %v", err)
		}
	}
	conf := filepath.Join(dir, "stunnel-"+strings.ReplaceAll(accept, ":", "-")+".conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `foreground = yes
pid =
debug = notice
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[sips]
client = yes
accept = %s
connect = %s
CAfile = %s
verifyChain = yes
checkHost = sori.test
sslVersionMin = TLSv1.2
`, accept, tlsAddr, caFile), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf)
	var mu sync.Mutex
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = lockedWriter{&mu, &buf}, lockedWriter{&mu, &buf}
	output := func() string { mu.Lock(); defer mu.Unlock(); return buf.String() }
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("stunnel:\n%s", tail(output(), 3000))
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", accept); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("stunnel exited at start:\n%s", output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("stunnel did not listen on %s:\n%s", accept, output())
		}
	}
}

// TestSIPpOverTLSAndTCP is the load acceptance over the stream
// transports: 500 users register with digest and 100 authenticated calls
// go through sori and sori-anchor, each with zero failures, once over TCP
// and once over TLS (verifying sori's certificate against the test's own
// CA). The caller is one SIPp connection (-t t1) carrying every REGISTER
// and every call; the callee is a SIPp UAS on UDP.
func TestSIPpOverTLSAndTCP(t *testing.T) {
	for _, transport := range []string{"tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			an := startAnchor(t)
			port, tlsPort := freeSIPPort(t), freeSIPPort(t)
			httpAddr := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
			cert, key := filepath.Join(dir, "tls", "cert.pem"), filepath.Join(dir, "tls", "key.pem")
			cdr := filepath.Join(dir, "cdr.jsonl")
			tunnel := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
			users, csv := usersYAML(500)
			cfg := fmt.Sprintf(`sip:
  domain: sori.test
  listen: ["udp:127.0.0.1:%d", "tcp:127.0.0.1:%d", "tls:127.0.0.1:%d"]
  auth_secret: e2e-shared-secret-0123456789
  aliases: [%q]
  tls: {cert: %q, key: %q, self_signed: true}
registrar: {store: memory}
http: {listen: %s}
security:
  trusted: ["127.0.0.1/32"]
cdr: {file: %q}
media:
  anchors: [%q]
%s  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
`, port, port, tlsPort, tunnel, cert, key, httpAddr, cdr, an.ng, users)
			n := runNode(t, cfg, port, httpAddr)
			if err := os.WriteFile(filepath.Join(dir, "users.csv"), []byte(csv), 0o600); err != nil {
				t.Fatal(err)
			}
			target := n.addr()
			if transport == "tls" {
				target = tunnel
				stunnel(t, dir, tunnel, fmt.Sprintf("127.0.0.1:%d", tlsPort), cert)
			}
			runSipp(t, dir, 90*time.Second, target, "-t", "t1", "-sf", filepath.Join(sippDir(t), "register.xml"),
				"-inf", "users.csv", "-key", "domain", "sori.test", "-key", "contact", "127.0.0.1:5099", "-key", "expires", "3600",
				"-i", "127.0.0.1", "-p", strconv.Itoa(freeSIPPort(t)), "-m", "500", "-r", "250", "-l", "100",
				"-nostdin", "-trace_err", "-timeout", "60s")

			uas := freeSIPPort(t)
			sippRegister(t, n, dir, "bob", uas)
			wait := sippUAS(t, dir, "call-uas.xml", uas, 100)
			runSipp(t, dir, 90*time.Second, target, "-t", "t1", "-sf", filepath.Join(sippDir(t), "call-uac.xml"),
				"-s", "bob", "-au", "alice", "-ap", "alice-secret", "-key", "domain", "sori.test", "-key", "caller", "alice",
				"-i", "127.0.0.1", "-p", strconv.Itoa(freeSIPPort(t)), "-m", "100", "-r", "50", "-l", "20", "-d", "100",
				"-nostdin", "-trace_err", "-timeout", "60s")
			wait()

			recs := records(t, cdr, "bob", 100)
			checkRecords(t, recs, 200, calls.Answered, "caller")
			for _, r := range recs { // the caller's connection: stunnel's over TLS
				if !strings.HasPrefix(r.Source, transport+":") {
					t.Fatalf("call record %+v: want the caller's source over %s", r, transport)
				}
			}
			m := nodeMetric(t, n, `sori_registrations_total{result="ok"}`)
			if got, _ := strconv.Atoi(m); got != 501 {
				t.Errorf("sori_registrations_total{result=\"ok\"} = %s, want 501 (500 users over %s and the callee)", m, transport)
			}
			if got := an.metric(t, `sori_anchor_commands_total{command="delete",result="ok"}`); got != "100" {
				t.Errorf("the anchor deleted %s calls, want 100", got)
			}
			if transport == "tls" {
				if got := nodeMetric(t, n, `sori_sip_tls_handshake_failures_total{direction="in"}`); got != "" && got != "0" {
					t.Errorf("%s TLS handshakes failed", got)
				}
			}
		})
	}
}
