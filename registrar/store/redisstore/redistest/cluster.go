package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Cluster is a Redis Cluster of redis-server processes owned by one test.
type Cluster struct {
	Nodes []*ClusterNode
	t     testing.TB
}

// ClusterNode is one redis-server of a Cluster.
type ClusterNode struct {
	Addr string // 127.0.0.1:PORT
	ID   string // cluster node ID
	// MasterID is the ID of the master this node was created a replica of
	// ("" for a master).
	MasterID string
	proc     *proc
	dead     atomic.Bool
}

// Kill ends the node with SIGKILL, as a crash would, and waits for the
// process to exit.
func (n *ClusterNode) Kill() {
	n.dead.Store(true)
	n.proc.kill()
}

// StartClusterWithReplicas starts a Redis Cluster of masters, each with
// replicasPerMaster replicas, and returns once every slot is served and every
// replica is in sync. cluster-node-timeout is 1 s, so a killed master's
// replica takes over in about two seconds (see WaitFailover).
func StartClusterWithReplicas(t testing.TB, masters, replicasPerMaster int) *Cluster {
	t.Helper()
	return startCluster(t, masters, replicasPerMaster, time.Second)
}

// startCluster starts masters*(1+replicas) nodes; nodeTimeout 0 keeps Redis's default.
func startCluster(t testing.TB, masters, replicas int, nodeTimeout time.Duration) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	for range masters * (1 + replicas) {
		dir := t.TempDir()
		port := freeClusterPort(t)
		args := []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--save", "", "--appendonly", "no", "--dir", dir}
		if nodeTimeout > 0 {
			args = append(args, "--cluster-node-timeout", strconv.Itoa(int(nodeTimeout.Milliseconds())))
		}
		if replicas > 0 {
			// A replica syncs at once (the default waits 5 s for more
			// replicas) and may take over however long its link was down.
			args = append(args, "--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0")
		}
		p := startProc(t, port, filepath.Join(dir, "redis.log"), args...)
		c.Nodes = append(c.Nodes, &ClusterNode{Addr: p.addr, proc: p})
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.waitReady(masters * replicas)
	return c
}

// Addrs returns the address of every node (masters and replicas).
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// URL is the cluster as a store URL, its masters the seeds:
// redis-cluster://host:port,host:port,...
func (c *Cluster) URL() string {
	var seeds []string
	for _, n := range c.Nodes {
		if n.MasterID == "" {
			seeds = append(seeds, n.Addr)
		}
	}
	return "redis-cluster://" + strings.Join(seeds, ",")
}

// Node returns the node listening on addr.
func (c *Cluster) Node(addr string) *ClusterNode {
	c.t.Helper()
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	c.t.Fatalf("no cluster node at %s", addr)
	return nil
}

// Killed tells whether Kill was called.
func (n *ClusterNode) Killed() bool { return n.dead.Load() }

// Replicas returns the live nodes created as replicas of master.
func (c *Cluster) Replicas(master *ClusterNode) []*ClusterNode {
	return slices.DeleteFunc(slices.Clone(c.Nodes), func(n *ClusterNode) bool { return n.MasterID != master.ID || n.Killed() })
}

func (c *Cluster) live() []*ClusterNode {
	return slices.DeleteFunc(slices.Clone(c.Nodes), (*ClusterNode).Killed)
}

// waitReady waits until every node reports cluster_state:ok and knows every
// other node with its role, and every replica's link to its master is up.
// It then records each node's ID and master.
func (c *Cluster) waitReady(replicas int) {
	c.t.Helper()
	c.poll(20*time.Second, func() (bool, string) {
		for _, n := range c.Nodes {
			info, err := Command(n.Addr, "CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok\r\n") {
				return false, n.Addr + ": " + info + fmt.Sprint(err)
			}
			nodes, err := clusterNodes(n.Addr)
			if err != nil {
				return false, err.Error()
			}
			slaves := 0
			for _, e := range nodes {
				if e.has("handshake") || e.has("fail?") || e.has("fail") || e.has("noaddr") {
					return false, n.Addr + " sees " + e.line
				}
				if e.has("slave") {
					slaves++
				}
			}
			if len(nodes) != len(c.Nodes) || slaves != replicas {
				return false, fmt.Sprintf("%s knows %d nodes (%d replicas) of %d (%d)", n.Addr, len(nodes), slaves, len(c.Nodes), replicas)
			}
			repl, err := Command(n.Addr, "INFO", "replication")
			if err != nil {
				return false, err.Error()
			}
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return false, n.Addr + " replica not in sync:\n" + repl
			}
		}
		return true, ""
	})
	nodes, err := clusterNodes(c.Nodes[0].Addr)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, n := range c.Nodes {
		for _, e := range nodes {
			if e.addr == n.Addr {
				n.ID = e.id
				if e.has("slave") {
					n.MasterID = e.master
				}
			}
		}
		if n.ID == "" {
			c.t.Fatalf("%s missing from CLUSTER NODES", n.Addr)
		}
	}
}

// WaitFailover waits until the cluster has replaced the killed master dead:
// every live node reports cluster_state:ok, flags dead as failed, and lists
// one of dead's replicas as a master serving slots. It returns that replica.
func (c *Cluster) WaitFailover(dead *ClusterNode, timeout time.Duration) *ClusterNode {
	c.t.Helper()
	var promoted *ClusterNode
	c.poll(timeout, func() (bool, string) {
		promoted = nil
		for _, n := range c.live() {
			info, err := Command(n.Addr, "CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok\r\n") {
				return false, n.Addr + ": " + info + fmt.Sprint(err)
			}
			nodes, err := clusterNodes(n.Addr)
			if err != nil {
				return false, err.Error()
			}
			var seen *ClusterNode
			for _, e := range nodes {
				if e.id == dead.ID && (!e.has("fail") || e.slots) {
					return false, n.Addr + " sees " + e.line
				}
				for _, r := range c.Nodes {
					if r.MasterID == dead.ID && r.ID == e.id && e.has("master") && e.slots {
						seen = r
					}
				}
			}
			if seen == nil || (promoted != nil && seen != promoted) {
				return false, n.Addr + " sees no replica of the dead master serving its slots"
			}
			promoted = seen
		}
		return true, ""
	})
	return promoted
}

func (c *Cluster) poll(timeout time.Duration, done func() (bool, string)) {
	c.t.Helper()
	poll(c.t, "cluster", timeout, done)
}

// poll calls done every 20 ms until it reports true, failing t with what
// done last said after timeout.
func poll(t testing.TB, what string, timeout time.Duration, done func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := done()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v: %s", what, timeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nodeEntry is one line of CLUSTER NODES.
type nodeEntry struct {
	id, addr, master string
	flags            []string
	slots            bool // serves at least one slot
	line             string
}

func (e nodeEntry) has(flag string) bool { return slices.Contains(e.flags, flag) }

func clusterNodes(addr string) ([]nodeEntry, error) {
	out, err := Command(addr, "CLUSTER", "NODES")
	if err != nil {
		return nil, fmt.Errorf("CLUSTER NODES on %s: %w", addr, err)
	}
	var entries []nodeEntry
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		// <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("CLUSTER NODES on %s: bad line %q", addr, line)
		}
		a, _, _ := strings.Cut(f[1], "@")
		e := nodeEntry{id: f[0], addr: a, flags: strings.Split(f[2], ","), master: f[3], slots: len(f) > 8, line: line}
		if e.master == "-" {
			e.master = ""
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// Command sends one command to the server at addr on a new connection and
// returns the reply: a simple or bulk string's text, an integer in decimal.
// An error reply is returned as an error.
func Command(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch {
	case line == "":
	case line[0] == '+' || line[0] == ':':
		return line[1:], nil
	case line[0] == '-':
		return "", errors.New(line[1:])
	case line[0] == '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unsupported reply %q", line)
}
