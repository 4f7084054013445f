package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/sip/calls"
)

// sippReceived is the body of each message SIPp logged receiving
// (-trace_msg, its *_messages.log in dir for scenario) whose first line
// starts with start, in order.
func sippReceived(t *testing.T, dir, scenario, start string) [][]byte {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, strings.TrimSuffix(scenario, ".xml")+"_*_messages.log"))
	if len(logs) != 1 {
		t.Fatalf("%d message logs of %s in %s, want 1", len(logs), scenario, dir)
	}
	b, err := os.ReadFile(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	// Each entry: a dashed line with the time, "UDP message received [N] bytes :", a blank line, the message.
	for _, entry := range strings.Split(string(b), "----------------------------------------------- ") {
		_, rest, ok := strings.Cut(entry, " message received [")
		if !ok {
			continue
		}
		_, msg, ok := strings.Cut(rest, "\n\n")
		if !ok || !strings.HasPrefix(msg, start) {
			continue
		}
		msg = strings.ReplaceAll(msg, "\r\n", "\n")
		if _, body, ok := strings.Cut(msg, "\n\n"); ok {
			out = append(out, []byte(strings.ReplaceAll(strings.TrimRight(body, "\n"), "\n", "\r\n")+"\r\n"))
		}
	}
	return out
}

// sdpDest reads where an SDP body sends media.
func sdpDest(t *testing.T, body []byte) netip.AddrPort {
	t.Helper()
	s, err := sdp.Parse(body)
	if err != nil || len(s.Media) != 1 {
		t.Fatalf("SDP %v:\n%s", err, body)
	}
	return netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port))
}

// A SIPp caller and a SIPp callee through sori, media anchored by
// sori-anchor, the offer in a reliable 183 (RFC 3262 100rel): the
// caller's INVITE has no SDP and supports 100rel; the callee's 183
// requires it, with RSeq and its SDP offer; the caller's PRACK has the
// RAck and the answer, the callee's scenario checks both; then the PRACK's
// 200, the INVITE's 200, ACK and the caller's BYE. Both SIPps exit 0 and
// count one successful call; the 183 and 200 the caller got and the PRACK
// the callee got send media to the anchor, never to the other SIPp; sori
// made one ng offer (the 183's), one answer (the PRACK's), one delete.
func TestSipp100rel(t *testing.T) {
	dir := t.TempDir()
	cdr := filepath.Join(dir, "cdr.jsonl")
	an := startAnchor(t)
	n := callNode(t, cdr, an)
	uasDir, uacDir := filepath.Join(dir, "uas"), filepath.Join(dir, "uac")
	for _, d := range []string{uasDir, uacDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port := freeSIPPort(t)
	sippRegister(t, n, dir, "bob", port)
	wait := sippUAS(t, uasDir, "call-uas-100rel.xml", port, 1, "-trace_msg", "-trace_stat", "-stf", "stat.csv")
	sippUAC(t, n, uacDir, "call-uac-100rel.xml", "bob", "-m", "1", "-d", "100",
		"-trace_msg", "-trace_stat", "-stf", "stat.csv")
	wait()

	for side, d := range map[string]string{"caller": uacDir, "callee": uasDir} {
		if st := sippStats(t, filepath.Join(d, "stat.csv")); st["SuccessfulCall(C)"] != 1 || st["FailedCall(C)"] != 0 {
			t.Fatalf("SIPp %s: %v successful calls, %v failed; want 1 and 0", side, st["SuccessfulCall(C)"], st["FailedCall(C)"])
		}
	}
	early := sippReceived(t, uacDir, "call-uac-100rel.xml", "SIP/2.0 183 ")
	answered := sippReceived(t, uacDir, "call-uac-100rel.xml", "SIP/2.0 200 OK")
	pracks := sippReceived(t, uasDir, "call-uas-100rel.xml", "PRACK ")
	if len(early) == 0 || len(pracks) != 1 || len(answered) == 0 {
		t.Fatalf("the caller got %d 183s and %d 200s with SDP, the callee %d PRACKs with SDP", len(early), len(answered), len(pracks))
	}
	toAnchorFromA, toAnchorFromB := sdpDest(t, early[0]), sdpDest(t, pracks[0])
	if !an.hasPort(toAnchorFromA) || !an.hasPort(toAnchorFromB) || toAnchorFromA == toAnchorFromB {
		t.Fatalf("the caller's 183 sends media to %s, the callee's PRACK to %s: want two of the anchor's ports (%d-%d)",
			toAnchorFromA, toAnchorFromB, an.minPort, an.maxPort)
	}
	for _, body := range answered {
		if len(body) > 2 && sdpDest(t, body) != toAnchorFromA {
			t.Fatalf("the caller's 200 sends media to %s, not the 183's %s", sdpDest(t, body), toAnchorFromA)
		}
	}
	checkRecords(t, records(t, cdr, "bob", 1), 200, calls.Answered, "caller")
	waitAnchorEmpty(t, an)
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	for _, want := range []string{`sori_media_commands_total{command="offer",outcome="ok"} 1`,
		`sori_media_commands_total{command="answer",outcome="ok"} 1`, `sori_media_commands_total{command="delete",outcome="ok"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("sori metrics lack %s", want)
		}
	}
}
