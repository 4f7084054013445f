package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

// sori on a 3+3 Redis Cluster follows a failover: with the master holding
// alice's bindings killed, her REGISTER answers 503 with Retry-After while
// the cluster fails over, and 200 with her binding as soon as it is ok again.
func TestRegisterFollowsClusterFailover(t *testing.T) {
	cl := redistest.StartClusterWithReplicas(t, 3, 1)
	url := cl.URL()
	n := startNode(t, nodeConfig{store: url})
	c := dialSIP(t, "tcp", n.addr())
	const contact = "sip:alice@192.0.2.7:5060;transport=tcp"
	register := func(cseq int, headers ...string) (int, string, []string) {
		res := c.registerAuth("alice", "alice-secret", "failover-e2e", cseq, headers...)
		ra := ""
		if h := res.GetHeader("Retry-After"); h != nil {
			ra = h.Value()
		}
		return res.StatusCode, ra, contactValues(res)
	}
	if code, _, _ := register(1, "Contact: <"+contact+">", "Expires: 600"); code != 200 {
		t.Fatalf("REGISTER before the failover: %d", code)
	}

	st, err := redisstore.Open(url, redisstore.Options{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := st.Client().(*redis.ClusterClient).MasterForKey(t.Context(), st.IndexKey("alice@sori.test"))
	if err != nil {
		t.Fatal(err)
	}
	dead := cl.Node(m.Options().Addr)
	for _, r := range cl.Replicas(dead) {
		redistest.WaitReplicated(t, dead.Addr, r.Addr, 5*time.Second)
	}
	dead.Kill()
	// The replica cannot take over before cluster-node-timeout (1 s) and an election.
	if code, ra, _ := register(3, "Contact: <"+contact+">", "Expires: 600"); code != 503 || ra != "5" {
		t.Fatalf("REGISTER while the cluster fails over: %d, Retry-After %q; want 503 with registrar.retry_after", code, ra)
	}
	cl.WaitFailover(dead, 15*time.Second)
	code, _, contacts := register(5, "Contact: <"+contact+">", "Expires: 600")
	if code != 200 || len(contacts) != 1 || !strings.Contains(contacts[0], contact) {
		t.Fatalf("first REGISTER after the failover: %d %v", code, contacts)
	}
	// A query: the binding survived the failover.
	if code, _, contacts := register(7); code != 200 || len(contacts) != 1 || !strings.Contains(contacts[0], contact) {
		t.Fatalf("query after the failover: %d %v", code, contacts)
	}
}

// sori on Redis Sentinel follows a failover: with the master killed (SIGKILL)
// once its replica has applied every binding, REGISTERs answer 503 with
// Retry-After until the Sentinel has promoted the replica, then 200; every
// binding written before the kill is there after it.
func TestRegisterFollowsSentinelFailover(t *testing.T) {
	set := redistest.StartSentinelSet(t)
	url := "redis-sentinel://" + set.Sentinel + "/mymaster/0"
	const users = 20
	var extra strings.Builder
	extra.WriteString("users:\n")
	for i := range users {
		fmt.Fprintf(&extra, "  - {name: user%02d, password: user%02d-secret}\n", i, i)
	}
	n := startNode(t, nodeConfig{store: url, extra: extra.String()})
	c := dialSIP(t, "tcp", n.addr())
	contact := func(i int) string { return fmt.Sprintf("sip:user%02d@192.0.2.7:%d;transport=tcp", i, 5000+i) }
	register := func(i, cseq int, headers ...string) (int, string, []string) {
		u := fmt.Sprintf("user%02d", i)
		res := c.registerAuth(u, u+"-secret", "sentinel-e2e-"+u, cseq, headers...)
		ra := ""
		if h := res.GetHeader("Retry-After"); h != nil {
			ra = h.Value()
		}
		return res.StatusCode, ra, contactValues(res)
	}
	for i := range users {
		if code, _, _ := register(i, 1, "Contact: <"+contact(i)+">", "Expires: 600"); code != 200 {
			t.Fatalf("user%02d's REGISTER before the failover: %d", i, code)
		}
	}
	st, err := redisstore.Open(url, redisstore.Options{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	before, err := st.Count(t.Context(), time.Now())
	if err != nil || before != users {
		t.Fatalf("bindings before the kill: %d %v, want %d", before, err, users)
	}
	// Replication is asynchronous: kill the master only once the replica
	// has everything, or the test measures Redis's lag, not sori.
	redistest.WaitReplicated(t, set.Master.Addr, set.Replica.Addr, 5*time.Second)

	killed := time.Now()
	set.Master.Kill()
	// user00 registers again every 50 ms until it gets 200: everything
	// before that must be 503 with Retry-After (registrar.retry_after).
	var first503, last503, ok time.Duration
	count503 := 0
	tick := time.NewTicker(50 * time.Millisecond) // the pace of one phone retrying, not a wait for an event
	defer tick.Stop()
	for cseq := 3; ; cseq += 2 {
		code, ra, got := register(0, cseq, "Contact: <"+contact(0)+">", "Expires: 600")
		at := time.Since(killed)
		if code == 200 {
			if len(got) != 1 || !strings.Contains(got[0], contact(0)) {
				t.Fatalf("first REGISTER after the failover: %v", got)
			}
			ok = at
			break
		}
		if code != 503 || ra != "5" {
			t.Fatalf("REGISTER %v after the kill: %d, Retry-After %q; want 503 with registrar.retry_after", at, code, ra)
		}
		if count503 == 0 {
			first503 = at
		}
		last503 = at
		count503++
		if at > 30*time.Second {
			t.Fatalf("no 200 within %v of the kill", at)
		}
		<-tick.C
	}
	// The Sentinel waits down-after-milliseconds (1 s) before it starts the
	// failover: REGISTERs in that time cannot have succeeded.
	if count503 == 0 || last503 < time.Second {
		t.Fatalf("%d 503s, the last %v after the kill: the failover cannot be over before down-after-milliseconds", count503, last503)
	}
	set.WaitFailover(10 * time.Second) // the Sentinel names the replica, which is master
	after, err := st.Count(t.Context(), time.Now())
	if err != nil || after != users {
		t.Fatalf("bindings after the failover: %d %v, want %d", after, err, users)
	}
	// Queries: each binding written before the kill, with its contact.
	for i := 1; i < users; i++ {
		if code, _, got := register(i, 3); code != 200 || len(got) != 1 || !strings.Contains(got[0], contact(i)) {
			t.Fatalf("user%02d's query after the failover: %d %v", i, code, got)
		}
	}
	t.Logf("SENTINEL FAILOVER PASS: master %s killed at +0; %d REGISTERs got 503 with Retry-After: 5, the first at +%.3fs, the last at +%.3fs; first 200 at +%.3fs (through %s); bindings before=%d after=%d",
		set.Master.Addr, count503, first503.Seconds(), last503.Seconds(), ok.Seconds(), set.Replica.Addr, before, after)
}
