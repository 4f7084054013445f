package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

func sippDir(t *testing.T) string { return filepath.Join(repoRoot(t), "testdata", "sipp") }

// repoRoot is the repository's top directory (tests run in cmd/sori).
func repoRoot(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// usersYAML lists n static users user0000.. with password "pw"+name, and the SIPp CSV for them.
func usersYAML(n int) (yaml, csv string) {
	var y, c strings.Builder
	y.WriteString("users:\n")
	c.WriteString("SEQUENTIAL\n")
	for i := range n {
		u := fmt.Sprintf("user%04d", i)
		fmt.Fprintf(&y, "  - {name: %s, password: pw%s}\n", u, u)
		fmt.Fprintf(&c, "%s;pw%s;[authentication username=%s password=pw%s]\n", u, u, u, u)
	}
	return y.String(), c.String()
}

// The acceptance scenario: 500 users register with digest auth against
// sori backed by a real Redis, zero failures, then all un-register.
func TestSIPpRegister500UsersWithRedis(t *testing.T) {
	rs := redistest.Start(t)
	users, csv := usersYAML(500)
	n := startNode(t, nodeConfig{store: rs.URL(), extra: users})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "users.csv"), []byte(csv), 0o600); err != nil {
		t.Fatal(err)
	}
	common := []string{n.addr(), "-inf", "users.csv", "-key", "domain", "sori.test", "-i", "127.0.0.1",
		"-p", strconv.Itoa(freeSIPPort(t)), "-m", "500", "-r", "250", "-l", "100", "-nostdin", "-trace_err", "-timeout", "60s"}
	runSipp(t, dir, 90*time.Second, append(common, "-sf", filepath.Join(sippDir(t), "register.xml"),
		"-key", "contact", "127.0.0.1:5099", "-key", "expires", "3600")...)

	raw := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer raw.Close()
	ctx := t.Context()
	st := redisstore.New(raw, "")
	if got, err := st.Count(ctx, time.Now()); err != nil || got != 500 {
		t.Fatalf("Redis holds %d bindings (%v), want 500", got, err)
	}
	bs, err := st.Lookup(ctx, "user0123@sori.test", time.Now())
	if err != nil || len(bs) != 1 || bs[0].Contact != "sip:user0123@127.0.0.1:5099" || bs[0].Transport != "udp" || !strings.HasPrefix(bs[0].Source, "127.0.0.1:") {
		t.Fatalf("user0123 binding: %+v, %v", bs, err)
	}
	if ttl := raw.PTTL(ctx, st.IndexKey("user0123@sori.test")).Val(); ttl < 3500*time.Second {
		t.Fatalf("binding TTL in Redis = %v", ttl)
	}

	runSipp(t, dir, 90*time.Second, append(common, "-sf", filepath.Join(sippDir(t), "unregister.xml"))...)
	if got, err := st.Count(ctx, time.Now()); err != nil || got != 0 {
		t.Fatalf("after un-register Redis holds %d bindings (%v)", got, err)
	}
	code, metrics := httpGet(t, "http://"+n.http+"/metrics")
	if code != 200 || !strings.Contains(metrics, `sori_registrations_total{result="ok"} 1000`) {
		t.Fatalf("metrics do not count 1000 successful REGISTERs:\n%s", grep(metrics, "sori_registrations_total"))
	}
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestRegisterOverUDPAndTCPRecordsWhereItCameFrom(t *testing.T) {
	rs := redistest.Start(t)
	n := startNode(t, nodeConfig{store: rs.URL()})
	st := redisstore.New(redis.NewClient(&redis.Options{Addr: rs.Addr}), "")
	defer st.Close()
	for _, tr := range []string{"udp", "tcp"} {
		c := dialSIP(t, tr, n.addr())
		// The phone believes it is at a private address; sori must keep where the packets came from.
		res := c.registerAuth("alice", "alice-secret", "nat-"+tr, 1, "Contact: <sip:alice@192.168.1.20:5060;transport="+tr+">", "Expires: 600")
		if res.StatusCode != 200 {
			t.Fatalf("%s: %d %s", tr, res.StatusCode, res.Reason)
		}
		if via := res.Via(); via == nil || !via.Params.Has("received") && tr == "udp" {
			t.Errorf("%s: response Via lacks received: %v", tr, res.Via())
		}
		bs, err := st.Lookup(t.Context(), "alice@sori.test", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, b := range bs {
			if b.Contact == "sip:alice@192.168.1.20:5060;transport="+tr {
				found = true
				if b.Source != c.local || b.Transport != tr {
					t.Errorf("%s: stored source %s/%s, want %s/%s", tr, b.Source, b.Transport, c.local, tr)
				}
			}
		}
		if !found {
			t.Fatalf("%s: binding not stored: %+v", tr, bs)
		}
	}
}

func TestRestartWithRedisKeepsBindings(t *testing.T) {
	rs := redistest.Start(t)
	port := freeSIPPort(t)
	first := startNode(t, nodeConfig{store: rs.URL(), port: port})
	c := dialSIP(t, "udp", first.addr())
	if res := c.registerAuth("alice", "alice-secret", "restart-1", 1, "Contact: <sip:alice@10.9.8.7:5060>", "Expires: 3600"); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	first.stop()

	second := startNode(t, nodeConfig{store: rs.URL(), port: port})
	c = dialSIP(t, "udp", second.addr())
	res := c.registerAuth("alice", "alice-secret", "restart-query", 1) // no Contact: a query
	if got := contactValues(res); res.StatusCode != 200 || len(got) != 1 || !strings.HasPrefix(got[0], "<sip:alice@10.9.8.7:5060>;expires=") {
		t.Fatalf("after restart: %d %q", res.StatusCode, got)
	}
}

func TestRedisOutageAnswers503AndRecovers(t *testing.T) {
	rs := redistest.Start(t)
	n := startNode(t, nodeConfig{store: rs.URL()})
	c := dialSIP(t, "udp", n.addr())
	if res := c.registerAuth("alice", "alice-secret", "outage-0", 1, "Contact: <sip:alice@10.0.0.1>"); res.StatusCode != 200 {
		t.Fatalf("before outage: %d", res.StatusCode)
	}
	rs.Stop()
	start := time.Now()
	res := c.registerAuth("alice", "alice-secret", "outage-1", 1, "Contact: <sip:alice@10.0.0.1>")
	if res.StatusCode != 503 {
		t.Fatalf("Redis down: got %d %s, want 503", res.StatusCode, res.Reason)
	}
	if ra := res.GetHeader("Retry-After"); ra == nil || ra.Value() != "5" {
		t.Fatalf("503 without Retry-After: 5: %v", ra)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the 503 took %v: REGISTER must not hang on a dead store", took)
	}
	if code, _ := httpGet(t, "http://"+n.http+"/healthz"); code != 503 {
		t.Errorf("/healthz with Redis down: %d", code)
	}
	rs.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for i := 2; ; i++ {
		res = c.registerAuth("alice", "alice-secret", fmt.Sprintf("outage-%d", i), 1, "Contact: <sip:alice@10.0.0.1>")
		if res.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sori did not recover after Redis came back: %d", res.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _ := httpGet(t, "http://"+n.http+"/healthz"); code != 200 {
		t.Errorf("/healthz after recovery: %d", code)
	}
}

func TestOptionsAndUnknownMethod(t *testing.T) {
	n := startNode(t, nodeConfig{})
	for _, tr := range []string{"udp", "tcp"} {
		c := dialSIP(t, tr, n.addr())
		via := fmt.Sprintf("Via: SIP/2.0/%s %s;branch=z9hG4bK-opt-%s;rport", strings.ToUpper(tr), c.local, tr)
		res := c.do("OPTIONS sip:127.0.0.1 SIP/2.0\n" + via + "\nMax-Forwards: 70\nFrom: <sip:probe@sori.test>;tag=1\nTo: <sip:127.0.0.1>\nCall-ID: opt-" + tr + "\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n")
		if res.StatusCode != 200 {
			t.Fatalf("%s OPTIONS: %d", tr, res.StatusCode)
		}
		for _, h := range []string{"Allow", "Accept", "Supported"} {
			if res.GetHeader(h) == nil {
				t.Errorf("%s OPTIONS 200 lacks %s", tr, h)
			}
		}
		if allow := res.GetHeader("Allow").Value(); !strings.Contains(allow, "REGISTER") || !strings.Contains(allow, "OPTIONS") {
			t.Errorf("Allow = %q", allow)
		}
		via = strings.Replace(via, "-opt-", "-foo-", 1)
		res = c.do("FOO sip:sori.test SIP/2.0\n" + via + "\nMax-Forwards: 70\nFrom: <sip:probe@sori.test>;tag=1\nTo: <sip:sori.test>\nCall-ID: foo-" + tr + "\nCSeq: 1 FOO\nContent-Length: 0\n\n")
		if res.StatusCode != 405 || res.GetHeader("Allow") == nil {
			t.Fatalf("%s unknown method: %d, Allow %v", tr, res.StatusCode, res.GetHeader("Allow"))
		}
		via = strings.Replace(via, "-foo-", "-req-", 1)
		res = c.do("OPTIONS sip:127.0.0.1 SIP/2.0\n" + via + "\nMax-Forwards: 70\nFrom: <sip:probe@sori.test>;tag=1\nTo: <sip:127.0.0.1>\nCall-ID: req-" + tr + "\nCSeq: 1 OPTIONS\nRequire: nosuchext\nContent-Length: 0\n\n")
		if res.StatusCode != 420 || res.GetHeader("Unsupported") == nil {
			t.Fatalf("%s Require: nosuchext: %d", tr, res.StatusCode)
		}
	}
}

func TestIntervalTooBriefAndClamp(t *testing.T) {
	n := startNode(t, nodeConfig{})
	c := dialSIP(t, "udp", n.addr())
	res := c.registerAuth("alice", "alice-secret", "brief", 1, "Contact: <sip:alice@10.0.0.1>", "Expires: 10")
	if res.StatusCode != 423 || res.GetHeader("Min-Expires") == nil || res.GetHeader("Min-Expires").Value() != "60" {
		t.Fatalf("Expires 10: %d, Min-Expires %v", res.StatusCode, res.GetHeader("Min-Expires"))
	}
	res = c.registerAuth("alice", "alice-secret", "long", 1, "Contact: <sip:alice@10.0.0.1>", "Expires: 999999")
	if got := contactValues(res); res.StatusCode != 200 || len(got) != 1 || got[0] != "<sip:alice@10.0.0.1>;expires=3600" {
		t.Fatalf("Expires 999999: %d %q", res.StatusCode, got)
	}
}

func TestUserCommandsWithRedis(t *testing.T) {
	rs := redistest.Start(t)
	n := startNode(t, nodeConfig{store: rs.URL()})
	sori := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(binary(t), append([]string{"-config", n.cfgPath}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := sori("", "user", "add", "carol", "--password", "carol-pw", "--number", "+821077778888"); err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	if out, err := sori("dave-pw\n", "user", "add", "dave"); err != nil {
		t.Fatalf("user add from stdin: %v\n%s", err, out)
	}
	if out, err := sori("", "user", "add", "erin", "--password", "x", "--number", "+821077778888"); err == nil || !strings.Contains(out, "carol's number") {
		t.Fatalf("a number given twice: %v\n%s", err, out)
	}
	if out, err := sori("", "user", "add", "erin", "--password", "x", "--number", "01077778888"); err == nil {
		t.Fatalf("a number not in E.164 was taken:\n%s", out)
	}
	out, err := sori("", "user", "list")
	if err != nil || !strings.Contains(out, "carol") || !strings.Contains(out, "+821077778888") || !strings.Contains(out, "dave") || !strings.Contains(out, "alice") {
		t.Fatalf("user list: %v\n%s", err, out)
	}
	// Only HA1 hashes are stored, never the password.
	raw := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer raw.Close()
	fields := raw.HGetAll(context.Background(), "sori:sub:{carol}").Val()
	if len(fields["ha1_md5"]) != 32 || len(fields["ha1_sha256"]) != 64 {
		t.Fatalf("stored subscriber %v", fields)
	}
	for k, v := range fields {
		if strings.Contains(v, "carol-pw") {
			t.Fatalf("password stored in field %s", k)
		}
	}

	c := dialSIP(t, "udp", n.addr())
	for _, u := range [][2]string{{"carol", "carol-pw"}, {"dave", "dave-pw"}} {
		if res := c.registerAuth(u[0], u[1], "cli-"+u[0], 1, "Contact: <sip:"+u[0]+"@10.0.0.1>"); res.StatusCode != 200 {
			t.Fatalf("%s registers: %d", u[0], res.StatusCode)
		}
	}
	// A number in the store reaches its user: alice (authenticated) sends
	// carol's number a MESSAGE, and carol's phone (behind NAT: reached at
	// the socket it registered from) gets it.
	alice := newUA(t, n, "udp", "alice")
	alice.authenticated("MESSAGE", "sip:+821077778888@sori.test")
	if req := c.readRequest(); req.Method != "MESSAGE" || req.Recipient.User != "carol" {
		t.Fatalf("carol's phone got %s %s", req.Method, req.Recipient.String())
	} else {
		c.respond(req, 200, "OK")
	}
	if res := alice.final(); res.StatusCode != 200 {
		t.Fatalf("MESSAGE to carol's number: %d", res.StatusCode)
	}
	if out, err := sori("", "user", "del", "carol"); err != nil {
		t.Fatalf("user del: %v\n%s", err, out)
	}
	if res := c.registerAuth("carol", "carol-pw", "cli-carol-2", 1, "Contact: <sip:carol@10.0.0.1>"); res.StatusCode != 401 {
		t.Fatalf("deleted user still registers: %d", res.StatusCode)
	}
	if out, err := sori("", "user", "del", "carol"); err == nil {
		t.Fatalf("deleting a missing user succeeded:\n%s", out)
	}
}

func TestUserCommandWithMemoryStoreExplains(t *testing.T) {
	cmd := exec.Command(binary(t), "user", "add", "x", "--password", "y")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "registrar.store is memory") {
		t.Fatalf("err=%v out=%s", err, out)
	}
}

func TestBadConfigNamesKeyAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("sip:\n  domain: sori.test\nregistrar:\n  min_expires: 600\n  max_expires: 60\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary(t), "-config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bad.yaml:5: registrar.max_expires") {
		t.Fatalf("err=%v out=%s", err, out)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	n := startNode(t, nodeConfig{})
	c := dialSIP(t, "udp", n.addr())
	c.registerAuth("alice", "alice-secret", "m1", 1, "Contact: <sip:alice@10.0.0.1>")
	c.registerAuth("alice", "wrong", "m2", 1, "Contact: <sip:alice@10.0.0.1>")
	code, body := httpGet(t, "http://"+n.http+"/metrics")
	if code != 200 {
		t.Fatal(code)
	}
	for _, want := range []string{
		`sori_registrations_total{result="ok"} 1`,
		`sori_registrations_total{result="challenged"} 2`,
		`sori_registrations_total{result="auth_failed"} 1`,
		`sori_auth_failures_total{reason="mismatch"} 1`,
		`sori_bindings 1`,
		`sori_sip_request_duration_seconds_count{method="REGISTER"} 4`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, grep(body, "sori_"))
		}
	}
	if code, body := httpGet(t, "http://"+n.http+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
}
