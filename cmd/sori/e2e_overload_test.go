package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sori is stopped (SIGSTOP) while a new INVITE, a new REGISTER and an
// in-dialog BYE reach its UDP socket, and resumed once they have waited
// three times sip.shed_after: the INVITE and the REGISTER are answered
// 503 with Retry-After (they waited too long: shed), the BYE is served
// as ever (what ends a call is never shed), and a REGISTER sent after
// that is served (a 401 challenge), each shed request counted.
func TestOverloadShedsLateNewRequests(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeConfig{sip: "  shed_after: 100ms\n"})
	u := newUA(t, n, "udp", "alice")
	// Served before the stop: the socket works and nothing is shed in time.
	if r := u.do(u.register("alice", "shed-reg@test", 1)); r.StatusCode != 401 {
		t.Fatalf("REGISTER before the stop: %d %s", r.StatusCode, r.Reason)
	}

	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, n.cmd.Process.Pid)
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = n.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	u.send(u.request("INVITE", "sip:bob@sori.test", "shed-inv@test", 1))
	u.send(u.register("alice", "shed-reg@test", 3))
	u.send(fmt.Sprintf("BYE sip:bob@sori.test SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-shed-bye;rport\nMax-Forwards: 70\nFrom: <sip:alice@sori.test>;tag=a1\nTo: <sip:bob@sori.test>;tag=b1\nCall-ID: shed-bye@test\nCSeq: 2 BYE\nContent-Length: 0\n\n", u.local))
	time.Sleep(300 * time.Millisecond) // what is tested: the requests wait, unread, longer than shed_after
	resume()

	got := map[string]int{}
	for len(got) < 3 {
		res := u.read()
		if res.StatusCode < 200 {
			continue
		}
		m := res.CSeq().MethodName.String()
		got[m] = res.StatusCode
		if res.StatusCode == 503 && (res.GetHeader("Retry-After") == nil || res.GetHeader("Server") == nil) {
			t.Errorf("the 503 to %s has no Retry-After or Server:\n%s", m, res)
		}
	}
	if got["INVITE"] != 503 || got["REGISTER"] != 503 {
		t.Errorf("the late INVITE and REGISTER: %v, want 503 to both", got)
	}
	if got["BYE"] == 503 || got["BYE"] == 0 {
		t.Errorf("the late in-dialog BYE: %d, want it served (never shed)", got["BYE"])
	}

	if r := u.do(u.register("alice", "shed-reg@test", 5)); r.StatusCode != 401 {
		t.Fatalf("REGISTER after the resume: %d %s, want it served (401)", r.StatusCode, r.Reason)
	}
	for _, want := range []string{`sori_overload_shed_total{method="INVITE"} 1`, `sori_overload_shed_total{method="REGISTER"} 1`} {
		if _, body := httpGet(t, "http://"+n.http+"/metrics"); !strings.Contains(body, want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(body, "sori_overload"))
		}
	}
}

// waitStopped returns once every thread of pid is stopped: a signal is
// delivered when the thread next runs, so on a busy machine sori could
// still read the requests sent right after kill(2) returned.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); ; {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := len(tasks) > 0
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			i := strings.LastIndexByte(string(b), ')')
			if err != nil || i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
				stopped = false
				break
			}
		}
		if stopped {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("sori (pid %d) not stopped 5 s after SIGSTOP", pid)
		}
		time.Sleep(time.Millisecond)
	}
}
