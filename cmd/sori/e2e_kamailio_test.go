package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/sdp"
)

// Kamailio's rtpengine module drives sori-anchor in place of rtpengine:
// a SIPp call through Kamailio (testdata/kamailio/rtpengine-proxy.cfg)
// gets its media anchored, and both SIPp ends see SDP pointing at
// sori-anchor.
func TestKamailioRtpengineModuleDrivesSoriAnchor(t *testing.T) {
	kamailio, err := exec.LookPath("kamailio")
	if err != nil {
		t.Fatalf("kamailio is not installed (make test installs it): %v", err)
	}
	an := startAnchor(t)
	kamPort, uasPort, uacPort := freeSIPPort(t), freeSIPPort(t), freeSIPPort(t)
	run := t.TempDir()
	cmd := exec.Command(kamailio, "-f", filepath.Join(repoRoot(t), "testdata", "kamailio", "rtpengine-proxy.cfg"),
		"-l", fmt.Sprintf("udp:127.0.0.1:%d", kamPort),
		"-A", fmt.Sprintf("RTPE_SOCK=\"udp:%s\"", an.ng), "-A", fmt.Sprintf("UAS=\"sip:127.0.0.1:%d\"", uasPort),
		"-DD", "-E", "-Y", run, "-w", run, "-m", "64", "-M", "8")
	var mu sync.Mutex
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = lockedWriter{&mu, &logs}, lockedWriter{&mu, &logs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) // Kamailio and its children
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("kamailio log:\n%s", tail(logs.String(), 6000))
			mu.Unlock()
		}
	})
	waitKamailio(t, kamPort, exited, func() string { mu.Lock(); defer mu.Unlock(); return logs.String() })

	dir := t.TempDir()
	const calls = 3
	// SIPp's RTP echo binds its -mp port and the one two above (video).
	uasMedia, uacMedia := freePortRun(t, 3), freePortRun(t, 3)
	wait := sippUAS(t, dir, "call-uas.xml", uasPort, calls, "-trace_msg", "-mp", strconv.Itoa(uasMedia))
	runSipp(t, dir, 60*time.Second, fmt.Sprintf("127.0.0.1:%d", kamPort), "-sf", filepath.Join(sippDir(t), "plain-uac.xml"),
		"-s", "bob", "-key", "domain", "sori.test", "-i", "127.0.0.1", "-p", strconv.Itoa(uacPort), "-mp", strconv.Itoa(uacMedia),
		"-m", strconv.Itoa(calls), "-r", "10", "-d", "200", "-nostdin", "-trace_err", "-trace_msg", "-timeout", "50s")
	wait()

	inAnchor := func(m sdp.Media) bool {
		return m.Addr == netip.MustParseAddr("127.0.0.1") && m.Port >= an.minPort && m.Port <= an.maxPort
	}
	uasSeen := sdpsIn(t, dir, "call-uas_", "INVITE ")
	uacSeen := sdpsIn(t, dir, "plain-uac_", "SIP/2.0 200 OK")
	if len(uasSeen) != calls || len(uacSeen) != calls {
		t.Fatalf("SDPs seen: %d by the UAS, %d by the UAC; want %d each", len(uasSeen), len(uacSeen), calls)
	}
	for i := range calls {
		if !inAnchor(uasSeen[i]) || !inAnchor(uacSeen[i]) || uasSeen[i].Port == uacSeen[i].Port {
			t.Fatalf("call %d: the UAS was sent to %s:%d, the UAC to %s:%d; want distinct sori-anchor ports %d-%d",
				i, uasSeen[i].Addr, uasSeen[i].Port, uacSeen[i].Addr, uacSeen[i].Port, an.minPort, an.maxPort)
		}
	}
	for _, cmd := range []string{"offer", "answer", "delete"} {
		m := fmt.Sprintf(`sori_anchor_commands_total{command=%q,result="ok"}`, cmd)
		if n, _ := strconv.Atoi(an.metric(t, m)); n < calls {
			t.Errorf("%s = %d, want >= %d", m, n, calls)
		}
	}
	if got := an.metric(t, "sori_anchor_calls"); got != "0" {
		t.Errorf("sori-anchor still holds %s calls after the BYEs", got)
	}
}

// waitKamailio waits until Kamailio answers on its port: an OPTIONS with
// Max-Forwards 0 gets its 483.
func waitKamailio(t *testing.T, port int, exited chan struct{}, logs func() string) {
	t.Helper()
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	probe := fmt.Sprintf("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-probe\r\nMax-Forwards: 0\r\nFrom: <sip:probe@test>;tag=p\r\nTo: <sip:probe@test>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
		port, c.LocalAddr())
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		select {
		case <-exited:
			t.Fatalf("kamailio exited:\n%s", tail(logs(), 4000))
		default:
		}
		_, _ = c.Write([]byte(probe))
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && strings.Contains(string(buf[:n]), " 483 ") {
			return
		}
	}
	t.Fatalf("kamailio did not answer:\n%s", tail(logs(), 4000))
}

var messageHead = regexp.MustCompile(`(?m)^-+ \d{4}-\d\d-\d\d [0-9:.]+\n(UDP message received|UDP message sent)[^\n]*\n\n`)

// sdpsIn returns the SDP media of every message a SIPp process received
// whose first line starts with first, from its -trace_msg log.
func sdpsIn(t *testing.T, dir, prefix, first string) []sdp.Media {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, prefix+"*_messages.log"))
	if len(logs) != 1 {
		t.Fatalf("message logs %v", logs)
	}
	b, err := os.ReadFile(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	idx := messageHead.FindAllStringSubmatchIndex(text, -1)
	var out []sdp.Media
	for i, m := range idx {
		end := len(text)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		if text[m[2]:m[3]] != "UDP message received" {
			continue
		}
		msg := text[m[1]:end]
		if !strings.HasPrefix(msg, first) {
			continue
		}
		_, body, ok := strings.Cut(strings.ReplaceAll(msg, "\r\n", "\n"), "\n\n")
		if !ok || !strings.HasPrefix(body, "v=0") {
			continue
		}
		s, err := sdp.Parse([]byte(strings.TrimSpace(body)))
		if err != nil || len(s.Media) == 0 {
			t.Fatalf("SDP in %s: %v\n%s", first, err, body)
		}
		out = append(out, s.Media[0])
	}
	return out
}
