package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/rtptest"
	"github.com/sori-voice/sori/media/sdp"
)

// anchorProc is one running sori-anchor.
type anchorProc struct {
	ng, http   string
	minPort    int
	maxPort    int
	mu         sync.Mutex
	logs       bytes.Buffer
	cmd        *exec.Cmd
	exited     chan struct{}
	extraFlags []string
}

// nextRange hands each anchor of this test run its own port range, one
// no other process holds (rangeFree).
var (
	rangeMu   sync.Mutex
	nextRange = 43000
)

// rangeFree reports whether every UDP port of lo..lo+199 on 127.0.0.1 can
// be bound now: another test process on the machine (another package's
// tests, another checkout's harness) may hold a range this one hands out.
func rangeFree(lo int) bool {
	var held []net.PacketConn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for p := lo; p < lo+200; p++ {
		c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		held = append(held, c)
	}
	return true
}

// takeRange hands out the next free range of 200 media ports.
func takeRange() int {
	rangeMu.Lock()
	defer rangeMu.Unlock()
	lo := nextRange
	for nextRange += 200; !rangeFree(lo) && nextRange < 60800; nextRange += 200 {
		lo = nextRange
	}
	return lo
}

func startAnchor(t *testing.T, flags ...string) *anchorProc {
	t.Helper()
	lo := takeRange()
	a := &anchorProc{ng: fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t)), http: fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t)),
		minPort: lo, maxPort: lo + 199, exited: make(chan struct{}), extraFlags: flags}
	args := append([]string{"-ng", a.ng, "-rtp-ports", fmt.Sprintf("%d-%d", a.minPort, a.maxPort), "-listen", "127.0.0.1",
		"-http", a.http, "-log-level", "debug"}, flags...)
	a.cmd = exec.Command(buildBinary(t, "../sori-anchor", "sori-anchor"), args...)
	a.run(t, "sori-anchor", true, func(log string) string { return tail(log, 6000) })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _ := httpGetQuiet("http://" + a.http + "/healthz"); code == 200 {
			return a
		}
		select {
		case <-a.exited:
			t.Fatalf("sori-anchor exited at start:\n%s", a.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("sori-anchor did not start")
		}
	}
}

// run starts a.cmd with its output in a.logs, and stops it (SIGTERM, then
// SIGKILL after 10 s: an error if mustStop) when the test ends, logging
// shown(its log) if the test failed.
func (a *anchorProc) run(t *testing.T, name string, mustStop bool, shown func(log string) string) {
	t.Helper()
	a.cmd.Stdout = lockedWriter{&a.mu, &a.logs}
	a.cmd.Stderr = lockedWriter{&a.mu, &a.logs}
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(10 * time.Second):
			_ = a.cmd.Process.Kill()
			if mustStop {
				t.Errorf("%s did not stop within 10 s of SIGTERM", name)
			}
		}
		if t.Failed() {
			a.mu.Lock()
			t.Logf("%s log:\n%s", name, shown(a.logs.String()))
			a.mu.Unlock()
		}
	})
}

func (a *anchorProc) metric(t *testing.T, name string) string {
	t.Helper()
	_, body := httpGet(t, "http://"+a.http+"/metrics")
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, name+" ") {
			return strings.TrimPrefix(l, name+" ")
		}
	}
	return ""
}

// mediaSocket is a phone's RTP socket.
type mediaSocket struct {
	t    *testing.T
	conn *net.UDPConn
}

func newMediaSocket(t *testing.T) *mediaSocket {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &mediaSocket{t: t, conn: c}
}

func (m *mediaSocket) port() int { return m.conn.LocalAddr().(*net.UDPAddr).Port }

// sdp is a phone's Opus offer for its media socket.
func (m *mediaSocket) sdp(sessionID int) string { return phoneSDP(sessionID, m.port()) }

// phoneSDP is a phone's Opus offer (or answer) with its RTP on port.
func phoneSDP(sessionID, port int) string {
	return fmt.Sprintf("v=0\r\no=- %d 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 111 101\r\n"+
		"a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:101 telephone-event/48000\r\na=sendrecv\r\n", sessionID, port)
}

// mediaTarget reads where an SDP body sends media.
func mediaTarget(t *testing.T, body []byte) netip.AddrPort {
	t.Helper()
	s, err := sdp.Parse(body)
	if err != nil || len(s.Media) != 1 {
		t.Fatalf("SDP %v:\n%s", err, body)
	}
	if !strings.Contains(string(body), "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n") {
		t.Fatalf("the Opus lines did not pass untouched:\n%s", body)
	}
	return netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port))
}

// streamBothWays streams n packets each way: a's to toA reach b from
// toB (the anchor's port for b), then b's to toB reach a from toA.
func streamBothWays(t *testing.T, a *mediaSocket, toA netip.AddrPort, b *mediaSocket, toB netip.AddrPort, ssrcA, ssrcB uint32, n int) {
	t.Helper()
	stream(t, a, toA, b, toB, ssrcA, n)
	stream(t, b, toB, a, toA, ssrcB, n)
}

// stream sends n Opus packets from one phone to the anchor and checks the
// other phone gets each one unchanged, from the anchor's address.
func stream(t *testing.T, from *mediaSocket, to netip.AddrPort, at *mediaSocket, wantSrc netip.AddrPort, ssrc uint32, n int) {
	t.Helper()
	buf := make([]byte, 2048)
	for i := 0; i < n; i++ {
		p := rtptest.OpusPacket(uint16(i), ssrc)
		raw, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := from.conn.WriteToUDPAddrPort(raw, to); err != nil {
			t.Fatal(err)
		}
		_ = at.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, src, err := at.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("packet %d of SSRC %x lost: %v", i, ssrc, err)
		}
		var got rtp.Packet
		if err := got.Unmarshal(buf[:k]); err != nil || !bytes.Equal(got.Payload, p.Payload) || got.SequenceNumber != uint16(i) || got.SSRC != ssrc {
			t.Fatalf("packet %d changed on the way (%v)", i, err)
		}
		if src != wantSrc {
			t.Fatalf("packet %d came from %s, want the anchor's %s", i, src, wantSrc)
		}
	}
}

// mediaCall is a call from alice to bob through a sori node, answered
// and acknowledged: the INVITE as bob got it, the 200 as alice got it.
type mediaCall struct {
	alice, bob *ua
	inv        *sip.Request
	res        *sip.Response
}

// callWithMedia registers bob, has alice call him offering ma, bob answer
// with mb, and alice ACK.
func callWithMedia(t *testing.T, n *node, ma, mb *mediaSocket, inviteExtra ...string) *mediaCall {
	t.Helper()
	c := &mediaCall{alice: newUA(t, n, "udp", "alice"), bob: newUA(t, n, "udp", "bob")}
	if res := c.bob.registerAuth("bob", "bob-secret", "media-reg-"+c.bob.local+"@test", 1, "Contact: <sip:bob@"+c.bob.local+">"); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	c.alice.sdp = ma.sdp(1001)
	c.alice.authenticated("INVITE", "sip:bob@sori.test", inviteExtra...)
	c.inv = c.bob.readRequest()
	c.bob.respondSDP(c.inv, 200, "OK", mb.sdp(2002), "Contact: <sip:bob@"+c.bob.local+">")
	c.res = c.alice.final()
	if c.res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", c.res.StatusCode)
	}
	c.alice.sdp = ""
	c.alice.send(c.alice.inDialog("ACK", 2, c.res))
	c.bob.readRequest()
	return c
}

// Two phones call through sori with media anchored by sori-anchor: every
// RTP packet goes both ways through the anchor, unchanged, and the call
// record shows the call.
func TestAnchoredCall(t *testing.T) {
	an := startAnchor(t)
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	n := startNode(t, anchoredConfig("cdr:\n  file: "+cdr+"\n", an.ng))

	ma, mb := newMediaSocket(t), newMediaSocket(t)
	c := callWithMedia(t, n, ma, mb)
	alice, bob, res := c.alice, c.bob, c.res
	toAnchorFromB := mediaTarget(t, c.inv.Body())
	if !an.hasPort(toAnchorFromB) {
		t.Fatalf("bob's INVITE sends media to %s, not to the anchor", toAnchorFromB)
	}
	toAnchorFromA := mediaTarget(t, res.Body())
	if !an.hasPort(toAnchorFromA) || toAnchorFromA == toAnchorFromB {
		t.Fatalf("alice's 200 sends media to %s (bob's side: %s)", toAnchorFromA, toAnchorFromB)
	}

	streamBothWays(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce, 0xb0b, 100)
	if got := an.metric(t, "sori_anchor_calls"); got != "1" {
		t.Fatalf("anchor holds %q calls", got)
	}

	hangUp(t, alice, bob, 3, res)
	// The call leaves the anchor's table before its ports are released
	// (the ng delete answers after both): wait for both.
	waitAnchorEmpty(t, an)
	recs := records(t, cdr, "bob", 1)
	if r := recs[0]; r.Disposition != "answered" || r.HangupBy != "caller" || r.Code != 200 {
		t.Fatalf("call record %+v", r)
	}
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	for _, want := range []string{`sori_media_anchor_up{anchor="` + an.ng + `"} 1`, `sori_media_commands_total{command="offer",outcome="ok"} 1`,
		`sori_media_commands_total{command="answer",outcome="ok"} 1`, `sori_media_commands_total{command="delete",outcome="ok"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("sori metrics lack %s", want)
		}
	}
}

// With its only anchor down, sori refuses new calls rather than letting
// media go where it cannot follow.
func TestNoAnchorRefusesCalls(t *testing.T) {
	dead := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
	n := startNode(t, anchoredConfig("  timeout: 300ms\n", dead))
	registeredBob(t, n, "dead-reg@test") // the call has where to go, but for media
	alice := newUA(t, n, "udp", "alice")
	alice.sdp = newMediaSocket(t).sdp(1)
	alice.authenticated("INVITE", "sip:bob@sori.test")
	res := alice.final()
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("got %d %s", res.StatusCode, res.Reason)
	}
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	if !strings.Contains(metrics, `sori_media_anchor_up{anchor="`+dead+`"} 0`) {
		t.Fatal("the dead anchor is not marked down")
	}
}

// httpGetQuiet is httpGet for polling: an error is status 0.
func httpGetQuiet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// When the anchor sees no media for -media-timeout, sori hangs up: both
// phones get a BYE, and the call record says media-timeout.
func TestMediaTimeoutEndsTheCall(t *testing.T) {
	an := startAnchor(t, "-media-timeout", "1s")
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	n := startNode(t, nodeConfig{extra: fmt.Sprintf("media:\n  anchors: [%q]\ncdr:\n  file: %s\n", an.ng, cdr)})
	ma, mb := newMediaSocket(t), newMediaSocket(t)
	c := callWithMedia(t, n, ma, mb)
	alice, bob, inv, res := c.alice, c.bob, c.inv, c.res
	stream(t, ma, mediaTarget(t, res.Body()), mb, mediaTarget(t, inv.Body()), 1, 20)
	// The media stops; nobody hangs up.
	start := time.Now()
	for _, phone := range []*ua{alice, bob} {
		_ = phone.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		bye := phone.readRequest()
		if bye.Method != sip.BYE || bye.CallID().Value() != res.CallID().Value() {
			t.Fatalf("%s got %s", phone.user, bye.Method)
		}
		phone.respond(bye, 200, "OK")
	}
	if waited := time.Since(start); waited > 4*time.Second {
		t.Fatalf("BYEs came %s after the media stopped", waited)
	}
	r := records(t, cdr, "bob", 1)[0]
	if r.Disposition != "media-timeout" || r.HangupBy != "media-timeout" || r.Answer == nil {
		t.Fatalf("call record %+v", r)
	}
	if r.CallerMedia == nil || r.CallerMedia.Sent != 20 || r.CallerMedia.Lost != 0 {
		t.Fatalf("media quality in the record: %+v", r.CallerMedia)
	}
}

// mediaPair is a phone's RTP socket and its RTCP socket on the port above.
func mediaPair(t *testing.T) (*mediaSocket, *mediaSocket) {
	t.Helper()
	for range 100 {
		rtpSock := newMediaSocket(t)
		if rtpSock.port()%2 != 0 {
			continue
		}
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: rtpSock.port() + 1})
		if err != nil {
			continue
		}
		t.Cleanup(func() { c.Close() })
		return rtpSock, &mediaSocket{t: t, conn: c}
	}
	t.Fatal("no adjacent RTP/RTCP ports")
	return nil, nil
}

// A sender that loses 5 % of its packets and jitters the rest: the
// anchor's receiver reports to it say ~5 % lost, the ng query says the
// same of that hop, and the clean direction shows none.
func TestLossIsReportedPerHop(t *testing.T) {
	an := startAnchor(t, "-rtcp-interval", "300ms")
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	// Alice says she is on an LTE cell of PLMN 450-05; Bob's media comes
	// from 127.0.0.0/8.
	n := startNode(t, nodeConfig{extra: fmt.Sprintf("media:\n  anchors: [%q]\ncdr:\n  file: %s\n"+
		"networks:\n  - {name: carrier-a, plmns: [\"45005\"]}\n  - {name: loopback-isp, prefixes: [\"127.0.0.0/8\"]}\n"+
		"users:\n  - {name: alice, password: alice-secret, tags: {plan: lte-62}}\n  - {name: bob, password: bob-secret, tags: {plan: unlimited}}\n", an.ng, cdr)})
	ma, ra := mediaPair(t)
	mb, rb := mediaPair(t)
	c := callWithMedia(t, n, ma, mb, "P-Access-Network-Info: 3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=45005001a2b3c4d5")
	alice, bob, inv, res := c.alice, c.bob, c.inv, c.res
	if inv.GetHeader("P-Access-Network-Info") != nil {
		t.Fatal("alice's cell identity reached bob (RFC 7315 §4.4)")
	}
	toA, toB := mediaTarget(t, res.Body()), mediaTarget(t, inv.Body())

	// 250 packets each way, 20 ms apart. Alice's every 20th is lost, the
	// rest arrive up to 15 ms late; Bob's all arrive on time.
	rng := rand.New(rand.NewPCG(7, 8))
	go func() {
		for seq := 0; seq < 250; seq++ {
			p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(seq), Timestamp: uint32(seq) * 960, SSRC: 0xb0b}, Payload: make([]byte, 80)}
			raw, _ := p.Marshal()
			_, _ = mb.conn.WriteToUDPAddrPort(raw, toB)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for seq := 0; seq < 250; seq++ {
		start := time.Now()
		if seq%20 != 11 {
			time.Sleep(time.Duration(rng.Int64N(int64(15 * time.Millisecond))))
			p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(seq), Timestamp: uint32(seq) * 960, SSRC: 0xa11ce}, Payload: make([]byte, 80)}
			raw, _ := p.Marshal()
			_, _ = ma.conn.WriteToUDPAddrPort(raw, toA)
		}
		time.Sleep(20*time.Millisecond - time.Since(start))
	}
	time.Sleep(400 * time.Millisecond) // one more report interval

	// The last report each phone got from the anchor, and the mean of the
	// fractions lost all its reports gave (x/256).
	fractions := map[*mediaSocket][]float64{}
	lastReport := func(s *mediaSocket) (*rtcp.ReceiverReport, *rtcp.VoIPMetricsReportBlock) {
		t.Helper()
		var rr *rtcp.ReceiverReport
		var voip *rtcp.VoIPMetricsReportBlock
		buf := make([]byte, 1500)
		for {
			_ = s.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			k, _, err := s.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return rr, voip
			}
			pkts, err := rtcp.Unmarshal(buf[:k])
			if err != nil {
				t.Fatalf("RTCP from the anchor does not parse: %v", err)
			}
			for _, p := range pkts {
				switch x := p.(type) {
				case *rtcp.ReceiverReport:
					rr = x
					if len(x.Reports) > 0 {
						fractions[s] = append(fractions[s], float64(x.Reports[0].FractionLost))
					}
				case *rtcp.ExtendedReport:
					for _, b := range x.Reports {
						if v, ok := b.(*rtcp.VoIPMetricsReportBlock); ok {
							voip = v
						}
					}
				}
			}
		}
	}
	rrA, voipA := lastReport(ra)
	rrB, voipB := lastReport(rb)
	if rrA == nil || voipA == nil || rrB == nil || voipB == nil {
		t.Fatal("a phone got no receiver report from the anchor")
	}
	mean := func(xs []float64) float64 {
		sum := 0.0
		for _, x := range xs {
			sum += x
		}
		return sum / float64(len(xs))
	}
	if f := mean(fractions[ra]); len(fractions[ra]) < 10 || f < 0.03*256 || f > 0.07*256 {
		t.Fatalf("alice got %d reports, mean fraction lost %.1f/256, want ~5 %%", len(fractions[ra]), f)
	}
	if f := mean(fractions[rb]); f != 0 {
		t.Fatalf("bob's reports show %.1f/256 lost", f)
	}
	a, b := rrA.Reports[0], rrB.Reports[0]
	lossA := float64(a.TotalLost) / float64(a.LastSequenceNumber+1)
	if a.SSRC != 0xa11ce || lossA < 0.045 || lossA > 0.055 || voipA.LossRate < 11 || voipA.LossRate > 14 || a.Jitter == 0 {
		t.Fatalf("alice's hop: %+v, VoIP %+v", a, voipA)
	}
	if b.SSRC != 0xb0b || b.TotalLost != 0 || b.FractionLost != 0 || voipB.LossRate != 0 || voipB.MOSLQ < voipA.MOSLQ {
		t.Fatalf("bob's hop: %+v, VoIP %+v", b, voipB)
	}

	// Bob reports, as a phone does, what reached him of alice's stream:
	// the uplink's losses and 3 more on the hop anchor → bob.
	bobRR := &rtcp.ReceiverReport{SSRC: 0xb0b, Reports: []rtcp.ReceptionReport{{SSRC: 0xa11ce, TotalLost: a.TotalLost + 3, LastSequenceNumber: a.LastSequenceNumber}}}
	raw, _ := bobRR.Marshal()
	if _, err := rb.conn.WriteToUDPAddrPort(raw, netip.AddrPortFrom(toB.Addr(), toB.Port()+1)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)

	// The ng query says the same of each hop.
	q := ngQuery(t, an, res.CallID().Value())
	hop := func(tag string) ng.Dict {
		medias, _ := q.Dict("tags").Dict(tag)["medias"].([]any)
		streams, _ := ng.Dict(medias[0].(map[string]any))["streams"].([]any)
		return ng.Dict(streams[0].(map[string]any)).Dict("reception")
	}
	fromTag := res.From().Params.GetOr("tag", "")
	toTag := res.To().Params.GetOr("tag", "")
	if lost, _ := hop(fromTag).Int("lost"); lost != int64(a.TotalLost) {
		t.Fatalf("query says alice's hop lost %d, RTCP %d", lost, a.TotalLost)
	}
	if lost, _ := hop(toTag).Int("lost"); lost != 0 {
		t.Fatalf("query says bob's hop lost %d", lost)
	}

	// And so does the call record.
	alice.send(alice.inDialog("BYE", 3, res))
	bob.respond(bob.readRequest(), 200, "OK")
	alice.final()
	r := records(t, cdr, "bob", 1)[0]
	if r.CallerMedia == nil || r.CalleeMedia == nil {
		t.Fatalf("call record without media quality: %+v", r)
	}
	if c := r.CallerMedia; c.Lost != int64(a.TotalLost) || c.LossPct < 4.5 || c.LossPct > 5.5 || c.MOS >= r.CalleeMedia.MOS || r.MOS != c.MOS {
		t.Fatalf("caller media %+v, call MOS %.1f", c, r.MOS)
	}
	if c := r.CalleeMedia; c.Lost != 0 || c.LossPct != 0 || c.Sent < 200 || c.MOS < 4.3 {
		t.Fatalf("callee media %+v", c)
	}
	if want := math.Round(10000*3/float64(a.LastSequenceNumber+1)) / 100; r.CalleeMedia.DownLossPct != want {
		t.Fatalf("bob's downlink (anchor → bob) lost %.2f %%, want %.2f %%", r.CalleeMedia.DownLossPct, want)
	}
	if r.CallerMedia.Network != "carrier-a" || r.CalleeMedia.Network != "loopback-isp" {
		t.Fatalf("networks: caller %q, callee %q", r.CallerMedia.Network, r.CalleeMedia.Network)
	}
	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	for _, want := range []string{`sori_media_loss_ratio_count{access="lte",hop="uplink",network="carrier-a"} 1`,
		`sori_media_mos_count{access="unknown",hop="uplink",network="loopback-isp"} 1`,
		`sori_media_loss_ratio_count{access="unknown",hop="downlink",network="loopback-isp"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if r.CallerMedia.Access != "lte" || r.CallerMedia.Tags["plan"] != "lte-62" || r.CalleeMedia.Tags["plan"] != "unlimited" {
		t.Fatalf("access %q, tags %v / %v", r.CallerMedia.Access, r.CallerMedia.Tags, r.CalleeMedia.Tags)
	}

	// The quality map has the call: alice's uplink on carrier-a over LTE,
	// ~5 % lost, in the hour it was answered; cut by plan too.
	var qr struct {
		Rows []struct {
			Dims    map[string]string `json:"dims"`
			Calls   int               `json:"calls"`
			LossPct *float64          `json:"loss_pct"`
			Enough  bool              `json:"enough"`
		} `json:"rows"`
	}
	code, body := httpGet(t, "http://"+n.http+"/api/quality?from=-2h&by=network,hop,access")
	if err := json.Unmarshal([]byte(body), &qr); code != 200 || err != nil {
		t.Fatalf("/api/quality: %d %v\n%s", code, err, body)
	}
	found := false
	for _, row := range qr.Rows {
		if row.Dims["network"] == "carrier-a" && row.Dims["hop"] == "uplink" && row.Dims["access"] == "lte" {
			found = row.Calls == 1 && row.LossPct != nil && *row.LossPct > 4.5 && *row.LossPct < 5.5 && !row.Enough
		}
	}
	if !found {
		t.Fatalf("/api/quality has no carrier-a LTE uplink row with the call's loss:\n%s", body)
	}
	if code, body := httpGet(t, "http://"+n.http+"/api/quality?from=-2h&by=tag:plan,hop"); code != 200 || !strings.Contains(body, `"tag:plan":"lte-62"`) {
		t.Fatalf("/api/quality by plan: %d\n%s", code, body)
	}
	if code, body := httpGet(t, "http://"+n.http+"/api/quality?by=city"); code != 400 || !strings.Contains(body, `"param":"by"`) {
		t.Fatalf("a bad by: %d %s", code, body)
	}
	if code, body := httpGet(t, "http://"+n.http+"/quality"); code != 200 || !strings.Contains(body, "<html") {
		t.Fatalf("/quality: %d", code)
	}
	if code, _ := httpGet(t, "http://"+n.http+"/quality/public"); code != 404 {
		t.Fatalf("/quality/public when quality.public is off: %d", code)
	}
	if code, body := httpGet(t, "http://"+n.http+"/api/calls/"+url.PathEscape(r.CallID)); code != 200 || !strings.Contains(body, r.CallID) {
		t.Fatalf("/api/calls: %d %s", code, body)
	}
}
