package anchoring

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/sip/calls"
)

// fakeAnchor is an ng server that records the commands it gets.
type fakeAnchor struct {
	srv  *ng.Server
	mu   sync.Mutex
	cmds []ng.Dict
	from netip.AddrPort
	down bool // answers nothing
}

func startFake(t *testing.T) *fakeAnchor {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAnchor{}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	f.srv = ng.NewServer(conn, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h := ng.HandlerFunc(func(_ context.Context, cmd string, req ng.Dict, from netip.AddrPort) ng.Dict {
		f.mu.Lock()
		if f.down {
			f.mu.Unlock()
			<-stop // never answers: the client times out
			return nil
		}
		defer f.mu.Unlock()
		f.cmds = append(f.cmds, req)
		f.from = from
		switch cmd {
		case "ping":
			return ng.Dict{"result": "pong"}
		case "offer", "answer":
			return ng.OK(ng.Dict{"sdp": strings.Replace(req.Str("sdp"), "c=IN IP4 192.0.2.10", "c=IN IP4 203.0.113.5", 1)})
		}
		return ng.OK(nil)
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = f.srv.Serve(ctx, h) }()
	t.Cleanup(cancel)
	return f
}

func (f *fakeAnchor) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.cmds {
		out = append(out, c.Str("command"))
	}
	return out
}

// timeouts collects the media timeouts a pool hands on.
type timeouts chan string

func (c timeouts) MediaTimeout(_ netip.AddrPort, callID string, _ map[string]calls.MediaQuality) {
	c <- callID
}

func newPool(t *testing.T, anchors ...*fakeAnchor) *Pool {
	t.Helper()
	var addrs []netip.AddrPort
	for _, a := range anchors {
		addrs = append(addrs, a.srv.Addr())
	}
	p, err := New(Config{Anchors: addrs, Timeout: 300 * time.Millisecond, PingInterval: time.Hour,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

const offerSDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 111\r\n"

func invite(t *testing.T, callID, body, contentType string) *sip.Request {
	t.Helper()
	raw := "INVITE sip:bob@sori.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1\r\nFrom: <sip:alice@sori.test>;tag=ta\r\n" +
		"To: <sip:bob@sori.test>\r\nCall-ID: " + callID + "\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
	if contentType != "" {
		raw += "Content-Type: " + contentType + "\r\n"
	}
	raw += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	m, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	req := m.(*sip.Request)
	req.SetSource("198.51.100.7:5060")
	return req
}

func TestOfferAnswerDeleteGoToTheCallsAnchor(t *testing.T) {
	a := startFake(t)
	p := newPool(t, a)
	ctx := context.Background()
	req := invite(t, "c1", offerSDP, "application/sdp")
	on, ok, err := p.Offer(ctx, req, netip.AddrPort{}, "")
	if err != nil || !ok || on != a.srv.Addr() {
		t.Fatalf("offer: %v %v on %v", ok, err, on)
	}
	if !strings.Contains(string(req.Body()), "c=IN IP4 203.0.113.5") || int(*req.ContentLength()) != len(req.Body()) {
		t.Fatalf("body not rewritten, or Content-Length stale:\n%s", req.Body())
	}
	a.mu.Lock()
	offer := a.cmds[0]
	a.mu.Unlock()
	if offer.Str("from-tag") != "ta" || offer.Str("via-branch") != "z9hG4bK-1" || offer.List("received-from")[1] != "198.51.100.7" || !offer.Has("replace", "origin") || offer.Str("ICE") != "remove" {
		t.Fatalf("offer %v", offer)
	}
	res := sip.NewResponseFromRequest(invite(t, "c1", "", ""), 200, "OK", nil)
	res.To().Params.Add("tag", "tb")
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res.SetBody([]byte(offerSDP))
	res.SetSource("203.0.113.9:5060")
	if err := p.Answer(ctx, on, req, res, ""); err != nil || !strings.Contains(string(res.Body()), "203.0.113.5") {
		t.Fatalf("answer: %v\n%s", err, res.Body())
	}
	// A re-offer in the dialog goes to the call's anchor.
	if again, ok, err := p.Offer(ctx, invite(t, "c1", offerSDP, "application/sdp"), on, ""); err != nil || !ok || again != on {
		t.Fatalf("re-offer: %v %v on %v", ok, err, again)
	}
	p.Delete(ctx, on, "c1") // once: the call object deletes once
	if got := strings.Join(a.commands(), ","); got != "offer,answer,offer,delete" {
		t.Fatalf("commands %s", got)
	}
	// An answer for a call with no anchor is refused, not sent anywhere.
	if err := p.Answer(ctx, netip.AddrPort{}, req, res, ""); err == nil {
		t.Fatal("answer without an offer")
	}
}

func TestNoSDPIsNotAnchored(t *testing.T) {
	a := startFake(t)
	p := newPool(t, a)
	for _, req := range []*sip.Request{invite(t, "c2", "", ""), invite(t, "c3", "hello", "text/plain")} {
		if _, ok, err := p.Offer(context.Background(), req, netip.AddrPort{}, ""); ok || err != nil {
			t.Fatalf("%v %v", ok, err)
		}
	}
	if _, ok, err := p.Offer(context.Background(), invite(t, "c4", offerSDP, "Application/SDP; charset=utf-8"), netip.AddrPort{}, ""); !ok || err != nil {
		t.Fatalf("a Content-Type with parameters: %v %v", ok, err)
	}
	if len(a.commands()) != 1 {
		t.Fatalf("commands %v", a.commands())
	}
}

func TestADeadAnchorIsSkippedAndTakenOut(t *testing.T) {
	dead, live := startFake(t), startFake(t)
	dead.mu.Lock()
	dead.down = true
	dead.mu.Unlock()
	p := newPool(t, dead, live)
	// Whichever anchor each Call-ID hashes to, every call ends up on the live one.
	for i := 0; i < 6; i++ {
		id := "call-" + strconv.Itoa(i)
		a, ok, err := p.Offer(context.Background(), invite(t, id, offerSDP, "application/sdp"), netip.AddrPort{}, "")
		if !ok || err != nil {
			t.Fatalf("%s: %v %v", id, ok, err)
		}
		if a != live.srv.Addr() {
			t.Fatalf("%s on %s", id, a)
		}
	}
	if p.anchors[0].isUp() || !p.anchors[1].isUp() {
		t.Fatal("the dead anchor is still up")
	}
	// With no anchor up, a call is refused.
	p.setUp(p.anchors[1], false)
	if _, _, err := p.Offer(context.Background(), invite(t, "none", offerSDP, "application/sdp"), netip.AddrPort{}, ""); err == nil {
		t.Fatal("offered with no anchor up")
	}
	// A ping brings it back.
	p.pingAll(context.Background())
	if !p.anchors[1].isUp() {
		t.Fatal("ping did not bring the live anchor back")
	}
}

func TestCallsSpreadByCallID(t *testing.T) {
	a, b := startFake(t), startFake(t)
	p := newPool(t, a, b)
	seen := map[netip.AddrPort]int{}
	for i := 0; i < 40; i++ {
		id := "spread-" + strconv.Itoa(i)
		first, _, err := p.Offer(context.Background(), invite(t, id, offerSDP, "application/sdp"), netip.AddrPort{}, "")
		if err != nil {
			t.Fatal(err)
		}
		seen[first]++
		// The same Call-ID always lands on the same anchor.
		if got := p.candidates(id)[0].addr; got != first {
			t.Fatalf("%s: hash says %s, call is on %s", id, got, first)
		}
	}
	if seen[a.srv.Addr()] < 8 || seen[b.srv.Addr()] < 8 {
		t.Fatalf("spread %v", seen)
	}
}

// Media timeouts are handed on with the anchor they came from (the call
// object believes only its own anchor: sip/call's tests).
func TestMediaTimeoutsAreHandedOnWithTheirAnchor(t *testing.T) {
	a := startFake(t)
	p := newPool(t, a)
	got := make(timeouts, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx, got)
	if err := a.srv.Send(p.client.LocalAddr(), "n1", ng.Dict{"command": "media-timeout", "call-id": "mt"}); err != nil {
		t.Fatal(err)
	}
	if err := a.srv.Send(p.client.LocalAddr(), "n2", ng.Dict{"command": "not-a-timeout", "call-id": "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-got:
		if id != "mt" {
			t.Fatalf("timeout for %s", id)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no timeout reported")
	}
	select {
	case id := <-got:
		t.Fatalf("another notification handed on (%s)", id)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestQualityFromADeleteReply(t *testing.T) {
	stream := func(expected, lost, jitter, mos int64, down bool) map[string]any {
		st := map[string]any{"local port": int64(30000), "reception": map[string]any{"expected": expected, "lost": lost, "jitter": jitter, "MOS": mos}}
		if down {
			st["downstream"] = map[string]any{"fraction lost": int64(64), "jitter": int64(12), "RTT": int64(80)}
		}
		md := map[string]any{"streams": []any{st, map[string]any{"local port": int64(30001)}}}
		if down {
			md["SRTP"] = map[string]any{"suite": "AES_CM_128_HMAC_SHA1_80", "tag": "1"}
		}
		return map[string]any{"medias": []any{md}}
	}
	reply := ng.Dict{"result": "ok", "tags": map[string]any{"caller-tag": stream(200, 10, 3, 39, true), "callee-tag": stream(150, 0, 1, 44, false), "silent": map[string]any{}}}
	q := Quality(reply)
	c, e := q["caller-tag"], q["callee-tag"]
	if c.Sent != 200 || c.Lost != 10 || c.LossPct != 5 || c.JitterMS != 3 || c.MOS != 3.9 || c.DownLossPct != 25 || c.RTTMS != 80 || c.DownJitterMS != 12 || c.SRTP != "AES_CM_128_HMAC_SHA1_80" {
		t.Fatalf("caller %+v", c)
	}
	if e.Sent != 150 || e.LossPct != 0 || e.MOS != 4.4 || e.RTTMS != 0 || e.SRTP != "" {
		t.Fatalf("callee %+v", e)
	}
	if _, ok := q["silent"]; ok || len(Quality(ng.Dict{"result": "ok"})) != 0 {
		t.Fatal("quality for a tag with no media")
	}
}

func TestEncryptionPolicyBecomesTheTransportProtocol(t *testing.T) {
	savpf := strings.Replace(offerSDP, "RTP/AVP", "RTP/SAVPF", 1)
	browser := strings.Replace(offerSDP, "RTP/AVP", "UDP/TLS/RTP/SAVPF", 1)
	tests := []struct {
		body, encryption, want string
		ice                    string
	}{
		{offerSDP, PassEncryption, "", "remove"},
		{savpf, PassEncryption, "", "remove"},
		{offerSDP, SRTP, "RTP/SAVP", "remove"},
		{savpf, SRTP, "RTP/SAVPF", "remove"},
		{savpf, PlainRTP, "RTP/AVPF", "remove"},
		{strings.Replace(offerSDP, "RTP/AVP", "RTP/SAVP", 1), PlainRTP, "RTP/AVP", "remove"},
		// A browser's offer to a SIP phone: never passed on as DTLS,
		// and without WebRTC's feedback profile.
		{browser, PassEncryption, "RTP/AVP", "remove"},
		{browser, PlainRTP, "RTP/AVP", "remove"},
		{browser, SRTP, "RTP/SAVP", "remove"},
		// To a browser: DTLS-SRTP with the anchor's ICE, from a phone or
		// from another browser.
		{offerSDP, WebRTC, "UDP/TLS/RTP/SAVPF", "force"},
		{savpf, WebRTC, "UDP/TLS/RTP/SAVPF", "force"},
		{browser, WebRTC, "UDP/TLS/RTP/SAVPF", "force"},
	}
	a := startFake(t)
	p := newPool(t, a)
	for i, tt := range tests {
		if !strings.Contains(tt.body, "RTP/") {
			t.Fatalf("test SDP has no RTP m= line: %s", tt.body)
		}
		if _, _, err := p.Offer(context.Background(), invite(t, "enc-"+strconv.Itoa(i), tt.body, "application/sdp"), netip.AddrPort{}, tt.encryption); err != nil {
			t.Fatal(err)
		}
		a.mu.Lock()
		sent := a.cmds[len(a.cmds)-1]
		a.mu.Unlock()
		if got := sent.Str("transport-protocol"); got != tt.want || sent.Str("ICE") != tt.ice {
			t.Errorf("%s on %q: transport-protocol %q ICE %q, want %q %q", tt.encryption, strings.Fields(tt.body[strings.Index(tt.body, "m="):])[2], got, sent.Str("ICE"), tt.want, tt.ice)
		}
	}
}

// A re-offer in the dialog that passes the profile sends none: each side
// keeps what it speaks, a browser's DTLS too.
func TestReofferKeepsEachSidesProtocol(t *testing.T) {
	a := startFake(t)
	p := newPool(t, a)
	browser := strings.Replace(offerSDP, "RTP/AVP", "UDP/TLS/RTP/SAVPF", 1)
	for i, tt := range []struct {
		encryption, want, ice string
	}{{PassEncryption, "", "remove"}, {WebRTC, "UDP/TLS/RTP/SAVPF", "force"}} {
		req := invite(t, "re-"+strconv.Itoa(i), browser, "application/sdp")
		req.To().Params.Add("tag", "tb")
		if _, _, err := p.Offer(context.Background(), req, a.srv.Addr(), tt.encryption); err != nil {
			t.Fatal(err)
		}
		a.mu.Lock()
		sent := a.cmds[len(a.cmds)-1]
		a.mu.Unlock()
		if sent.Str("transport-protocol") != tt.want || sent.Str("ICE") != tt.ice || sent.Str("to-tag") != "tb" {
			t.Errorf("re-offer with %q: %v", tt.encryption, sent)
		}
	}
}

// The answer goes to the caller: ICE=force when it called over
// WebSocket (a browser), remove otherwise.
func TestAnswerToABrowserForcesICE(t *testing.T) {
	a := startFake(t)
	p := newPool(t, a)
	for i, tt := range []struct {
		transport, ice string
	}{{"UDP", "remove"}, {"TLS", "remove"}, {"WSS", "force"}, {"WS", "force"}} {
		id := "ice-" + strconv.Itoa(i)
		req := invite(t, id, offerSDP, "application/sdp")
		req.SetTransport(tt.transport)
		on, _, err := p.Offer(context.Background(), req, netip.AddrPort{}, "")
		if err != nil {
			t.Fatal(err)
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.To().Params.Add("tag", "tb")
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody([]byte(offerSDP))
		if err := p.Answer(context.Background(), on, req, res, ""); err != nil {
			t.Fatal(err)
		}
		a.mu.Lock()
		sent := a.cmds[len(a.cmds)-1]
		a.mu.Unlock()
		if sent.Str("command") != "answer" || sent.Str("ICE") != tt.ice {
			t.Errorf("answer to a caller over %s: %s ICE %q, want %q", tt.transport, sent.Str("command"), sent.Str("ICE"), tt.ice)
		}
	}
	for tr, want := range map[string]bool{"WS": true, "wss": true, "UDP": false, "TLS": false, "": false} {
		if WebSocket(tr) != want {
			t.Errorf("WebSocket(%q) = %v", tr, !want)
		}
	}
}

// A forked call: each contact's encryption is its own (WebRTC for a
// browser over WebSocket, the configured one for a phone), each branch's
// offer names its own Via branch, its answer the same, and a branch that
// lost is deleted by its via-branch alone.
func TestForkedBranchesGetTheirOwnOffers(t *testing.T) {
	for _, tt := range []struct{ transport, configured, want string }{
		{"WSS", PlainRTP, WebRTC}, {"ws", SRTP, WebRTC}, {"WS", PassEncryption, WebRTC},
		{"UDP", PlainRTP, PlainRTP}, {"TLS", SRTP, SRTP}, {"TCP", PassEncryption, PassEncryption},
	} {
		if got := ForContact(tt.transport, tt.configured); got != tt.want {
			t.Errorf("ForContact(%q, %q) = %q, want %q", tt.transport, tt.configured, got, tt.want)
		}
	}
	a := startFake(t)
	p := newPool(t, a)
	ctx := context.Background()
	var on netip.AddrPort
	branches := map[string]string{"z9hG4bK-sori-wss": "WSS", "z9hG4bK-sori-udp": "UDP"}
	for branch, transport := range branches {
		// The branch's request as sori sends it: its own Via on top.
		req := invite(t, "fork", offerSDP, "application/sdp")
		params := sip.NewParams()
		params.Add("branch", branch)
		req.PrependHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport, Host: "127.0.0.1", Port: 5060, Params: params})
		got, _, err := p.Offer(ctx, req, on, ForContact(transport, PlainRTP))
		if err != nil {
			t.Fatal(err)
		}
		on = got
	}
	want := map[string][2]string{"z9hG4bK-sori-wss": {"UDP/TLS/RTP/SAVPF", "force"}, "z9hG4bK-sori-udp": {"RTP/AVP", "remove"}}
	a.mu.Lock()
	cmds := append([]ng.Dict(nil), a.cmds...)
	a.mu.Unlock()
	if len(cmds) != 2 {
		t.Fatalf("%d commands for two branches", len(cmds))
	}
	for _, c := range cmds {
		w, ok := want[c.Str("via-branch")]
		if !ok || c.Str("transport-protocol") != w[0] || c.Str("ICE") != w[1] || c.Str("from-tag") != "ta" {
			t.Errorf("branch offer %v, want %v", c, w)
		}
	}

	res := sip.NewResponseFromRequest(invite(t, "fork", "", ""), 200, "OK", nil)
	res.To().Params.Add("tag", "tb")
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res.SetBody([]byte(offerSDP))
	if err := p.Answer(ctx, on, invite(t, "fork", offerSDP, "application/sdp"), res, "z9hG4bK-sori-udp"); err != nil {
		t.Fatal(err)
	}
	if err := p.DeleteBranch(ctx, on, "fork", "ta", "z9hG4bK-sori-wss"); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	answer, del := a.cmds[2], a.cmds[3]
	a.mu.Unlock()
	if answer.Str("command") != "answer" || answer.Str("via-branch") != "z9hG4bK-sori-udp" || answer.Str("to-tag") != "tb" {
		t.Errorf("answer %v", answer)
	}
	if del.Str("command") != "delete" || del.Str("via-branch") != "z9hG4bK-sori-wss" || del.Str("from-tag") != "ta" || del.Str("call-id") != "fork" || del.Str("to-tag") != "" {
		t.Errorf("branch delete %v", del)
	}
	// A callee's early dialog that lost: its from-tag alone.
	if err := p.DeleteBranch(ctx, on, "fork", "tc", ""); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	del = a.cmds[4]
	a.mu.Unlock()
	if _, named := del["via-branch"]; named || del.Str("command") != "delete" || del.Str("from-tag") != "tc" || del.Str("to-tag") != "" {
		t.Errorf("early dialog's delete %v", del)
	}
}

// Quality reads the same from a reply the client left undecoded (ng.Raw)
// as from one decoded whole.
func TestQualityFromARawReply(t *testing.T) {
	raw, err := ng.Encode("c", deleteReply())
	if err != nil {
		t.Fatal(err)
	}
	_, eager, err := ng.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	_, lazy, err := ng.ParseReply(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := lazy["tags"].(ng.Raw); !ok {
		t.Fatalf("tags decoded: %T", lazy["tags"])
	}
	q, want := Quality(lazy), Quality(eager)
	if !reflect.DeepEqual(q, want) || len(q) != 2 {
		t.Fatalf("raw %+v\nwant %+v", q, want)
	}
	c := q["as7d8f9g0h"]
	if c.Sent != 1500 || c.Lost != 3 || c.LossPct != 0.2 || c.JitterMS != 2 || c.MOS != 4.3 || c.DownLossPct != 0.07 ||
		c.DownJitterMS != 3 || c.RTTMS != 22 || c.Address != netip.MustParseAddr("198.51.100.7") || c.SRTP != "" {
		t.Fatalf("caller %+v", c)
	}
	if len(Quality(ng.Dict{"tags": ng.Raw("de")})) != 0 || Quality(ng.Dict{"tags": ng.Raw("le")}) != nil {
		t.Fatal("quality from no tags")
	}
}
