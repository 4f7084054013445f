package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
)

// callUsers are the subscribers of the call tests; each scenario calls its own.
var callUsers = []string{"alice", "bob", "carol", "dave", "erin", "frank", "gina", "henry"}

// callNode is a sori for the call scenarios, anchoring media through an.
func callNode(t *testing.T, cdr string, an *anchorProc) *node {
	t.Helper()
	var users strings.Builder
	users.WriteString("users:\n")
	for _, u := range callUsers {
		fmt.Fprintf(&users, "  - {name: %s, password: %s-secret}\n", u, u)
	}
	return startNode(t, nodeConfig{sip: "  timer_c: 10s\n",
		extra: fmt.Sprintf("cdr:\n  file: %s\nmedia:\n  anchors: [%q]\n%s", cdr, an.ng, users.String())})
}

// sippRegister registers user with Contact 127.0.0.1:port from that port,
// as the SIPp UAS that will then listen on it.
func sippRegister(t *testing.T, n *node, dir, user string, port int) {
	t.Helper()
	csv := fmt.Sprintf("SEQUENTIAL\n%s;%s-secret;[authentication username=%s password=%s-secret]\n", user, user, user, user)
	f := user + "-" + strconv.Itoa(port) + ".csv"
	if err := os.WriteFile(filepath.Join(dir, f), []byte(csv), 0o600); err != nil {
		t.Fatal(err)
	}
	runSipp(t, dir, 30*time.Second, n.addr(), "-sf", filepath.Join(sippDir(t), "register.xml"), "-inf", f,
		"-key", "domain", "sori.test", "-key", "contact", "127.0.0.1:"+strconv.Itoa(port), "-key", "expires", "600",
		"-i", "127.0.0.1", "-p", strconv.Itoa(port), "-m", "1", "-nostdin", "-trace_err", "-timeout", "20s")
}

// sippUAS starts a SIPp UAS on port for calls; the returned func waits for it
// to finish its calls and fails the test when it did not.
func sippUAS(t *testing.T, dir, scenario string, port, calls int, extra ...string) func() {
	t.Helper()
	args := append([]string{"-k", "5", "60", "sipp", "-sf", filepath.Join(sippDir(t), scenario), "-i", "127.0.0.1",
		"-p", strconv.Itoa(port), "-m", strconv.Itoa(calls), "-nostdin", "-trace_err", "-timeout", "50s"}, extra...)
	cmd := exec.Command("timeout", args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	time.Sleep(200 * time.Millisecond) // bound before the first INVITE
	return func() {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				logs, _ := filepath.Glob(filepath.Join(dir, strings.TrimSuffix(scenario, ".xml")+"_*_errors.log"))
				var errs strings.Builder
				for _, l := range logs {
					b, _ := os.ReadFile(l)
					errs.WriteString(tail(string(b), 3000))
				}
				t.Fatalf("UAS %s: %v\n%s\nerrors:\n%s", scenario, err, tail(out.String(), 2000), errs.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("UAS %s did not finish\n%s", scenario, tail(out.String(), 2000))
		}
	}
}

// sippUAC places calls from alice to callee with scenario.
func sippUAC(t *testing.T, n *node, dir, scenario, callee string, args ...string) {
	t.Helper()
	runSipp(t, dir, 90*time.Second, append([]string{n.addr(), "-sf", filepath.Join(sippDir(t), scenario),
		"-s", callee, "-au", "alice", "-ap", "alice-secret", "-key", "domain", "sori.test", "-key", "caller", "alice",
		"-i", "127.0.0.1", "-p", strconv.Itoa(freeSIPPort(t)), "-nostdin", "-trace_err", "-timeout", "60s"}, args...)...)
}

// records reads the call records for callee from the CDR file, waiting
// until want are there.
func records(t *testing.T, path, callee string, want int) []calls.Record {
	t.Helper()
	return waitRecords(t, path, want, callee, func(r calls.Record) bool { return r.To == "sip:"+callee+"@sori.test" })
}

func checkRecords(t *testing.T, recs []calls.Record, code int, disposition, hangupBy string) {
	t.Helper()
	for _, r := range recs {
		if r.Code != code || r.Disposition != disposition || r.HangupBy != hangupBy || r.Caller != "alice" || r.CallID == "" {
			t.Fatalf("call record %+v, want code %d disposition %s hangup_by %q", r, code, disposition, hangupBy)
		}
		if disposition == calls.Answered && (r.Answer == nil || r.End.Before(*r.Answer) || r.Duration <= 0) {
			t.Fatalf("answered call record without answer time or duration: %+v", r)
		}
	}
}

// TestCallsSIPp runs the call scenarios in testdata/sipp with real SIPp
// processes as caller and callees, all through one sori, media anchored by
// one sori-anchor: every SDP offer and answer goes through it, and every
// call, answered or not, is deleted from it in the end.
func TestCallsSIPp(t *testing.T) {
	dir := t.TempDir()
	cdr := filepath.Join(dir, "cdr.jsonl")
	an := startAnchor(t)
	n := callNode(t, cdr, an)

	// One callee each: a SIPp UAS registered from its port plays the callee's side.
	for _, c := range []struct {
		name, callee, uas, uac string
		uasArgs, uacArgs       []string
		calls, code            int
		disposition, hangupBy  string
	}{
		{"200 calls, 20 at once, caller hangs up", "bob", "call-uas.xml", "call-uac.xml",
			nil, []string{"-r", "100", "-l", "20", "-d", "100"}, 200, 200, calls.Answered, "caller"},
		{"callee hangs up", "carol", "call-uas-bye.xml", "call-uac-callee-bye.xml",
			[]string{"-d", "100"}, []string{"-r", "10"}, 5, 200, calls.Answered, "callee"},
		{"CANCEL while ringing ends in 487", "dave", "call-uas-cancel.xml", "call-uac-cancel.xml",
			nil, []string{"-r", "10", "-d", "200"}, 5, 487, calls.Cancelled, "caller"},
		{"hold and unhold with re-INVITE", "erin", "call-uas-hold.xml", "call-uac-hold.xml",
			nil, []string{"-r", "10", "-d", "100"}, 5, 200, calls.Answered, "caller"},
	} {
		t.Run(c.name, func(t *testing.T) {
			port := freeSIPPort(t)
			sippRegister(t, n, dir, c.callee, port)
			wait := sippUAS(t, dir, c.uas, port, c.calls, c.uasArgs...)
			sippUAC(t, n, dir, c.uac, c.callee, append([]string{"-m", strconv.Itoa(c.calls)}, c.uacArgs...)...)
			wait()
			checkRecords(t, records(t, cdr, c.callee, c.calls), c.code, c.disposition, c.hangupBy)
		})
	}
	t.Run("forked call, one contact answers, the other is cancelled", func(t *testing.T) {
		answer, ring := freeSIPPort(t), freeSIPPort(t)
		sippRegister(t, n, dir, "frank", answer)
		sippRegister(t, n, dir, "frank", ring)
		waitA := sippUAS(t, dir, "call-uas.xml", answer, 3)
		waitR := sippUAS(t, dir, "call-uas-cancel.xml", ring, 3)
		sippUAC(t, n, dir, "call-uac.xml", "frank", "-m", "3", "-r", "5", "-l", "1", "-d", "100")
		waitA()
		waitR()
		recs := records(t, cdr, "frank", 3)
		checkRecords(t, recs, 200, calls.Answered, "caller")
		for _, r := range recs {
			if r.Branches != 2 || !strings.Contains(r.Callee, ":"+strconv.Itoa(answer)) {
				t.Fatalf("forked call record %+v: want 2 branches, answered by port %d", r, answer)
			}
		}
	})
	t.Run("busy callee: 486 passed through", func(t *testing.T) {
		port := freeSIPPort(t)
		sippRegister(t, n, dir, "gina", port)
		wait := sippUAS(t, dir, "call-uas-busy.xml", port, 2)
		rejected(t, n, dir, "gina", 486)
		wait()
		checkRecords(t, records(t, cdr, "gina", 2), 486, calls.Busy, "")
	})
	t.Run("unknown user: 404", func(t *testing.T) {
		rejected(t, n, dir, "nobody", 404)
		checkRecords(t, records(t, cdr, "nobody", 2), 404, calls.NotFound, "")
	})
	t.Run("known user not registered: 480", func(t *testing.T) {
		rejected(t, n, dir, "henry", 480)
		checkRecords(t, records(t, cdr, "henry", 2), 480, calls.Unavailable, "")
	})
	code, metrics := httpGet(t, "http://"+n.http+"/metrics")
	for _, want := range []string{`sori_calls_total{disposition="answered"} 213`, `sori_calls_total{disposition="cancelled"} 5`, `sori_calls_active{state="answered"} 0`} {
		if code != 200 || !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// 213 answered + 5 cancelled + 2 busy calls were offered to the anchor
	// (404 and 480 were refused before); hold and unhold add re-INVITEs.
	// A call leaves the anchor's table before its ports are released (the
	// ng delete answers after both): wait for both.
	for deadline := time.Now().Add(5 * time.Second); an.metric(t, "sori_anchor_calls") != "0" || an.metric(t, "sori_anchor_ports_in_use") != "0"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sori-anchor still holds %s calls and %s port pairs", an.metric(t, "sori_anchor_calls"), an.metric(t, "sori_anchor_ports_in_use"))
		}
	}
	if n, _ := strconv.Atoi(an.metric(t, `sori_anchor_commands_total{command="delete",result="ok"}`)); n != 220 {
		t.Errorf("the anchor deleted %d calls, want 220", n)
	}
	if n, _ := strconv.Atoi(an.metric(t, `sori_anchor_commands_total{command="offer",result="ok"}`)); n < 220 {
		t.Errorf("the anchor got %d offers, want at least 220", n)
	}
	if got := an.metric(t, "sori_anchor_ports_in_use"); got != "0" {
		t.Errorf("%s port pairs still in use", got)
	}
}

// rejected places two calls to callee and checks each ended with code.
func rejected(t *testing.T, n *node, dir, callee string, code int) {
	t.Helper()
	sippUAC(t, n, dir, "call-uac-reject.xml", callee, "-m", "2", "-r", "10", "-trace_msg", "-message_file", callee+".msg")
	msgs, err := os.ReadFile(filepath.Join(dir, callee+".msg"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(msgs), "SIP/2.0 "+strconv.Itoa(code)+" "); got < 2 {
		t.Fatalf("%d responses %d to calls to %s, want 2:\n%s", got, code, callee, tail(string(msgs), 3000))
	}
}
