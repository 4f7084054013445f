// Package redistest starts a real redis-server on a free loopback port for a
// test. A missing redis-server fails the test: `make test` installs it.
package redistest

import (
	"bufio"
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
)

// Server is a running redis-server owned by one test.
type Server struct {
	Addr string // 127.0.0.1:PORT
	Port int
	dir  string
	cmd  *exec.Cmd
	t    testing.TB
}

// URL returns redis://ADDR/0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Start starts redis-server and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed (make test installs it): %v", err)
	}
	s := &Server{dir: t.TempDir(), t: t}
	var lastErr error
	for range 5 {
		s.Port = freePort(t)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("redis-server did not start: %v", lastErr)
	return nil
}

func (s *Server) start() error {
	s.cmd = exec.Command("redis-server",
		"--bind", "127.0.0.1", "--port", strconv.Itoa(s.Port),
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--logfile", filepath.Join(s.dir, "redis.log"), "--daemonize", "no")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if Ping(s.Addr) == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return fmt.Errorf("no PONG from %s; log:\n%s", s.Addr, log)
}

// Stop kills the server (idempotent).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port (after Stop).
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("restart redis: %v", err)
	}
}

// Ping sends PING with the inline protocol and expects +PONG.
func Ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartCluster starts a Redis Cluster of n masters (no replicas) and returns
// their addresses once every slot is served.
func StartCluster(t testing.TB, n int) []string {
	t.Helper()
	return startCluster(t, n, 0, 0).Addrs()
}

// freeClusterPort finds a port whose cluster bus port (port+10000) is free too.
func freeClusterPort(t testing.TB) int {
	t.Helper()
	for range 100 {
		p := freePort(t)
		if p+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port pair for a cluster node")
	return 0
}

// startHelper runs redis-server with args (logging to logFile), stops it when
// the test ends, and returns its address once it answers PING.
func startHelper(t testing.TB, port int, logFile string, args ...string) string {
	t.Helper()
	return startProc(t, port, logFile, args...).addr
}

// proc is a redis-server process started by startProc.
type proc struct {
	addr string
	cmd  *exec.Cmd
	once sync.Once
}

// startProc runs redis-server with args (logging to logFile), kills it when
// the test ends, and returns once it answers PING.
func startProc(t testing.TB, port int, logFile string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command("redis-server", append(args, "--logfile", logFile)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd}
	t.Cleanup(p.kill)
	waitPing(t, p.addr, logFile)
	return p
}

// kill sends SIGKILL and reaps the process (idempotent).
func (p *proc) kill() {
	p.once.Do(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
}

func waitPing(t testing.TB, addr, logFile string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for Ping(addr) != nil {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile)
			t.Fatalf("no PONG from %s; log:\n%s", addr, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SentinelSet is a master, one replica of it and a Sentinel watching them
// under the name "mymaster", owned by one test.
type SentinelSet struct {
	Master, Replica *Node
	Sentinel        string // the Sentinel's address
	SentinelLog     string // its log file
	t               testing.TB
}

// Node is one redis-server of a SentinelSet.
type Node struct {
	Addr string
	Log  string // its log file
	proc *proc
}

// Kill ends the server with SIGKILL, as a crash would, and waits for the
// process to exit.
func (n *Node) Kill() { n.proc.kill() }

// StartSentinelSet starts a master, a replica and a Sentinel (quorum 1,
// down-after-milliseconds 1000), and returns once the replica is in sync and
// the Sentinel knows it: a killed master's replica takes over in a few
// seconds (see WaitFailover).
func StartSentinelSet(t testing.TB) *SentinelSet {
	t.Helper()
	s := &SentinelSet{t: t}
	start := func(extra ...string) *Node {
		dir := t.TempDir()
		port := freePort(t)
		args := append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no",
			"--dir", dir, "--repl-diskless-sync-delay", "0"}, extra...)
		p := startProc(t, port, filepath.Join(dir, "redis.log"), args...)
		return &Node{Addr: p.addr, Log: filepath.Join(dir, "redis.log"), proc: p}
	}
	s.Master = start()
	host, port, _ := net.SplitHostPort(s.Master.Addr)
	s.Replica = start("--replicaof", host, port)
	dir := t.TempDir()
	sport := freePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nsentinel monitor mymaster %s %s 1\n"+
		"sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\n", sport, dir, host, port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	s.SentinelLog = filepath.Join(dir, "sentinel.log")
	s.Sentinel = startHelper(t, sport, s.SentinelLog, conf, "--sentinel")
	t.Cleanup(func() {
		if t.Failed() { // what the servers and the Sentinel did, for the failure
			for _, f := range []string{s.Master.Log, s.Replica.Log, s.SentinelLog} {
				b, _ := os.ReadFile(f)
				t.Logf("%s:\n%s", f, b)
			}
		}
	})
	s.poll(20*time.Second, func() (bool, string) {
		repl, err := Command(s.Replica.Addr, "INFO", "replication")
		if err != nil || !strings.Contains(repl, "master_link_status:up") {
			return false, "replica not in sync: " + repl + fmt.Sprint(err)
		}
		info, err := Command(s.Sentinel, "INFO", "sentinel")
		if err != nil || !strings.Contains(info, "status=ok,address="+s.Master.Addr+",slaves=1,") {
			return false, "sentinel: " + info + fmt.Sprint(err)
		}
		return true, ""
	})
	// A replica whose link is up may not be receiving writes yet: after a
	// diskless sync the master holds the command stream back until the
	// replica's first REPLCONF ACK (its once-a-second cron). A master
	// killed before then takes every write to the grave; a PUBLISH (which
	// replicates, and leaves no key) shows the stream flowing.
	if _, err := Command(s.Master.Addr, "PUBLISH", "redistest:probe", "1"); err != nil {
		t.Fatalf("PUBLISH on the master: %v", err)
	}
	WaitReplicated(t, s.Master.Addr, s.Replica.Addr, 10*time.Second)
	return s
}

// WaitReplicated waits until the replica at replica has applied everything
// the master at master had written when it was called: its
// slave_repl_offset reaches the master's master_repl_offset. (WAIT cannot
// tell this from a connection of its own: it counts replicas that have
// acknowledged that connection's writes, and with none it answers at
// once with every replica.)
func WaitReplicated(t testing.TB, master, replica string, timeout time.Duration) {
	t.Helper()
	repl, err := Command(master, "INFO", "replication")
	if err != nil {
		t.Fatalf("INFO replication on %s: %v", master, err)
	}
	want, err := infoInt(repl, "master_repl_offset")
	if err != nil {
		t.Fatalf("%s: %v", master, err)
	}
	poll(t, "replica "+replica, timeout, func() (bool, string) {
		r, err := Command(replica, "INFO", "replication")
		if err != nil {
			return false, err.Error()
		}
		got, err := infoInt(r, "slave_repl_offset")
		if err != nil || !strings.Contains(r, "master_link_status:up") {
			return false, fmt.Sprintf("%v:\n%s", err, r)
		}
		return got >= want, fmt.Sprintf("at offset %d of the master's %d", got, want)
	})
}

// infoInt is the integer field name of an INFO reply.
func infoInt(info, name string) (int64, error) {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+":"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in INFO", name)
}

// WaitFailover waits until, after the master was killed, the Sentinel names
// the replica as the master and the replica has taken the role.
func (s *SentinelSet) WaitFailover(timeout time.Duration) {
	s.t.Helper()
	s.poll(timeout, func() (bool, string) {
		info, err := Command(s.Sentinel, "INFO", "sentinel")
		if err != nil || !strings.Contains(info, "status=ok,address="+s.Replica.Addr+",") {
			return false, "sentinel: " + info + fmt.Sprint(err)
		}
		repl, err := Command(s.Replica.Addr, "INFO", "replication")
		if err != nil || !strings.Contains(repl, "role:master") {
			return false, "replica: " + repl + fmt.Sprint(err)
		}
		return true, ""
	})
}

func (s *SentinelSet) poll(timeout time.Duration, done func() (bool, string)) {
	s.t.Helper()
	poll(s.t, "sentinel set", timeout, done)
}
