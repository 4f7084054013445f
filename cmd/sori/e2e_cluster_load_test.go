package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

// A Redis Cluster master is killed while SIPp registers users at a steady
// rate through sori: the replica takes over, no binding is lost, and the
// only answers other than 200 are 503 with Retry-After, all inside the
// failover window.
func TestSIPpRegisterLoadThroughClusterFailover(t *testing.T) {
	const (
		users = 1000
		rate  = 300 // REGISTER transactions (401 + 200) per second
	)
	cl := redistest.StartClusterWithReplicas(t, 3, 1)
	var seeds []string
	for _, n := range cl.Nodes {
		if n.MasterID == "" {
			seeds = append(seeds, n.Addr)
		}
	}
	url := "redis-cluster://" + strings.Join(seeds, ",")
	usersY, csv := usersYAML(users)
	n := startNode(t, nodeConfig{store: url, extra: usersY})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "users.csv"), []byte(csv), 0o600); err != nil {
		t.Fatal(err)
	}
	sippArgs := func(scenario string, calls int) []string {
		return []string{n.addr(), "-sf", filepath.Join(sippDir(t), scenario), "-inf", filepath.Join(dir, "users.csv"),
			"-key", "domain", "sori.test", "-key", "contact", "127.0.0.1:5099", "-key", "expires", "3600",
			"-i", "127.0.0.1", "-p", strconv.Itoa(freeSIPPort(t)), "-m", strconv.Itoa(calls), "-r", strconv.Itoa(rate),
			"-l", "2000", "-nostdin", "-recv_timeout", "5000", "-timeout", "120s"}
	}

	// 1. Every user registers once, and every replica has the bindings.
	runSipp(t, dir, 90*time.Second, sippArgs("register.xml", users)...)
	st, err := redisstore.Open(url, redisstore.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cc := st.Client().(*redis.ClusterClient)
	for _, s := range seeds {
		for _, r := range cl.Replicas(cl.Node(s)) {
			redistest.WaitReplicated(t, s, r.Addr, 5*time.Second)
		}
	}
	if got, err := st.Count(t.Context(), time.Now()); err != nil || got != users {
		t.Fatalf("before the failover the cluster holds %d bindings (%v), want %d", got, err, users)
	}

	// 2. The same users register again and again at the same rate, until stopped.
	load := t.TempDir()
	sipp := exec.Command("sipp", append(sippArgs("register-failover.xml", 100*users),
		"-trace_logs", "-trace_err", "-trace_stat", "-stf", "stat.csv", "-fd", "1")...)
	sipp.Dir = load
	out, err := os.Create(filepath.Join(load, "sipp.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	sipp.Stdout, sipp.Stderr = out, out
	sipp.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := sipp.Start(); err != nil {
		t.Fatal(err)
	}
	var sippErr error
	sippDone := make(chan struct{}) // closed when sipp has exited; sippErr is then set
	go func() { sippErr = sipp.Wait(); close(sippDone) }()
	t.Cleanup(func() {
		select {
		case <-sippDone:
		default:
			_ = sipp.Process.Kill()
			<-sippDone
		}
	})
	const ok = `sori_registrations_total{result="ok"}`
	waitLoad := func(want float64, within time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(within); metricValue(t, n, ok) < want; time.Sleep(20 * time.Millisecond) {
			select {
			case <-sippDone:
				t.Fatalf("sipp ended early (%v):\n%s", sippErr, sippOutput(load))
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s stayed at %v, want %v", ok, metricValue(t, n, ok), want)
			}
		}
	}
	waitLoad(metricValue(t, n, ok)+2*rate, 30*time.Second) // the load is running

	// The master of user0000's slots, and every user whose bindings it holds.
	m, err := cc.MasterForKey(t.Context(), st.IndexKey("user0000@sori.test"))
	if err != nil {
		t.Fatal(err)
	}
	dead := cl.Node(m.Options().Addr)
	onDead := map[string]bool{}
	for i := range users {
		u := fmt.Sprintf("user%04d", i)
		if m, err := cc.MasterForKey(t.Context(), st.IndexKey(u+"@sori.test")); err == nil && m.Options().Addr == dead.Addr {
			onDead[u] = true
		}
	}
	var witness string // a master that stays up, to watch cluster_state from
	for _, s := range seeds {
		if s != dead.Addr {
			witness = s
		}
	}
	for _, r := range cl.Replicas(dead) {
		redistest.WaitReplicated(t, dead.Addr, r.Addr, 5*time.Second)
	}
	states := watchClusterState(t, witness)
	killed := time.Now()
	dead.Kill()
	promoted := cl.WaitFailover(dead, 20*time.Second)
	okAt := time.Now()
	// Every user registers again once the cluster is ok, half of them twice.
	waitLoad(metricValue(t, n, ok)+users*3/2, 30*time.Second)
	if err := sipp.Process.Signal(syscall.SIGUSR1); err != nil { // SIPp: no new calls, finish the others
		t.Fatal(err)
	}
	select {
	case <-sippDone:
	case <-time.After(30 * time.Second):
		t.Fatalf("sipp did not stop after SIGUSR1:\n%s", sippOutput(load))
	}
	transitions := states()

	// SIPp: no failed REGISTER. A 503 without Retry-After, another answer or
	// none fails the scenario.
	stat := sippStats(t, filepath.Join(load, "stat.csv"))
	if stat["FailedCall(C)"] != 0 || stat["SuccessfulCall(C)"] == 0 {
		t.Fatalf("sipp: %v successful, %v failed REGISTERs:\n%s", stat["SuccessfulCall(C)"], stat["FailedCall(C)"], sippOutput(load))
	}
	outcomes := sippOutcomes(t, load)
	const margin = time.Second // a 503 answered as the cluster turned ok may be read a little later
	var first503, last503 time.Time
	n503, n200 := 0, 0
	after := map[string]bool{} // users with a 200 after the cluster was ok again
	for _, o := range outcomes {
		if o.code == 200 {
			n200++
			if o.at.After(okAt) {
				after[o.user] = true
			}
			continue
		}
		n503++
		if o.retryAfter != "5" {
			t.Errorf("503 for %s with Retry-After %q, want registrar.retry_after (5)", o.user, o.retryAfter)
		}
		if o.at.Before(killed) || o.at.After(okAt.Add(margin)) {
			t.Errorf("503 for %s at %v after the kill: outside the failover window (the cluster was ok at %v)",
				o.user, o.at.Sub(killed).Round(time.Millisecond), okAt.Sub(killed).Round(time.Millisecond))
		}
		if first503.IsZero() {
			first503 = o.at
		}
		last503 = o.at
	}
	if n503+n200 != int(stat["SuccessfulCall(C)"]) {
		t.Errorf("%d outcomes logged (%d 200, %d 503) for %v REGISTERs", n503+n200, n200, n503, stat["SuccessfulCall(C)"])
	}
	if n503 == 0 {
		t.Error("no 503 while the cluster failed over: the load did not reach the dead master")
	}
	var missing []string
	for u := range onDead {
		if !after[u] {
			missing = append(missing, u)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of the killed master's %d users got no 200 after the failover: %v", len(missing), len(onDead), missing[:min(10, len(missing))])
	}

	// No binding was lost: every user still has the one binding it registered.
	if got, err := st.Count(t.Context(), time.Now()); err != nil || got != users {
		t.Errorf("after the failover the cluster holds %d bindings (%v), want %d", got, err, users)
	}
	for i := range users {
		u := fmt.Sprintf("user%04d", i)
		bs, err := st.Lookup(t.Context(), u+"@sori.test", time.Now())
		if err != nil || len(bs) != 1 || bs[0].Contact != "sip:"+u+"@127.0.0.1:5099" {
			t.Errorf("%s after the failover: %+v %v", u, bs, err)
		}
	}

	rel := func(at time.Time) string {
		if at.IsZero() {
			return "never"
		}
		return "+" + at.Sub(killed).Round(time.Millisecond).String()
	}
	t.Logf("master %s (%d of %d users) killed at +0; %s promoted, every node ok at %s; cluster_state seen by %s: %s",
		dead.Addr, len(onDead), users, promoted.Addr, rel(okAt), witness, transitions.String(rel))
	t.Logf("REGISTERs under load: %d with 200, %d with 503 + Retry-After (first %s, last %s), 0 failed; %d bindings before and after",
		n200, n503, rel(first503), rel(last503), users)
}

// stateChange is a cluster_state a node reported, from when.
type stateChange struct {
	state string
	at    time.Time
}

type stateChanges []stateChange

func (s stateChanges) String(rel func(time.Time) string) string {
	var b strings.Builder
	for i, c := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s at %s", c.state, rel(c.at))
	}
	return b.String()
}

// watchClusterState polls CLUSTER INFO on addr every 10 ms and notes each
// change of cluster_state; the returned func stops it and returns them.
func watchClusterState(t *testing.T, addr string) func() stateChanges {
	t.Helper()
	var (
		mu      sync.Mutex
		changes stateChanges
		stop    = make(chan struct{})
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		last := ""
		for {
			info, err := redistest.Command(addr, "CLUSTER", "INFO")
			now := time.Now()
			state := "unreachable"
			if err == nil {
				for _, l := range strings.Split(info, "\r\n") {
					if v, ok := strings.CutPrefix(l, "cluster_state:"); ok {
						state = v
					}
				}
			}
			if state != last {
				mu.Lock()
				changes = append(changes, stateChange{state, now})
				mu.Unlock()
				last = state
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	var once sync.Once
	result := func() stateChanges {
		once.Do(func() { close(stop); <-done })
		mu.Lock()
		defer mu.Unlock()
		return changes
	}
	t.Cleanup(func() { result() })
	return result
}

// sippOutcome is one line register-failover.xml logged.
type sippOutcome struct {
	code       int
	user       string
	retryAfter string
	at         time.Time
}

// sippOutcomes reads the -trace_logs file of a register-failover.xml run
// in dir: "200 USER TIMESTAMP" or "503 USER RETRY-AFTER TIMESTAMP".
func sippOutcomes(t *testing.T, dir string) []sippOutcome {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, "*_logs.log"))
	if len(logs) != 1 {
		t.Fatalf("sipp logs in %s: %v", dir, logs)
	}
	f, err := os.Open(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []sippOutcome
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		o, ok := parseOutcome(fs)
		if !ok {
			t.Fatalf("unexpected sipp log line %q", sc.Text())
		}
		out = append(out, o)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func parseOutcome(fs []string) (sippOutcome, bool) {
	var o sippOutcome
	var ts []string
	switch {
	case len(fs) >= 3 && fs[0] == "200":
		o.code, o.user, ts = 200, fs[1], fs[2:]
	case len(fs) >= 4 && fs[0] == "503":
		o.code, o.user, o.retryAfter, ts = 503, fs[1], fs[2], fs[3:]
	default:
		return o, false
	}
	at, ok := sippTime(ts)
	o.at = at
	return o, ok
}

// sippTime reads SIPp's [timestamp]: "YYYY-MM-DD HH:MM:SS.ffffff" in local
// time, perhaps followed by the Unix time "SECONDS.MICROSECONDS", which wins.
func sippTime(fs []string) (time.Time, bool) {
	if sec, frac, ok := strings.Cut(fs[len(fs)-1], "."); ok && len(frac) == 6 && !strings.Contains(sec, ":") {
		s, err1 := strconv.ParseInt(sec, 10, 64)
		us, err2 := strconv.ParseInt(frac, 10, 64)
		if err1 == nil && err2 == nil && s > 1e9 {
			return time.Unix(s, us*1000), true
		}
	}
	if len(fs) < 2 {
		return time.Time{}, false
	}
	at, err := time.ParseInLocation("2006-01-02 15:04:05.999999", fs[0]+" "+fs[1], time.Local)
	return at, err == nil
}

// sippStats reads the last line of a -trace_stat file: counter -> value.
func sippStats(t *testing.T, path string) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		t.Fatalf("%s: no statistics", path)
	}
	head, last := strings.Split(lines[0], ";"), strings.Split(lines[len(lines)-1], ";")
	out := map[string]float64{}
	for i, h := range head {
		if i < len(last) {
			if v, err := strconv.ParseFloat(last[i], 64); err == nil {
				out[h] = v
			}
		}
	}
	return out
}

// sippOutput is the tail of SIPp's output and error log in dir.
func sippOutput(dir string) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
	for _, f := range append([]string{filepath.Join(dir, "sipp.out")}, files...) {
		if data, err := os.ReadFile(f); err == nil {
			fmt.Fprintf(&b, "== %s\n%s\n", filepath.Base(f), tail(string(data), 3000))
		}
	}
	return b.String()
}

func TestParseSIPpOutcome(t *testing.T) {
	at := time.Date(2026, 12, 2, 19, 5, 7, 123456000, time.Local)
	epoch := fmt.Sprintf("%d.%06d", at.Unix(), at.Nanosecond()/1000)
	tests := []struct {
		line string
		want sippOutcome
		ok   bool
	}{
		{"200 user0001 2026-12-02\t19:05:07.123456", sippOutcome{code: 200, user: "user0001", at: at}, true},
		{"503 user0002 5 2026-12-02\t19:05:07.123456\t" + epoch, sippOutcome{code: 503, user: "user0002", retryAfter: "5", at: at}, true},
		{"200 user0003 " + epoch, sippOutcome{code: 200, user: "user0003", at: at}, true},
		{"404 user0004 " + epoch, sippOutcome{}, false},
		{"503 user0005 " + epoch, sippOutcome{}, false}, // no Retry-After field
		{"200 user0006 yesterday", sippOutcome{}, false},
	}
	for _, tt := range tests {
		got, ok := parseOutcome(strings.Fields(tt.line))
		if ok != tt.ok || (ok && (got.code != tt.want.code || got.user != tt.want.user || got.retryAfter != tt.want.retryAfter || !got.at.Equal(tt.want.at))) {
			t.Errorf("parseOutcome(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}
