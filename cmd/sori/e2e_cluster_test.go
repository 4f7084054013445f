package main

import (
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
	var seeds []string
	for _, n := range cl.Nodes {
		if n.MasterID == "" {
			seeds = append(seeds, n.Addr)
		}
	}
	url := "redis-cluster://" + strings.Join(seeds, ",")
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
	if got, err := redistest.Command(dead.Addr, "WAIT", "1", "2000"); err != nil || got != "1" {
		t.Fatalf("WAIT on %s: %q %v", dead.Addr, got, err)
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
