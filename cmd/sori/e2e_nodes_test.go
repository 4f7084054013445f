package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/siptest"
)

// Three sori nodes, one service: on 127.0.0.1, 127.0.0.2 and 127.0.0.3,
// sharing a 3-master Redis Cluster. bob's phone registers over TCP on
// node b; alice, on node a, calls it and messages it: node a sends both
// to node b with bob's flow token, and b sends them down bob's connection.
// Then node b is killed; bob registers again on node c, and alice's next
// calls reach him there at once, although a binding on the dead node is
// still in Redis. The phones are on 127.0.0.10-12: only the nodes are on
// the nodes' addresses.
func TestNodesShareFlows(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	storeURL := "redis-cluster://" + strings.Join(cluster, ",")
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster})
	defer rdb.Close()

	ids := []string{"a", "b", "c"}
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	ports := []int{freeSIPPort(t), freeSIPPort(t), freeSIPPort(t)}
	addrs := nodeAddrs("tcp", ips, ports)
	dir := t.TempDir()
	nodes := map[string]*sipNode{}
	for i, id := range ids {
		nodes[id] = nodeSpec{id: id, ip: ips[i], port: ports[i], nodes: addrs, store: storeURL, cdr: filepath.Join(dir, "cdr-"+id+".jsonl")}.start(t)
	}
	a, b, c := nodes["a"], nodes["b"], nodes["c"]
	for _, n := range []*sipNode{a, b, c} {
		if v := rdb.Get(t.Context(), "sori:node:"+n.id).Val(); v != "tcp:"+n.sipAddr() {
			t.Fatalf("heartbeat of node %s: %q", n.id, v)
		}
	}

	// A fourth node given node a's id does not start: two nodes with one id
	// would take each other's calls.
	twinPort := freeSIPPort(t)
	twinCfg := filepath.Join(dir, "twin.yaml")
	twinAddr := fmt.Sprintf("tcp:127.0.0.4:%d", twinPort)
	twinSpec := nodeSpec{id: "a", listen: []string{fmt.Sprintf("%q", twinAddr)}, nodes: append(append([]string(nil), addrs...), fmt.Sprintf("%q", twinAddr)), store: storeURL}
	if err := os.WriteFile(twinCfg, []byte(twinSpec.config(`""`)), 0o600); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(t.Context(), 15*time.Second) // one that started would be killed
	defer cancel()
	twin := exec.CommandContext(tctx, binary(t), "-config", twinCfg)
	out, err := twin.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "node a: node id in use by another node at tcp:"+a.sipAddr()) {
		t.Fatalf("a second node with id a: %v\n%s", err, out)
	}

	// bob's phone: TCP to node b; its Contact names an address where
	// nothing listens (behind NAT): only its connection reaches it.
	const mobileContact = "sip:bob@192.168.1.20:5060;transport=tcp"
	mobile := &ua{sipConn: dialFrom(t, "tcp", "127.0.0.11", b.sipAddr()), user: "bob", password: "bob-secret"}
	if res := mobile.registerAuth("bob", "bob-secret", "bob-mobile-reg", 1, "Contact: <"+mobileContact+">", "Expires: 600"); res.StatusCode != 200 {
		t.Fatalf("bob's REGISTER on node b: %d", res.StatusCode)
	}
	alice := &ua{sipConn: dialFrom(t, "udp", "127.0.0.10", a.sipAddr()), user: "alice", password: "alice-secret"}

	// 1. A call from node a reaches bob on node b.
	callID, _ := callAndHangUp(t, alice, mobile, mobileContact, func(inv *sip.Request) {
		vias := inv.GetHeaders("Via")
		if len(vias) != 3 || !strings.Contains(vias[0].Value(), b.sipAddr()) || !strings.Contains(vias[1].Value(), a.sipAddr()) {
			t.Fatalf("the INVITE did not come from node a through node b: Via %v", siptest.Values(vias))
		}
		rr := inv.RecordRoute()
		if rr == nil || !strings.HasPrefix(rr.Address.User, "f1") || rr.Address.Host != "127.0.0.2" {
			t.Fatalf("node b's Record-Route carries no flow token: %v", siptest.Values(inv.GetHeaders("Record-Route")))
		}
		if inv.GetHeader("Proxy-Authorization") != nil {
			t.Fatal("alice's credentials reached bob")
		}
	})
	recs := waitRecords(t, a.cdr, 1, "the call through node b", func(r calls.Record) bool { return r.CallID == callID })
	if r := recs[0]; r.Disposition != "answered" || r.Caller != "alice" || r.Callee != mobileContact {
		t.Fatalf("call record %+v", r)
	}
	for _, n := range []*sipNode{b, c} { // the call is node a's: the others only relay
		waitRecords(t, n.cdr, 0, "node "+n.id, func(r calls.Record) bool { return r.CallID == callID })
	}
	if n := streamRecords(t, rdb, callID); n != 1 {
		t.Fatalf("%d records of %s in the Redis stream, want 1", n, callID)
	}

	// 2. MESSAGE too.
	alice.authenticated("MESSAGE", "sip:bob@sori.test", "Content-Type: text/plain")
	msg := mobile.readRequest()
	if msg.Method != sip.MESSAGE || msg.From().Address.User != "alice" || msg.Recipient.String() != mobileContact {
		t.Fatalf("bob got %s %s from %s", msg.Method, msg.Recipient.String(), msg.From().Address.String())
	}
	mobile.respond(msg, 200, "OK")
	if res := alice.final(); res.StatusCode != 200 {
		t.Fatalf("MESSAGE: alice got %d", res.StatusCode)
	}

	// bob's desk phone registers on node b too; it stays there.
	desk := &ua{sipConn: dialFrom(t, "tcp", "127.0.0.12", b.sipAddr()), user: "bob", password: "bob-secret"}
	if res := desk.registerAuth("bob", "bob-secret", "bob-desk-reg", 1, "Contact: <sip:bob@192.168.1.21:5060;transport=tcp>", "Expires: 600"); res.StatusCode != 200 {
		t.Fatalf("desk REGISTER: %d", res.StatusCode)
	}

	// 3. Node b dies. bob's phone loses its connection and registers again
	// on node c: the binding is node c's from then on. The desk's binding
	// is still in Redis, held by the dead node.
	_ = b.cmd.Process.Kill()
	<-b.exited
	mobile = &ua{sipConn: dialFrom(t, "tcp", "127.0.0.11", c.sipAddr()), user: "bob", password: "bob-secret"}
	if res := mobile.registerAuth("bob", "bob-secret", "bob-mobile-reg", 10, "Contact: <"+mobileContact+">", "Expires: 600"); res.StatusCode != 200 || len(contactValues(res)) != 2 {
		t.Fatalf("bob's REGISTER on node c: %d %v", res.StatusCode, contactValues(res))
	}
	// At once: node b's heartbeat may still be there; its address refuses
	// the connection, so the desk's branch fails at once.
	_, took := callAndHangUp(t, alice, mobile, mobileContact, func(inv *sip.Request) {
		if v := inv.Via(); !strings.Contains(v.Value(), c.sipAddr()) {
			t.Fatalf("not through node c: %s", v.Value())
		}
	})
	t.Logf("right after node b died: the INVITE reached bob through node c in %v", took)
	if took > 3*time.Second {
		t.Fatalf("the INVITE took %v to reach bob through node c (timer C is 60 s): the dead node held it up", took)
	}

	// Once node b's heartbeat has expired, node a takes it for down (its
	// /nodes says so), and skips its bindings without trying it.
	waitNodeDown(t, a, "b", 10*time.Second)
	before := routesCounted(t, a, "down")
	callID, took = callAndHangUp(t, alice, mobile, mobileContact, nil)
	t.Logf("with node b's heartbeat expired: the INVITE reached bob through node c in %v", took)
	if took > 3*time.Second {
		t.Fatalf("the INVITE took %v through node c", took)
	}
	if after := routesCounted(t, a, "down"); after != before+1 {
		t.Fatalf("sori_node_routes_total{result=\"down\"} went from %v to %v: the desk on node b was not skipped as down", before, after)
	}
	waitRecords(t, a.cdr, 1, "the call through node c", func(r calls.Record) bool { return r.CallID == callID && r.Disposition == "answered" })
}

// sipNode is a sori process on its own loopback address.
type sipNode struct {
	*node
	id, ip, cdr string
}

func (n *sipNode) sipAddr() string { return n.ip + ":" + strconv.Itoa(n.port) }

// nodeSpec is one node of a test's service, as its configuration has
// it; its zero values are what the nodes' tests share: the service's
// domain sori.test, one auth_secret, the users alice and bob, Redis
// bindings, debug logs.
type nodeSpec struct {
	id, ip string
	port   int      // its UDP port, where runNode waits for it; TCP's too unless listen says otherwise
	listen []string // sip.listen; unset, UDP and TCP on ip:port, with that for node_address
	nodes  []string // sip.nodes: every node's address, as nodeAddrs makes them
	store  string   // registrar.store

	tlsCert, tlsKey   string // sip.tls
	nodeCA            string // sip.node_ca, with node_transport tls
	nodeCert, nodeKey string // sip.node_cert and node_key

	sip       string   // more of the sip section, indented
	registrar string   // more of the registrar section, indented
	sections  string   // more top-level sections
	cdr       string   // the file of its call records, if any
	users     []string // more users than alice and bob, each's password its name with -secret
}

// nodeAddrs is each node's address of the given transport, quoted.
func nodeAddrs(transport string, ips []string, ports []int) []string {
	var out []string
	for i, ip := range ips {
		out = append(out, fmt.Sprintf("%q", fmt.Sprintf("%s:%s:%d", transport, ip, ports[i])))
	}
	return out
}

// config is the node's YAML, with its HTTP server on httpAddr.
func (s nodeSpec) config(httpAddr string) string {
	var b strings.Builder
	listen := strings.Join(s.listen, ", ")
	if s.listen == nil {
		listen = fmt.Sprintf(`"udp:%[1]s:%[2]d", "tcp:%[1]s:%[2]d"`, s.ip, s.port)
	}
	fmt.Fprintf(&b, "sip:\n  domain: sori.test\n  listen: [%s]\n  auth_secret: e2e-shared-secret-0123456789\n  node_id: %s\n  nodes: [%s]\n",
		listen, s.id, strings.Join(s.nodes, ", "))
	if s.listen == nil {
		fmt.Fprintf(&b, "  node_address: tcp:%s:%d\n", s.ip, s.port)
	}
	if s.tlsCert != "" {
		fmt.Fprintf(&b, "  tls: {cert: %q, key: %q}\n", s.tlsCert, s.tlsKey)
	}
	if s.nodeCA != "" {
		fmt.Fprintf(&b, "  node_transport: tls\n  node_ca: %q\n", s.nodeCA)
	}
	if s.nodeCert != "" {
		fmt.Fprintf(&b, "  node_cert: %q\n  node_key: %q\n", s.nodeCert, s.nodeKey)
	}
	b.WriteString(s.sip)
	fmt.Fprintf(&b, "registrar:\n  store: %q\n  store_timeout: 300ms\n%s", s.store, s.registrar)
	if s.cdr != "" {
		fmt.Fprintf(&b, "cdr:\n  file: %s\n", s.cdr)
	}
	fmt.Fprintf(&b, "%shttp:\n  listen: %s\nlog:\n  level: debug\nusers:\n", s.sections, httpAddr)
	for _, u := range append([]string{"alice", "bob"}, s.users...) {
		fmt.Fprintf(&b, "  - {name: %s, password: %s-secret}\n", u, u)
	}
	return b.String()
}

// start runs the node.
func (s nodeSpec) start(t *testing.T) *sipNode {
	t.Helper()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
	return &sipNode{node: runNode(t, s.config(httpAddr), s.port, httpAddr), id: s.id, ip: s.ip, cdr: s.cdr}
}

// dialFrom is dialSIP from a given loopback address.
func dialFrom(t *testing.T, transport, local, remote string) *sipConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	if transport == "udp" {
		d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(local)}
	}
	conn, err := d.Dial(transport, remote)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &sipConn{t: t, transport: transport, conn: conn, reader: bufio.NewReader(conn), local: conn.LocalAddr().String()}
}

// callAndHangUp has caller call bob, whose phone callee answers at contact
// (check sees the INVITE it got first); the caller ACKs and hangs up. It
// returns the Call-ID and how long it took from the
// authenticated INVITE being sent to the callee getting it.
func callAndHangUp(t *testing.T, caller, callee *ua, contact string, check func(*sip.Request)) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	caller.authenticated("INVITE", "sip:bob@sori.test")
	inv := callee.readRequest()
	took := time.Since(start)
	if inv.Method != sip.INVITE || inv.Recipient.String() != contact {
		t.Fatalf("bob got %s %s", inv.Method, inv.Recipient.String())
	}
	if check != nil {
		check(inv)
	}
	callee.respond(inv, 180, "Ringing", "Contact: <"+contact+">")
	callee.respond(inv, 200, "OK", "Contact: <"+contact+">")
	res := caller.final()
	if res.StatusCode != 200 {
		t.Fatalf("the caller got %d %s", res.StatusCode, res.Reason)
	}
	caller.send(caller.inDialog("ACK", 2, res))
	if ack := callee.readRequest(); ack.Method != sip.ACK || ack.Recipient.String() != contact {
		t.Fatalf("bob got %s %s, want the ACK", ack.Method, ack.Recipient.String())
	}
	caller.send(caller.inDialog("BYE", 3, res))
	bye := callee.readRequest()
	if bye.Method != sip.BYE || bye.Recipient.String() != contact {
		t.Fatalf("bob got %s %s, want the BYE", bye.Method, bye.Recipient.String())
	}
	callee.respond(bye, 200, "OK")
	if r := caller.final(); r.StatusCode != 200 || r.CSeq().MethodName != sip.BYE {
		t.Fatalf("BYE: %d %s", r.StatusCode, r.CSeq().MethodName)
	}
	return res.CallID().Value(), took
}

// waitNodeDown waits until n's /nodes reports node id down (each GET reads
// the heartbeats again), and requires every other node it lists up.
func waitNodeDown(t *testing.T, n *sipNode, id string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var peers []struct {
			ID   string `json:"id"`
			Up   bool   `json:"up"`
			Self bool   `json:"self"`
		}
		code, body := httpGet(t, "http://"+n.http+"/nodes")
		if code != 200 {
			t.Fatalf("/nodes: %d %s", code, body)
		}
		if err := json.Unmarshal([]byte(body), &peers); err != nil {
			t.Fatalf("/nodes: %v: %s", err, body)
		}
		down := false
		for _, p := range peers {
			switch {
			case p.ID == id:
				down = !p.Up
			case !p.Up:
				t.Fatalf("/nodes of %s: %s down: %s", n.id, p.ID, body)
			}
		}
		if down {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s still up for node %s after %v: %s", id, n.id, timeout, body)
		}
		time.Sleep(50 * time.Millisecond) // the heartbeat expires on Redis's clock
	}
}

// streamRecords counts the records of callID in the shared Redis stream,
// once the first is there.
func streamRecords(t *testing.T, rdb *redis.ClusterClient, callID string) int {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		msgs, err := rdb.XRange(t.Context(), "sori:cdr", "-", "+").Result()
		n := 0
		for _, m := range msgs {
			if m.Values["call_id"] == callID {
				n++
			}
		}
		if err == nil && n > 0 || time.Now().After(deadline) {
			return n
		}
	}
}

var nodeRoutesRE = regexp.MustCompile(`(?m)^sori_node_routes_total\{result="(\w+)"\} (\d+)`)

// routesCounted is n's sori_node_routes_total for result.
func routesCounted(t *testing.T, n *sipNode, result string) int {
	t.Helper()
	_, body := httpGet(t, "http://"+n.http+"/metrics")
	for _, m := range nodeRoutesRE.FindAllStringSubmatch(body, -1) {
		if m[1] == result {
			v, _ := strconv.Atoi(m[2])
			return v
		}
	}
	return 0
}
