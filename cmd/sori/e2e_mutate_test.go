package main

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Mutated traffic through the whole of sori: a caller sends thousands of
// requests of every method sori routes (INVITE with SDP, MESSAGE,
// SUBSCRIBE, in-dialog BYE, UPDATE, INFO, PRACK, CANCEL, ACK, REGISTER,
// OPTIONS), each with its header lines and body mutated at random (lines
// dropped, doubled, truncated, names swapped, values replaced with
// hostile ones: empty, huge, NUL, control characters, unbalanced quotes
// and brackets, out-of-range numbers; SDP broken), digest-authenticated
// where the mutation leaves that possible so they reach the proxy and
// the anchor. The callee answers what reaches it with responses mutated
// the same way. Afterwards sori is alive and sane: no panic, every
// request that still had what an answer needs (a parsable Via, From,
// To, Call-ID, CSeq, and not ACK) was answered, no 500, and a clean call
// and REGISTER go through as before. The seed is fixed; MUTATE_SEED=N
// runs another (each run logs its own).
func TestMutatedTrafficNeverBreaksSori(t *testing.T) {
	t.Parallel()
	const requests = 3000
	seed := mutateSeed(t, 20261206)
	an := startAnchor(t)
	n := startNode(t, nodeConfig{
		sip:   "  timer_c: 3s\n  timer_j: 500ms\n  dialog_timeout: 5s\n",
		extra: fmt.Sprintf("media:\n  anchors: [%q]\nsecurity:\n  rate_limit: {rate: 0}\n  auth_failures: {per_source: 0, per_user: 0}\n", an.ng),
	})
	target, err := net.ResolveUDPAddr("udp", n.addr())
	if err != nil {
		t.Fatal(err)
	}

	// bob answers whatever reaches him, his responses mutated too.
	bob := newUA(t, n, "udp", "bob")
	if res := bob.registerAuth("bob", "bob-secret", "mutate-bob@test", 1, "Contact: <sip:bob@"+bob.local+">"); res.StatusCode != 200 {
		t.Fatalf("bob's REGISTER: %d", res.StatusCode)
	}
	bobConn := bob.conn.(*net.UDPConn)
	var spoiledMu sync.Mutex
	spoiled := map[string]bool{} // alice's branches bob answered with a mutated final response
	reached := map[string]bool{} // alice's branches bob got
	seenByBob := map[string]string{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 2))
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = bobConn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			k, err := bobConn.Read(buf)
			if err != nil {
				continue
			}
			msg, err := sip.ParseMessage(bytes.Clone(buf[:k]))
			req, ok := msg.(*sip.Request)
			if err != nil || !ok || req.IsAck() {
				continue
			}
			if vias := req.GetHeaders("Via"); len(vias) > 0 {
				if v, ok := vias[len(vias)-1].(*sip.ViaHeader); ok {
					b, _ := v.Params.Get("branch")
					spoiledMu.Lock()
					reached[b] = true
					seenByBob[b] = string(buf[:k])
					spoiledMu.Unlock()
				}
			}
			for _, res := range bobAnswers(req, rng) {
				raw := res
				if rng.IntN(3) == 0 {
					raw = mutate(res, rng)
					if vias := req.GetHeaders("Via"); !strings.HasPrefix(res, "SIP/2.0 1") && len(vias) > 0 {
						// The final answer may be lost: sori's transaction
						// waits timer F (32 s) for one, beyond this test.
						// Alice's request is known by her Via's branch.
						if v, ok := vias[len(vias)-1].(*sip.ViaHeader); ok {
							b, _ := v.Params.Get("branch")
							spoiledMu.Lock()
							spoiled[b] = true
							spoiledMu.Unlock()
						}
					}
				}
				if vias := req.GetHeaders("Via"); len(vias) > 0 {
					if v, ok := vias[len(vias)-1].(*sip.ViaHeader); ok {
						b, _ := v.Params.Get("branch")
						spoiledMu.Lock()
						seenByBob[b] += "\n>>>> bob answered:\n" + raw
						spoiledMu.Unlock()
					}
				}
				if _, err := bobConn.Write([]byte(raw)); err != nil { // his socket is connected to sori
					t.Errorf("bob's answer: %v", err)
					return
				}
			}
		}
	}()

	// alice's socket; its reader notes what was answered.
	alice, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alice.Close() })
	local := alice.LocalAddr().String()
	// One challenge for the whole run (before alice's reader starts):
	// each request answers it with its own nonce count.
	nonce, realm := challengeOf(t, alice, target, local)
	var mu sync.Mutex
	answered := map[string]int{} // by Via branch: the first final (or provisional) status
	codes := map[int]int{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			_ = alice.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			k, _, err := alice.ReadFromUDP(buf)
			if err != nil {
				select {
				case <-stop:
					return
				default:
					continue
				}
			}
			// A 400 copies the request's broken headers as they came
			// (RFC 3261 §8.2.6.2), so the answer may not parse: its status
			// and alice's branch are read off the raw bytes.
			raw := string(buf[:k])
			code, ok := 0, strings.HasPrefix(raw, "SIP/2.0 ")
			if ok {
				_, err = fmt.Sscanf(raw[len("SIP/2.0 "):], "%d", &code)
			}
			b, id := branchRE.FindString(raw), callIDRE.FindString(raw)
			if !ok || err != nil || b == "" && id == "" {
				continue
			}
			mu.Lock()
			if _, seen := answered[b]; !seen && b != "" {
				codes[code]++
			}
			answered[b], answered[id] = code, code
			mu.Unlock()
		}
	}()

	rng := rand.New(rand.NewPCG(seed, 1))
	type sent struct {
		branch, callID, method string
		answerable             bool
		raw                    string
	}
	var all []sent
	for i := range requests {
		raw, method := aliceRequest(i, local, nonce, realm, rng)
		if rng.IntN(10) < 9 {
			raw = mutate(raw, rng)
		}
		branch, callID, ok := answerable(raw)
		all = append(all, sent{branch, callID, method, ok && method != "ACK", raw})
		if _, err := alice.WriteToUDP([]byte(raw), target); err != nil {
			t.Fatal(err)
		}
		if i%20 == 19 {
			time.Sleep(20 * time.Millisecond) // about 1000 requests a second
		}
	}
	time.Sleep(5 * time.Second) // timer C (3 s) and the INVITE's final responses
	close(stop)
	wg.Wait()
	t.Logf("MUTATE_SEED %d: %d requests; first answers by status %v", seed, requests, codes)

	if s := n.log(); strings.Contains(s, "panic") || strings.Contains(s, "fatal error") {
		t.Fatalf("sori panicked:\n%s", tail(s, 8000))
	}
	if code, _ := httpGet(t, "http://"+n.http+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d after the mutated traffic", code)
	}
	mu.Lock()
	spoiledMu.Lock()
	var silent []string
	for _, s := range all {
		if s.answerable && !spoiled[s.branch] {
			_, byBranch := answered[s.branch]
			_, byCallID := answered[s.callID]
			if !byBranch && !byCallID {
				silent = append(silent, fmt.Sprintf("(reached bob: %v)\n%s\n>>>> bob got:\n%s", reached[s.branch], s.raw, seenByBob[s.branch]))
				if dir := os.Getenv("MUTATE_DUMP"); dir != "" {
					_ = os.WriteFile(fmt.Sprintf("%s/silent-%d.sip", dir, len(silent)), []byte(s.raw), 0o644)
				}
			}
		}
	}
	fivehundred := codes[500]
	spoiledMu.Unlock()
	mu.Unlock()
	if fivehundred > 0 {
		t.Errorf("%d requests answered 500", fivehundred)
	}
	if len(silent) > 0 {
		t.Errorf("%d answerable requests got no answer; the first:\n%s", len(silent), strings.Join(silent[:min(len(silent), 3)], "\n----\n"))
	}

	// Still a working switch.
	carol := newUA(t, n, "udp", "alice")
	if res := carol.registerAuth("alice", "alice-secret", "mutate-after@test", 1, "Contact: <sip:alice@"+carol.local+">"); res.StatusCode != 200 {
		t.Fatalf("a clean REGISTER afterwards: %d", res.StatusCode)
	}
}

// The same mutated requests over TCP, where a broken Content-Length or
// header block breaks the stream's framing: 20 requests a connection,
// each connection read to its end. sori answers what it can, closes a
// connection it cannot frame (RFC 3261 §18.3), and stays well: no panic,
// no 500, answers on most connections, a clean REGISTER over TCP
// afterwards. The callee is not registered (480): the stream's framing,
// the checks and the parser are what this exercises.
func TestMutatedTrafficOverTCP(t *testing.T) {
	t.Parallel()
	const requests, perConn = 1500, 20
	seed := mutateSeed(t, 20261207)
	n := startNode(t, nodeConfig{
		sip:   "  timer_c: 3s\n  timer_j: 500ms\n",
		extra: "security:\n  rate_limit: {rate: 0}\n  auth_failures: {per_source: 0, per_user: 0}\n",
	})
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	target, _ := net.ResolveUDPAddr("udp", n.addr())
	nonce, realm := challengeOf(t, udp, target, udp.LocalAddr().String())
	udp.Close()

	rng := rand.New(rand.NewPCG(seed, 3))
	var answers, fiveHundreds, conns, answeredConns int
	for first := 0; first < requests; first += perConn {
		c, err := net.Dial("tcp", n.addr())
		if err != nil {
			t.Fatal(err)
		}
		conns++
		local := c.LocalAddr().String()
		var all strings.Builder
		for i := first; i < first+perConn; i++ {
			raw, _ := aliceRequest(i, local, nonce, realm, rng)
			raw = strings.Replace(raw, "SIP/2.0/UDP "+local, "SIP/2.0/TCP "+local, 1)
			raw = strings.Replace(raw, "transport=udp", "transport=tcp", 1)
			if rng.IntN(10) < 8 {
				raw = mutate(raw, rng)
			}
			all.WriteString(raw)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(all.String())); err != nil {
			c.Close()
			continue // closed on us already: a framing error answered
		}
		_ = c.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(c) // until sori closes it, or the deadline
		c.Close()
		k := strings.Count(string(got), "SIP/2.0 ")
		answers += k
		if k > 0 {
			answeredConns++
		}
		fiveHundreds += strings.Count(string(got), "SIP/2.0 500 ")
	}
	t.Logf("MUTATE_SEED %d: %d requests on %d connections: %d answers, %d connections answered", seed, requests, conns, answers, answeredConns)
	if s := n.log(); strings.Contains(s, "panic") || strings.Contains(s, "fatal error") {
		t.Fatalf("sori panicked:\n%s", tail(s, 8000))
	}
	if fiveHundreds > 0 {
		t.Errorf("%d answers were 500", fiveHundreds)
	}
	if answeredConns < conns*3/4 {
		t.Errorf("only %d of %d connections got any answer", answeredConns, conns)
	}
	if code, _ := httpGet(t, "http://"+n.http+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d after the mutated traffic", code)
	}
	after := newUA(t, n, "tcp", "alice")
	if res := after.registerAuth("alice", "alice-secret", "mutate-tcp-after@test", 1, "Contact: <sip:alice@"+after.local+";transport=tcp>"); res.StatusCode != 200 {
		t.Fatalf("a clean REGISTER over TCP afterwards: %d", res.StatusCode)
	}
}

// mutateSeed is MUTATE_SEED (another run's, to replay it, or a new one),
// else def.
func mutateSeed(t *testing.T, def uint64) uint64 {
	t.Helper()
	v := os.Getenv("MUTATE_SEED")
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("MUTATE_SEED %q: %v", v, err)
	}
	return n
}

// challengeOf gets one 407 for alice and returns its nonce and realm.
func challengeOf(t *testing.T, c *net.UDPConn, to *net.UDPAddr, local string) (nonce, realm string) {
	t.Helper()
	req := fmt.Sprintf("MESSAGE sip:bob@sori.test SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-mutate-challenge;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:alice@sori.test>;tag=mc\r\nTo: <sip:bob@sori.test>\r\nCall-ID: mutate-challenge@test\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n", local)
	if _, err := c.WriteToUDP([]byte(req), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, _, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sip.ParseMessage(buf[:k])
	res, ok := msg.(*sip.Response)
	if err != nil || !ok || res.StatusCode != 407 {
		t.Fatalf("want a 407, got %v %v", msg, err)
	}
	h := res.GetHeader("Proxy-Authenticate").Value()
	param := func(name string) string {
		_, v, _ := strings.Cut(h, name+`="`)
		v, _, _ = strings.Cut(v, `"`)
		return v
	}
	return param("nonce"), param("realm")
}

// aliceRequest is request i of alice's run, digest-authenticated (nonce
// count i+1) for the methods that need it, and its method.
func aliceRequest(i int, local, nonce, realm string, rng *rand.Rand) (string, string) {
	methods := []string{"INVITE", "INVITE", "INVITE", "MESSAGE", "MESSAGE", "SUBSCRIBE", "BYE", "UPDATE", "INFO", "PRACK",
		"CANCEL", "ACK", "REGISTER", "OPTIONS", "NOTIFY", "REFER", "PUBLISH", "FOO"}
	method := methods[rng.IntN(len(methods))]
	ruri := "sip:bob@sori.test"
	switch method {
	case "REGISTER", "OPTIONS":
		ruri = "sip:sori.test"
	}
	callID := fmt.Sprintf("mutate-%d@test", i)
	to := "<sip:bob@sori.test>"
	if method == "BYE" || method == "UPDATE" || method == "INFO" || method == "PRACK" || method == "NOTIFY" {
		to += ";tag=bob-" + fmt.Sprint(i) // in a dialog sori never set up
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", method, ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK-mutate-%d;rport\r\n", local, i)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: \"Alice\" <sip:alice@sori.test>;tag=a-%d\r\n", i)
	fmt.Fprintf(&b, "To: %s\r\n", to)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", callID)
	fmt.Fprintf(&b, "CSeq: %d %s\r\n", 1+rng.IntN(5), method)
	fmt.Fprintf(&b, "Contact: <sip:alice@%s;transport=udp>;+sip.instance=\"<urn:uuid:%08x-0000-1000-8000-000000000001>\"\r\n", local, i)
	switch method {
	case "SUBSCRIBE", "NOTIFY", "PUBLISH":
		b.WriteString("Event: presence\r\nExpires: 600\r\n")
	case "REFER":
		b.WriteString("Refer-To: <sip:carol@sori.test>\r\n")
	case "PRACK":
		b.WriteString("RAck: 1 1 INVITE\r\n")
	case "REGISTER":
		b.WriteString("Expires: 600\r\n")
	}
	if rng.IntN(2) == 0 {
		b.WriteString("Supported: 100rel, timer, outbound\r\nSession-Expires: 1800\r\nUser-Agent: mutate/1.0\r\n")
	}
	if method != "ACK" && method != "CANCEL" {
		// The digest covers method and URI only: mutated headers keep it
		// valid, so the request gets past caller authentication.
		hdr := "Proxy-Authorization"
		if method == "REGISTER" {
			hdr = "Authorization"
		}
		nc := fmt.Sprintf("%08x", i+1)
		ha1 := md5hex("alice:" + realm + ":alice-secret")
		ha2 := md5hex(method + ":" + ruri)
		resp := md5hex(ha1 + ":" + nonce + ":" + nc + ":c0ffee:auth:" + ha2)
		fmt.Fprintf(&b, "%s: Digest username=\"alice\",realm=%q,nonce=%q,uri=%q,response=%q,algorithm=MD5,qop=auth,nc=%s,cnonce=\"c0ffee\"\r\n",
			hdr, realm, nonce, ruri, resp, nc)
	}
	var body, ctype string
	switch method {
	case "INVITE", "UPDATE":
		body = fmt.Sprintf("v=0\r\no=alice %d 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
			"m=audio %d RTP/AVP 111 0 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n", i, 30000+2*(i%1000))
		if rng.IntN(3) == 0 {
			body += "m=video 0 RTP/AVP 96\r\n"
		}
		if rng.IntN(4) == 0 {
			body = strings.Replace(body, "RTP/AVP", "RTP/SAVP", 1) + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n"
		}
		ctype = "application/sdp"
	case "MESSAGE":
		body, ctype = "hello bob "+strings.Repeat("x", rng.IntN(200)), "text/plain"
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", ctype)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String(), method
}

// bobAnswers are bob's responses to req: 100 and 180 then 486 or 200 with
// SDP for an INVITE, 200 for anything else.
func bobAnswers(req *sip.Request, rng *rand.Rand) []string {
	head := func(code int, reason string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
		for _, v := range req.GetHeaders("Via") {
			fmt.Fprintf(&b, "Via: %s\r\n", v.Value())
		}
		for _, name := range []string{"From", "Call-ID", "CSeq", "Record-Route"} {
			for _, h := range req.GetHeaders(name) {
				fmt.Fprintf(&b, "%s: %s\r\n", name, h.Value())
			}
		}
		if to := req.To(); to != nil {
			v := to.Value()
			if code > 100 && !to.Params.Has("tag") {
				v += ";tag=bob-answers"
			}
			fmt.Fprintf(&b, "To: %s\r\n", v)
		}
		b.WriteString("Contact: <sip:bob@127.0.0.1:5999>\r\n")
		return b.String()
	}
	empty := func(code int, reason string) string { return head(code, reason) + "Content-Length: 0\r\n\r\n" }
	if !req.IsInvite() {
		return []string{empty(200, "OK")}
	}
	out := []string{empty(100, "Trying"), empty(180, "Ringing")}
	if rng.IntN(2) == 0 {
		return append(out, empty(486, "Busy Here"))
	}
	sdp := "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 31000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n"
	return append(out, head(200, "OK")+fmt.Sprintf("Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", len(sdp), sdp))
}

// hostile are values a mutation puts in a header.
var hostile = []string{
	"", " ", ";", ";;;", ",", "<>", "<", ">", "\"", "\"unbalanced", "<sip:", "sip:", "sip:@", "sip:a@", "sip:a@[::1", "sip:a@256.1.1.1",
	"sip:a@b:99999", "sip:a@b:-1", "tel:+", "<sip:x@y>;tag=", "<sip:x@y>;tag", "-1", "0", "4294967296", "99999999999999999999",
	"1 INVITE", "1", "INVITE", "x INVITE", "SIP/2.0/UDP", "SIP/2.0/UDP 127.0.0.1;branch=", "SIP/2.0/XYZ a:b:c", "a\x00b",
	"a\x01b\x7f", "\xff\xfe", "Digest", "Digest username=", "Digest nonce=\"\"", "*", "%00", "%zz", "\t\t", "\\", "\\\"",
	strings.Repeat("a", 9000), strings.Repeat("<sip:a@b>,", 300), strings.Repeat(";p=1", 500),
}

// headerNames are names a mutation gives a line (compact forms too).
var headerNames = []string{"Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m", "Content-Length", "l",
	"Content-Type", "c", "Max-Forwards", "Route", "Record-Route", "Require", "Proxy-Require", "Supported", "k", "Expires",
	"Session-Expires", "x", "RAck", "RSeq", "Event", "o", "Refer-To", "r", "Path", "Authorization", "Proxy-Authorization",
	"Content-Encoding", "e", "Allow", "P-Asserted-Identity", "Privacy", "Reason", "Replaces", "Min-SE", "Accept"}

// mutate changes raw (a request or response) one to four times.
func mutate(raw string, rng *rand.Rand) string {
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	for range 1 + rng.IntN(4) {
		i := rng.IntN(len(lines))
		if i == 0 && rng.IntN(4) != 0 {
			i = 1 + rng.IntN(max(len(lines)-1, 1))
			if i >= len(lines) {
				i = 0
			}
		}
		name, value, _ := strings.Cut(lines[i], ":")
		switch rng.IntN(10) {
		case 0: // dropped
			lines = append(lines[:i], lines[i+1:]...)
			if len(lines) == 0 {
				lines = []string{"INVITE sip:bob@sori.test SIP/2.0"}
			}
		case 1: // doubled
			lines = append(lines[:i+1], lines[i:]...)
		case 2: // a hostile value
			lines[i] = name + ": " + hostile[rng.IntN(len(hostile))]
		case 3: // a hostile value after the real one
			lines[i] = lines[i] + hostile[rng.IntN(len(hostile))]
		case 4: // another header's name
			lines[i] = headerNames[rng.IntN(len(headerNames))] + ":" + value
		case 5: // truncated
			lines[i] = lines[i][:rng.IntN(len(lines[i])+1)]
		case 6: // a new header
			lines = append(lines[:i], append([]string{headerNames[rng.IntN(len(headerNames))] + ": " + hostile[rng.IntN(len(hostile))]}, lines[i:]...)...)
		case 7: // the body broken
			if body != "" {
				cut := rng.IntN(len(body) + 1)
				body = body[:cut] + hostile[rng.IntN(len(hostile))] + "\r\n" + body[cut:]
			}
		case 8: // folded (obsolete line folding)
			lines[i] = name + ":\r\n  " + value
		case 9: // a bad byte somewhere
			if l := lines[i]; l != "" {
				k := rng.IntN(len(l))
				lines[i] = l[:k] + string(rune([]byte{0, '\r', '\n', 0x7f, 0xc0, ' ', ',', ';', '<', '"'}[rng.IntN(10)])) + l[k+1:]
			}
		}
	}
	return strings.Join(lines, "\r\n") + "\r\n\r\n" + body
}

// branchRE and callIDRE find alice's branch and Call-ID in a message: an
// answer is hers if it carries either (a 400 may have cut her Via where a
// bare LF ended its line early).
var (
	branchRE = regexp.MustCompile(`z9hG4bK-mutate-[0-9]+`)
	callIDRE = regexp.MustCompile(`mutate-[0-9]+@test`)
)

// answerable reports whether sori can answer raw: it parses as a request
// with the headers a response copies (RFC 3261 §8.2.6.2); and its top
// Via's branch and its Call-ID, as branchRE and callIDRE find them.
func answerable(raw string) (branch, callID string, ok bool) {
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		return "", "", false
	}
	req, isReq := msg.(*sip.Request)
	if !isReq || req.Via() == nil || req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil {
		return "", "", false
	}
	// A start line that is no Request-Line ("MESSAG", the rest of it
	// after a bare LF, which sipgo reads as folded) is not SIP: dropped.
	if first, _, _ := strings.Cut(raw, "\n"); !strings.HasSuffix(strings.ToUpper(strings.TrimSuffix(first, "\r")), " SIP/2.0") {
		return "", "", false
	}
	// Where the Via's line really ends (sipgo reads on past a bare LF).
	for _, l := range strings.Split(raw, "\n") {
		if name, _, ok := strings.Cut(l, ":"); ok && (strings.EqualFold(name, "via") || strings.EqualFold(name, "v")) {
			branch = branchRE.FindString(l)
			break
		}
	}
	callID = callIDRE.FindString(req.CallID().Value())
	return branch, callID, branch != ""
}

func md5hex(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }
