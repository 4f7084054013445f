package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	client "github.com/icholy/digest"
	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/abuse/bans"
)

// udpFrom is a UA socket bound to a loopback address of its own (127.0.0.N),
// so sori sees a source other than the rest of the test.
type udpFrom struct {
	t     *testing.T
	conn  *net.UDPConn
	local string
	seq   int
}

func dialUDPFrom(t *testing.T, localIP, addr string) *udpFrom {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(localIP)}, raddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpFrom{t: t, conn: c, local: c.LocalAddr().String()}
}

func crlf(raw string) []byte {
	return []byte(strings.ReplaceAll(strings.ReplaceAll(raw, "\r\n", "\n"), "\n", "\r\n"))
}

// transact sends raw and returns the final response with that Call-ID and
// CSeq, retransmitting every 500 ms as a UA does (RFC 3261 timer E); nil
// when none came within wait.
func (u *udpFrom) transact(raw, callID string, cseq int, wait time.Duration) *sip.Response {
	u.t.Helper()
	deadline := time.Now().Add(wait)
	buf := make([]byte, 65535)
	for next := time.Now(); time.Now().Before(deadline); {
		if !time.Now().Before(next) {
			if _, err := u.conn.Write(crlf(raw)); err != nil {
				u.t.Fatal(err)
			}
			next = time.Now().Add(500 * time.Millisecond)
		}
		_ = u.conn.SetReadDeadline(minTime(next, deadline))
		n, err := u.conn.Read(buf)
		if err != nil {
			continue
		}
		msg, err := sip.ParseMessage(buf[:n])
		res, ok := msg.(*sip.Response)
		if err != nil || !ok || res.StatusCode < 200 || res.CallID().Value() != callID || int(res.CSeq().SeqNo) != cseq {
			continue
		}
		return res
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (u *udpFrom) options(callID, ua string) string {
	u.seq++
	uaLine := ""
	if ua != "" {
		uaLine = "User-Agent: " + ua + "\n"
	}
	return fmt.Sprintf("OPTIONS sip:sori.test SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-o%d-%s;rport\nMax-Forwards: 70\n"+
		"From: <sip:probe@example.invalid>;tag=o%d\nTo: <sip:sori.test>\nCall-ID: %s\nCSeq: 1 OPTIONS\n%sContent-Length: 0\n\n",
		u.local, u.seq, callID, u.seq, callID, uaLine)
}

// registration is one REGISTER -> 401 -> REGISTER with digest -> 200 from u.
func (u *udpFrom) registration(user, password, callID string) (*sip.Response, error) {
	reg := func(cseq int, extra string) string {
		u.seq++
		return fmt.Sprintf("REGISTER sip:sori.test SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-r%d-%s;rport\nMax-Forwards: 70\n"+
			"From: <sip:%s@sori.test>;tag=r%d\nTo: <sip:%s@sori.test>\nCall-ID: %s\nCSeq: %d REGISTER\nContact: <sip:%s@%s>\nExpires: 600\n%sContent-Length: 0\n\n",
			u.local, u.seq, callID, user, u.seq, user, callID, cseq, user, u.local, extra)
	}
	res := u.transact(reg(1, ""), callID, 1, 5*time.Second)
	if res == nil || res.StatusCode != 401 {
		return res, fmt.Errorf("first REGISTER: %v", res)
	}
	ch, err := client.ParseChallenge(res.GetHeader("WWW-Authenticate").Value())
	if err != nil {
		return nil, err
	}
	cr, err := client.Digest(ch, client.Options{Method: "REGISTER", URI: "sip:sori.test", Username: user, Password: password})
	if err != nil {
		return nil, err
	}
	res = u.transact(reg(2, "Authorization: "+cr.String()+"\n"), callID, 2, 5*time.Second)
	if res == nil {
		return nil, fmt.Errorf("no answer to the authenticated REGISTER")
	}
	return res, nil
}

// metricValue reads one sample of sori's /metrics (0 when absent).
func metricValue(t *testing.T, n *node, sample string) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+n.http+"/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// waitMetric waits until sample reaches want.
func waitMetric(t *testing.T, n *node, sample string, want float64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); metricValue(t, n, sample) < want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed at %v, want %v", sample, metricValue(t, n, sample), want)
		}
	}
}

func listBans(t *testing.T, n *node) []bans.Ban {
	t.Helper()
	code, body := httpGet(t, "http://"+n.http+"/bans")
	if code != 200 {
		t.Fatalf("GET /bans: %d %s", code, body)
	}
	var out []bans.Ban
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("GET /bans: %v\n%s", err, body)
	}
	return out
}

func findBan(bs []bans.Ban, addr string) (bans.Ban, bool) {
	for _, b := range bs {
		if b.Address.String() == addr {
			return b, true
		}
	}
	return bans.Ban{}, false
}

// noAnswer sends raw from u and requires that sori drops it: the drop is
// seen in the metric, and no response to it arrives.
func noAnswer(t *testing.T, n *node, u *udpFrom, raw, callID, sample string) {
	t.Helper()
	before := metricValue(t, n, sample)
	if _, err := u.conn.Write(crlf(raw)); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, n, sample, before+1)
	_ = u.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 65535)
	for {
		k, err := u.conn.Read(buf)
		if err != nil {
			return // nothing came
		}
		if strings.Contains(string(buf[:k]), callID) {
			t.Fatalf("a dropped request was answered:\n%s", buf[:k])
		}
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// The acceptance scenario: SIPp guesses passwords at 5000 REGISTER/s
// from 127.0.0.2; that source is banned within a second, while alice keeps
// registering from 127.0.0.3 with a p99 under 50 ms.
func TestPasswordGuessingFloodIsBanned(t *testing.T) {
	if _, err := exec.LookPath("sipp"); err != nil {
		t.Fatalf("sipp is not installed (make test installs sip-tester): %v", err)
	}
	n := startNode(t, nodeConfig{})
	dir := t.TempDir()
	var csv strings.Builder
	csv.WriteString("SEQUENTIAL\n")
	for i := range 100 {
		fmt.Fprintf(&csv, "user%03d;guess%d;[authentication username=user%03d password=guess%d]\n", i, i, i, i)
	}
	csv.WriteString("alice;guess;[authentication username=alice password=guess]\n")
	if err := os.WriteFile(filepath.Join(dir, "guesses.csv"), []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	legit := dialUDPFrom(t, "127.0.0.3", n.addr())
	if res, err := legit.registration("alice", "alice-secret", "legit-0"); err != nil || res.StatusCode != 200 {
		t.Fatalf("alice before the flood: %v %v", res, err)
	}

	// 2500 scenarios/s, each two REGISTERs: 5000 REGISTER/s for 2 s.
	sipp := exec.Command("timeout", "-k", "5", "30", "sipp", n.addr(), "-sf", filepath.Join(sippDir(t), "register-wrong-password.xml"),
		"-inf", "guesses.csv", "-key", "domain", "sori.test", "-key", "contact", "127.0.0.2:5099", "-key", "expires", "600",
		"-i", "127.0.0.2", "-p", strconv.Itoa(freeSIPPort(t)), "-r", "2500", "-m", "5000", "-l", "5000",
		"-recv_timeout", "1000", "-timeout", "20s", "-nostdin", "-buff_size", "4194304")
	sipp.Dir = dir
	sipp.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var sippOut strings.Builder
	sipp.Stdout, sipp.Stderr = &sippOut, &sippOut
	start := time.Now()
	if err := sipp.Start(); err != nil {
		t.Fatal(err)
	}
	sippDone := make(chan struct{})
	go func() { _ = sipp.Wait(); close(sippDone) }()
	t.Cleanup(func() { _ = sipp.Process.Kill(); <-sippDone })

	// The ban, as GET /bans shows it.
	banSeen := make(chan time.Duration, 1)
	var ban bans.Ban
	go func() {
		for time.Since(start) < 10*time.Second {
			code, body := httpGetQuiet("http://" + n.http + "/bans")
			var bs []bans.Ban
			if code == 200 && json.Unmarshal([]byte(body), &bs) == nil {
				if b, ok := findBan(bs, "127.0.0.2"); ok {
					ban = b
					banSeen <- time.Since(start)
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		close(banSeen)
	}()

	// Alice registers again and again while the flood lasts.
	var lat []time.Duration
	for i := 1; ; i++ {
		select {
		case <-sippDone:
		default:
			t0 := time.Now()
			res, err := legit.registration("alice", "alice-secret", "legit-"+strconv.Itoa(i))
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("alice's registration %d during the flood: %v %v", i, res, err)
			}
			lat = append(lat, time.Since(t0))
			time.Sleep(5 * time.Millisecond)
			continue
		}
		break
	}
	floodFor := time.Since(start)
	after, ok := <-banSeen
	if !ok {
		t.Fatalf("127.0.0.2 never appeared in /bans:\n%s", tail(sippOut.String(), 2000))
	}
	p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
	t.Logf("flood of 5000 REGISTER/s with wrong passwords from 127.0.0.2 (SIPp ran %v): banned %v after the flood began (in /bans; the ban says since +%v), reason %q",
		floodFor.Round(time.Millisecond), after.Round(time.Millisecond), ban.Since.Sub(start).Round(time.Millisecond), ban.Reason)
	t.Logf("alice from 127.0.0.3 meanwhile: %d registrations (REGISTER, 401, REGISTER, 200), all 200; p50 %v, p99 %v",
		len(lat), p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond))
	if after > time.Second {
		t.Errorf("the flooding source was banned only after %v, want within 1 s", after)
	}
	if p99 >= 50*time.Millisecond {
		t.Errorf("alice's registrations: p99 %v, want under 50 ms", p99)
	}
	if len(lat) < 20 {
		t.Errorf("only %d registrations during the flood", len(lat))
	}
	if ban.Until.Sub(ban.Since) < 14*time.Minute || ban.Node == "" {
		t.Errorf("ban %+v: want security.auth_failures.ban_time (15m) or the rate limit's, with the node", ban)
	}
	dropped := metricValue(t, n, `sori_abuse_dropped_total{reason="banned"}`)
	t.Logf("sori dropped %.0f REGISTERs from the banned source (SIPp sent for 2 s, then waited for answers)", dropped)
	if dropped < 5000 {
		t.Errorf("only %v of the flood's requests were dropped as banned", dropped)
	}

	// A banned source gets no answer at all; alice still does.
	banned := dialUDPFrom(t, "127.0.0.2", n.addr())
	noAnswer(t, n, banned, banned.options("banned-probe", ""), "banned-probe", `sori_abuse_dropped_total{reason="banned"}`)
	if res, err := legit.registration("alice", "alice-secret", "legit-after"); err != nil || res.StatusCode != 200 {
		t.Fatalf("alice after the flood: %v %v", res, err)
	}
}

// A flood of 5000 OPTIONS/s that authenticates nothing is over the rate
// limit (1000/s, burst 2000) and banned, once past the burst; a trusted
// network's equal flood is not limited at all. When in the flood the ban
// comes is read in requests sent, not in time: on a loaded machine sori
// reads the flood late, and the limiter's timing has its own tests
// (sip/abuse).
func TestRequestFloodIsRateLimited(t *testing.T) {
	n := startNode(t, nodeConfig{extra: "security:\n  trusted: [\"127.0.0.10/32\"]\n"})
	// flood sends 5000 OPTIONS/s for up to d, and says how many it had
	// sent when /bans first listed localIP (-1: never), stopping then.
	flood := func(localIP string, d time.Duration) (sent, sentAtBan int) {
		u := dialUDPFrom(t, localIP, n.addr())
		start := time.Now()
		sentAtBan = -1
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		var polled time.Time
		for time.Since(start) < d {
			<-tick.C
			for want := int(time.Since(start).Seconds() * 5000); sent < want; sent++ {
				if _, err := u.conn.Write(crlf(u.options("flood-"+strconv.Itoa(sent), ""))); err != nil {
					t.Fatal(err)
				}
			}
			if time.Since(polled) > 10*time.Millisecond {
				polled = time.Now()
				if code, body := httpGetQuiet("http://" + n.http + "/bans"); code == 200 && strings.Contains(body, `"`+localIP+`"`) {
					return sent, sent
				}
			}
		}
		return sent, -1
	}
	sent, atBan := flood("127.0.0.9", 10*time.Second)
	t.Logf("5000 OPTIONS/s from 127.0.0.9: banned when %d had been sent", atBan)
	if atBan < 0 {
		t.Fatalf("the flooding source was not banned after %d requests", sent)
	}
	if atBan < 2000 {
		t.Fatalf("the flooding source was banned after %d requests, within the burst of 2000", atBan)
	}
	b, _ := findBan(listBans(t, n), "127.0.0.9")
	if b.Reason != "rate limit" || b.Until.Sub(b.Since) != time.Minute {
		t.Fatalf("ban %+v", b)
	}
	if v := metricValue(t, n, `sori_abuse_bans_total{reason="rate_limit"}`); v != 1 {
		t.Fatalf("sori_abuse_bans_total{reason=\"rate_limit\"} = %v", v)
	}
	if sent, atBan := flood("127.0.0.10", 1500*time.Millisecond); atBan >= 0 || sent < 5000 {
		t.Fatalf("a trusted source's flood: %d sent, banned after %d", sent, atBan)
	}
	u := dialUDPFrom(t, "127.0.0.10", n.addr())
	if res := u.transact(u.options("trusted-after", ""), "trusted-after", 1, 3*time.Second); res == nil || res.StatusCode != 200 {
		t.Fatalf("the trusted source after its flood: %v", res)
	}
}

// A known scanner's OPTIONS gets no answer; a phone's OPTIONS from the same
// address gets 200.
func TestScannerIsNotAnswered(t *testing.T) {
	n := startNode(t, nodeConfig{})
	u := dialUDPFrom(t, "127.0.0.4", n.addr())
	noAnswer(t, n, u, u.options("scan-1", "friendly-scanner"), "scan-1", `sori_abuse_dropped_total{reason="scanner"}`)
	noAnswer(t, n, u, u.options("scan-2", "sipcli/v1.8"), "scan-2", `sori_abuse_dropped_total{reason="scanner"}`)
	if res := u.transact(u.options("phone-1", "Linphone/5.2.0 (belle-sip/5.2.0)"), "phone-1", 1, 3*time.Second); res == nil || res.StatusCode != 200 {
		t.Fatalf("a phone's OPTIONS: %v", res)
	}
}

func soriCLI(t *testing.T, n *node, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary(t), append([]string{"-config", n.cfgPath, "ban"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("sori ban %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// sori ban add/list/remove through the binary: with the memory store it
// talks to the running node's HTTP API, with Redis it writes Redis and the
// node learns the change by pub/sub.
func TestBanCommand(t *testing.T) {
	for _, tt := range []struct {
		name, store string
		src         string
	}{
		{"memory", "memory", "127.0.0.5"},
		{"redis", "redis", "127.0.0.6"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var rs *redistest.Server
			cfg := nodeConfig{}
			if tt.store == "redis" {
				rs = redistest.Start(t)
				cfg.store = rs.URL()
			}
			n := startNode(t, cfg)
			u := dialUDPFrom(t, tt.src, n.addr())
			if res := u.transact(u.options("before", ""), "before", 1, 3*time.Second); res == nil || res.StatusCode != 200 {
				t.Fatalf("OPTIONS before the ban: %v", res)
			}

			out := soriCLI(t, n, "add", tt.src, "-for", "1h", "-reason", "seen in the logs")
			if !strings.Contains(out, "banned "+tt.src) {
				t.Fatalf("sori ban add: %s", out)
			}
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if _, ok := findBan(listBans(t, n), tt.src); ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the node does not list the ban: %+v", listBans(t, n))
				}
			}
			b, _ := findBan(listBans(t, n), tt.src)
			if b.Reason != "seen in the logs" || b.Until.Sub(b.Since) != time.Hour {
				t.Fatalf("/bans has %+v", b)
			}
			if rs != nil {
				raw := redis.NewClient(&redis.Options{Addr: rs.Addr})
				defer raw.Close()
				if score, err := raw.ZScore(t.Context(), bans.IndexKey, tt.src).Result(); err != nil || int64(score) != b.Until.UnixMilli() {
					t.Fatalf("Redis %s %s: %v %v", bans.IndexKey, tt.src, score, err)
				}
			}
			list := soriCLI(t, n, "list")
			if !strings.Contains(list, tt.src) || !strings.Contains(list, "seen in the logs") {
				t.Fatalf("sori ban list:\n%s", list)
			}
			noAnswer(t, n, u, u.options("during", ""), "during", `sori_abuse_dropped_total{reason="banned"}`)

			if out := soriCLI(t, n, "remove", tt.src); !strings.Contains(out, "unbanned "+tt.src) {
				t.Fatalf("sori ban remove: %s", out)
			}
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if _, ok := findBan(listBans(t, n), tt.src); !ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the node still lists the removed ban")
				}
			}
			if list := soriCLI(t, n, "list"); strings.Contains(list, tt.src) {
				t.Fatalf("sori ban list after remove:\n%s", list)
			}
			if res := u.transact(u.options("after", ""), "after", 1, 3*time.Second); res == nil || res.StatusCode != 200 {
				t.Fatalf("OPTIONS after the ban was lifted: %v", res)
			}
		})
	}
	// Bad input is refused with a reason.
	n := startNode(t, nodeConfig{})
	for _, args := range [][]string{{"add", "not-an-ip"}, {"add", "127.0.0.7", "-for", "soon"}, {"remove"}} {
		out, err := exec.Command(binary(t), append([]string{"-config", n.cfgPath, "ban"}, args...)...).CombinedOutput()
		if err == nil {
			t.Errorf("sori ban %v succeeded:\n%s", args, out)
		}
	}
}

// tollGateway is a carrier gateway: OPTIONS 200; the n-th INVITE, by
// act(n), rings (180) until it is cancelled (200, then 487), is answered
// (200), or is busy (486). Other requests (BYE) get 200.
type tollGateway struct {
	conn    *net.UDPConn
	invites chan *sip.Request
}

func startTollGateway(t *testing.T, port int, act func(n int) string) *tollGateway {
	t.Helper()
	g := &tollGateway{invites: make(chan *sip.Request, 16)}
	ringing := map[string]*sip.Request{} // Call-ID -> INVITE; the peer serves one request at a time
	invites := 0
	g.conn = fakeUDPPeer(t, port, func(req *sip.Request, send func(*sip.Response)) {
		switch {
		case req.IsInvite():
			invites++
			g.invites <- req
			switch act(invites) {
			case "answer":
				res := sip.NewResponseFromRequest(req, 200, "OK", nil)
				res.To().Params.Add("tag", "gw")
				res.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<sip:gw@127.0.0.1:%d>", port)))
				res.SetBody(nil)
				send(res)
				return
			case "ring":
				res := sip.NewResponseFromRequest(req, 180, "Ringing", nil)
				res.To().Params.Add("tag", "gw")
				res.SetBody(nil)
				send(res)
				ringing[req.CallID().Value()] = req
				return
			}
			res := sip.NewResponseFromRequest(req, 486, "Busy Here", nil)
			res.SetBody(nil)
			send(res)
		case req.IsCancel():
			ok := sip.NewResponseFromRequest(req, 200, "OK", nil)
			ok.SetBody(nil)
			send(ok)
			if inv := ringing[req.CallID().Value()]; inv != nil {
				res := sip.NewResponseFromRequest(inv, 487, "Request Terminated", nil)
				res.To().Params.Add("tag", "gw")
				res.SetBody(nil)
				send(res)
				delete(ringing, req.CallID().Value())
			}
		default:
			res := sip.NewResponseFromRequest(req, 200, "OK", nil)
			res.SetBody(nil)
			send(res)
		}
	})
	return g
}

// call starts an authenticated INVITE from u to ruri and returns the
// request it sent with credentials (for a CANCEL).
func (u *ua) call(ruri string) string {
	u.t.Helper()
	u.calls++
	callID := fmt.Sprintf("toll-%s-%d@test", u.user, u.calls)
	first := u.request("INVITE", ruri, callID, 1)
	res := u.do(first)
	if res.StatusCode != 407 {
		u.t.Fatalf("INVITE %s: want 407 first, got %d %s", ruri, res.StatusCode, res.Reason)
	}
	u.send(ackFor(first, res))
	cr := digestFor(u.t, res, "Proxy-Authenticate", "INVITE", ruri, u.user, u.password)
	second := u.request("INVITE", ruri, callID, 2, "Proxy-Authorization: "+cr)
	u.send(second)
	return second
}

// cancelOf is the CANCEL of an INVITE we sent (same Via branch, Call-ID,
// From, To and CSeq number).
func cancelOf(invite string) string {
	head, _, _ := strings.Cut(invite, "\n\n")
	var b strings.Builder
	for _, line := range strings.Split(head, "\n") {
		switch {
		case strings.HasPrefix(line, "INVITE "):
			b.WriteString("CANCEL " + strings.TrimPrefix(line, "INVITE ") + "\n")
		case strings.HasPrefix(line, "CSeq:"):
			b.WriteString("CSeq: " + strings.Fields(line)[1] + " CANCEL\n")
		case strings.HasPrefix(line, "Proxy-Authorization:"), strings.HasPrefix(line, "Contact:"),
			strings.HasPrefix(line, "Content-"):
		default:
			b.WriteString(line + "\n")
		}
	}
	return b.String() + "Content-Length: 0\n\n"
}

// Toll-fraud caps: alice may have one trunk call at a time and four an
// hour. A second call while the first rings, or while one is answered,
// gets 403 naming the limit; CANCEL, a failure and BYE each free the place;
// the fifth call of the hour gets 403 naming the hourly limit. Bob (the
// default limits) is not affected.
func TestTollFraudCaps(t *testing.T) {
	gwPort := freeSIPPort(t)
	an := startAnchor(t)
	n := startNode(t, nodeConfig{extra: fmt.Sprintf(`media: {anchors: [%q]}
trunks:
  - name: carrier-a
    gateways: [{address: "udp:127.0.0.1:%d"}]
routes:
  - {prefix: "+82", trunks: [carrier-a]}
users:
  - {name: alice, password: alice-secret, numbers: ["+821011112222"], toll: {max_calls: 1, calls_per_hour: 4}}
  - {name: bob, password: bob-secret, numbers: ["+821055556666"]}
`, an.ng, gwPort)})
	gw := startTollGateway(t, gwPort, func(n int) string {
		switch n {
		case 2:
			return "busy"
		case 3:
			return "answer"
		}
		return "ring"
	})

	alice := newUA(t, n, "udp", "alice")
	reached := func(what string) {
		t.Helper()
		select {
		case <-gw.invites:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the gateway got no INVITE", what)
		}
	}
	refused := func(what, reason string) {
		t.Helper()
		alice.call("sip:+821099990000@sori.test")
		res := alice.final()
		if res.StatusCode != 403 || res.Reason != reason {
			t.Fatalf("%s: %d %q, want 403 %q", what, res.StatusCode, res.Reason, reason)
		}
	}
	ringing := func(what string) string {
		t.Helper()
		inv := alice.call("sip:+821099990001@sori.test")
		reached(what)
		for {
			if res := alice.read(); res.StatusCode == 180 {
				return inv
			} else if res.StatusCode >= 200 {
				t.Fatalf("%s: %d %s", what, res.StatusCode, res.Reason)
			}
		}
	}
	cancel := func(u *ua, inv string) {
		t.Helper()
		u.send(cancelOf(inv))
		got := map[string]int{}
		for len(got) < 2 {
			res := u.read()
			got[res.CSeq().MethodName.String()] = res.StatusCode
		}
		if got["CANCEL"] != 200 || got["INVITE"] != 487 {
			t.Fatalf("CANCEL: %v, want 200 to it and 487 to the INVITE", got)
		}
	}

	first := ringing("call 1")                                                                // hour: 1
	refused("a second call while the first rings", "Forbidden: Trunk Call Limit (1 At Once)") // not counted
	cancel(alice, first)
	alice.call("sip:+821099990002@sori.test") // hour: 2; the gateway answers 486
	reached("call 2")
	if res := alice.final(); res.StatusCode != 486 {
		t.Fatalf("call 2: %d %s", res.StatusCode, res.Reason)
	}
	alice.call("sip:+821099990003@sori.test") // hour: 3; answered
	reached("call 3 after a failed one")
	ok := alice.final()
	if ok.StatusCode != 200 {
		t.Fatalf("call 3: %d %s", ok.StatusCode, ok.Reason)
	}
	alice.send(alice.inDialog("ACK", 2, ok))
	refused("a second call while one is answered", "Forbidden: Trunk Call Limit (1 At Once)")
	alice.send(alice.inDialog("BYE", 3, ok))
	if res := alice.final(); res.StatusCode != 200 || res.CSeq().MethodName != sip.BYE {
		t.Fatalf("BYE: %d %s", res.StatusCode, res.Reason)
	}
	fourth := ringing("call 4 after a BYE") // hour: 4
	cancel(alice, fourth)
	refused("the 5th call of the hour", "Forbidden: Hourly Trunk Call Limit (4)")

	bob := newUA(t, n, "udp", "bob")
	bobs := bob.call("sip:+821099990003@sori.test")
	reached("bob's call")
	for res := bob.read(); res.StatusCode != 180; res = bob.read() {
		if res.StatusCode >= 200 {
			t.Fatalf("bob's call: %d %s", res.StatusCode, res.Reason)
		}
	}
	cancel(bob, bobs)
	for _, want := range []string{`sori_toll_limited_total{limit="concurrent"} 2`, `sori_toll_limited_total{limit="hourly"} 1`} {
		if _, body := httpGet(t, "http://"+n.http+"/metrics"); !strings.Contains(body, want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(body, "sori_toll"))
		}
	}
}
