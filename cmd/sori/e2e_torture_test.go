package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tortureCase is one row of testdata/torture/manifest.tsv (copied from the
// RFC 4475 / RFC 5118 suite with its expectations).
type tortureCase struct {
	name, file, transport, kind, validity, rule, prefer string
	expectN                                             int
}

// loadTorture reads the RFC cases and sori's own (extra/), whose files are
// named relative to testdata/torture too.
func loadTorture(t *testing.T) []tortureCase {
	t.Helper()
	out := loadManifest(t, "manifest.tsv")
	if len(out) < 70 {
		t.Fatalf("manifest has %d cases", len(out))
	}
	extra := loadManifest(t, filepath.Join("extra", "manifest.tsv"))
	if len(extra) < 50 {
		t.Fatalf("extra manifest has %d cases", len(extra))
	}
	return append(out, extra...)
}

func loadManifest(t *testing.T, name string) []tortureCase {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "testdata", "torture", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []tortureCase
	sc := bufio.NewScanner(f)
	header := true
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		if header {
			header = false
			continue
		}
		c := strings.Split(line, "\t")
		if len(c) < 11 {
			t.Fatalf("manifest row %q has %d columns", line, len(c))
		}
		n, _ := strconv.Atoi(c[10])
		out = append(out, tortureCase{name: c[0], file: c[1], transport: c[2], kind: c[3], validity: c[4], rule: c[5], prefer: c[6], expectN: max(n, 1)})
	}
	return out
}

var statusLine = regexp.MustCompile(`(?m)^SIP/2\.0 ([0-9]{3}) `)

// exchange sends one torture message and collects the status codes of the
// responses that come back within wait.
func exchange(t *testing.T, transport, addr string, data []byte, wait time.Duration, want int) []int {
	t.Helper()
	conn, err := net.Dial(transport, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(data); err != nil {
		t.Fatal(err)
	}
	var got []byte
	deadline := time.Now().Add(wait)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		_ = conn.SetReadDeadline(deadline)
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
		finals := 0
		for _, m := range statusLine.FindAllSubmatch(got, -1) {
			if m[1][0] != '1' {
				finals++
			}
		}
		if finals >= want {
			// a little longer, in case a second (wrong) answer follows
			deadline = time.Now().Add(100 * time.Millisecond)
		}
	}
	var codes []int
	for _, m := range statusLine.FindAllSubmatch(got, -1) {
		c, _ := strconv.Atoi(string(m[1]))
		codes = append(codes, c)
	}
	return codes
}

// alive sends OPTIONS to sori over transport and expects a final answer.
func alive(t *testing.T, transport, addr string) bool {
	t.Helper()
	for range 3 {
		conn, err := net.Dial(transport, addr)
		if err != nil {
			continue
		}
		local := conn.LocalAddr().String()
		msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/%s %s;rport;branch=z9hG4bK-live-%d\r\nMax-Forwards: 70\r\nFrom: <sip:liveness@sori.test>;tag=l\r\nTo: <sip:%s>\r\nCall-ID: live-%d@torture\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
			addr, strings.ToUpper(transport), local, time.Now().UnixNano(), addr, time.Now().UnixNano())
		_, _ = conn.Write([]byte(msg))
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 4096)
		nr, _ := conn.Read(buf) // a datagram, or the start of the stream
		data := buf[:nr]
		conn.Close()
		if bytes.HasPrefix(data, []byte("SIP/2.0 200")) {
			return true
		}
	}
	return false
}

// preferDeviations are the torture cases where sori gives another answer
// than the one the manifest's prefer column names, on purpose. Each says why.
var preferDeviations = map[string]string{}

// TestTorture replays every RFC 4475 and RFC 5118 torture message against a
// running sori over UDP and TCP: valid messages are never answered 400,
// invalid ones never 2xx, sori gives the RFC-preferred answer (the
// manifest's prefer column) unless preferDeviations says why not, it answers
// OPTIONS after each case, and nothing is forwarded (the messages address
// example.com hosts: no route leads there).
func TestTorture(t *testing.T) {
	n := startNode(t, nodeConfig{})
	root := filepath.Join(repoRoot(t), "testdata", "torture")
	for _, c := range loadTorture(t) {
		t.Run(c.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(root, c.file))
			if err != nil {
				t.Fatal(err)
			}
			wait := 700 * time.Millisecond
			if strings.HasPrefix(c.kind, "tcp-hold") {
				wait = 300 * time.Millisecond
			}
			codes := exchange(t, c.transport, n.addr(), data, wait, c.expectN)
			for _, code := range codes {
				if c.rule == "not400" && code == 400 {
					t.Errorf("valid message answered 400 (codes %v)", codes)
				}
				if c.rule == "not2xx" && code >= 200 && code < 300 {
					t.Errorf("invalid message answered %d (codes %v)", code, codes)
				}
				if strings.HasPrefix(c.validity, "valid-response") || strings.HasPrefix(c.validity, "invalid-response") {
					t.Errorf("a response was answered with %d", code)
				}
			}
			if finals(codes) > c.expectN {
				t.Errorf("answered %d times, want %d (codes %v)", finals(codes), c.expectN, codes)
			}
			if !alive(t, "udp", n.addr()) || !alive(t, "tcp", n.addr()) {
				t.Fatalf("sori does not answer OPTIONS after %s", c.name)
			}
			if c.prefer == "-" || c.prefer == "" {
				return
			}
			why, deviates := preferDeviations[c.name]
			switch met := preferMet(c.prefer, codes); {
			case !met && !deviates:
				t.Errorf("RFC-preferred answer %s, got %v", c.prefer, codes)
			case met && deviates:
				t.Errorf("gives the preferred answer %s now (%v): remove it from preferDeviations (%s)", c.prefer, codes, why)
			}
		})
	}
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	if !strings.Contains(metrics, "sori_proxy_branches_total 0") {
		t.Errorf("a torture message was forwarded:\n%s", grep(metrics, "sori_proxy_branches_total"))
	}
}

func finals(codes []int) int {
	n := 0
	for _, c := range codes {
		if c >= 200 {
			n++
		}
	}
	return n
}

func preferMet(prefer string, codes []int) bool {
	var finals []int
	for _, c := range codes {
		if c >= 200 {
			finals = append(finals, c)
		}
	}
	for _, alt := range strings.Split(prefer, "|") {
		switch {
		case alt == "none" && len(codes) == 0, alt == "closed" && len(codes) == 0:
			return true
		case strings.HasSuffix(alt, "xx"):
			for _, c := range finals {
				if strconv.Itoa(c)[0] == alt[0] {
					return true
				}
			}
		default:
			for _, c := range finals {
				if strconv.Itoa(c) == alt {
					return true
				}
			}
		}
	}
	return false
}
