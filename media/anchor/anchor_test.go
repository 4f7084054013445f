package anchor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/sdp"
)

var (
	loopback   = netip.MustParseAddr("127.0.0.1")
	advertise  = netip.MustParseAddr("203.0.113.5")
	advertise6 = netip.MustParseAddr("2001:db8::5")
	control    = netip.MustParseAddrPort("127.0.0.1:5060")
)

func newManager(t *testing.T, lo int, timeout time.Duration, notify func(netip.AddrPort, ng.Dict)) (*Manager, *ports.Allocator) {
	t.Helper()
	alloc, err := ports.New(loopback, lo, lo+199)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(alloc.Close) // the parked pairs, after everything else
	var n Notifier
	if notify != nil {
		n = NotifierFunc(func(to netip.AddrPort, d ng.Dict) error { notify(to, d); return nil })
	}
	m := New(Config{Notify: n, Advertise: []netip.Addr{advertise, advertise6}, Ports: alloc, MediaTimeout: timeout, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(m.Close)
	return m, alloc
}

func phoneSDP(addr netip.AddrPort, extra ...string) string {
	lines := append([]string{"v=0", "o=- 1 1 IN IP4 " + addr.Addr().String(), "s=-", "c=IN IP4 " + addr.Addr().String(), "t=0 0",
		fmt.Sprintf("m=audio %d RTP/AVP 111 101", addr.Port()), "a=rtpmap:111 opus/48000/2", "a=fmtp:111 useinbandfec=1", "a=rtpmap:101 telephone-event/48000"}, extra...)
	return strings.Join(lines, "\r\n") + "\r\n"
}

func do(t *testing.T, m *Manager, cmd string, d ng.Dict) ng.Dict {
	t.Helper()
	d["command"] = cmd
	// Through the codec, as a datagram would arrive.
	b, err := ng.Encode("c", d)
	if err != nil {
		t.Fatal(err)
	}
	_, req, err := ng.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	res := m.Handle(context.Background(), cmd, req, control)
	b, err = ng.Encode("c", res)
	if err != nil {
		t.Fatalf("reply not encodable: %v", err)
	}
	_, res, _ = ng.Parse(b)
	return res
}

func mediaOf(t *testing.T, body string) sdp.Media {
	t.Helper()
	s, err := sdp.Parse([]byte(body))
	if err != nil || len(s.Media) == 0 {
		t.Fatalf("%v\n%s", err, body)
	}
	return s.Media[0]
}

type udpPhone struct {
	conn *net.UDPConn
}

func newUDPPhone(t *testing.T) *udpPhone {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpPhone{c}
}

func (p *udpPhone) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *udpPhone) roundTrip(t *testing.T, to netip.AddrPort, peer *udpPhone, payload []byte) netip.AddrPort {
	t.Helper()
	if _, err := p.conn.WriteToUDPAddrPort(payload, to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = peer.conn.SetReadDeadline(time.Now().Add(time.Second))
	n, from, err := peer.conn.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], payload) {
		t.Fatalf("packet not relayed: %v", err)
	}
	return from
}

func TestOfferAnswerRelayQueryDelete(t *testing.T) {
	m, alloc := newManager(t, 52200, 0, nil)
	if res := do(t, m, "ping", ng.Dict{}); res.Str("result") != "pong" {
		t.Fatalf("%v", res)
	}
	pa, pb := newUDPPhone(t), newUDPPhone(t)
	offer := ng.Dict{"call-id": "call-1", "from-tag": "ta", "sdp": phoneSDP(pa.addr()), "replace": []any{"origin"}, "ICE": "remove", "label": "caller"}
	res := do(t, m, "offer", offer)
	if res.Str("result") != "ok" {
		t.Fatalf("offer: %v", res)
	}
	toB := mediaOf(t, res.Str("sdp"))
	if toB.Addr != advertise || toB.Port < 52200 || toB.Port%2 != 0 || !strings.Contains(res.Str("sdp"), "o=- 1 1 IN IP4 203.0.113.5\r\n") || !strings.Contains(res.Str("sdp"), "a=fmtp:111 useinbandfec=1\r\n") {
		t.Fatalf("offer SDP for B:\n%s", res.Str("sdp"))
	}
	if again := do(t, m, "offer", offer); again.Str("sdp") != res.Str("sdp") {
		t.Fatal("a retransmitted offer changed the SDP")
	}
	answer := ng.Dict{"call-id": "call-1", "from-tag": "ta", "to-tag": "tb", "sdp": phoneSDP(pb.addr())}
	res = do(t, m, "answer", answer)
	if res.Str("result") != "ok" {
		t.Fatalf("answer: %v", res)
	}
	toA := mediaOf(t, res.Str("sdp"))
	if toA.Addr != advertise || toA.Port == toB.Port {
		t.Fatalf("answer SDP for A:\n%s", res.Str("sdp"))
	}
	if again := do(t, m, "answer", answer); again.Str("sdp") != res.Str("sdp") {
		t.Fatal("a retransmitted answer changed the SDP")
	}
	if alloc.InUse() != 2 {
		t.Fatalf("%d port pairs for one call", alloc.InUse())
	}

	// Media: A sends where the answer told it, B where the offer told it.
	portA := netip.AddrPortFrom(loopback, uint16(toA.Port))
	portB := netip.AddrPortFrom(loopback, uint16(toB.Port))
	for i := 0; i < 5; i++ {
		if from := pa.roundTrip(t, portA, pb, []byte{0x80, 111, 0, byte(i)}); from != portB {
			t.Fatalf("B got A's packet from %s, want %s", from, portB)
		}
		if from := pb.roundTrip(t, portB, pa, []byte{0x80, 111, 1, byte(i)}); from != portA {
			t.Fatalf("A got B's packet from %s, want %s", from, portA)
		}
	}

	// A re-INVITE from B (hold): offer from tb to ta keeps every port.
	hold := do(t, m, "offer", ng.Dict{"call-id": "call-1", "from-tag": "tb", "to-tag": "ta", "sdp": phoneSDP(pb.addr(), "a=sendonly")})
	if mediaOf(t, hold.Str("sdp")).Port != toA.Port || !strings.Contains(hold.Str("sdp"), "a=sendonly") {
		t.Fatalf("re-INVITE offer:\n%s", hold.Str("sdp"))
	}
	unhold := do(t, m, "answer", ng.Dict{"call-id": "call-1", "from-tag": "tb", "to-tag": "ta", "sdp": phoneSDP(pa.addr(), "a=recvonly")})
	if mediaOf(t, unhold.Str("sdp")).Port != toB.Port || alloc.InUse() != 2 {
		t.Fatalf("re-INVITE answer moved ports:\n%s", unhold.Str("sdp"))
	}

	q := do(t, m, "query", ng.Dict{"call-id": "call-1"})
	if n, _ := q.Dict("totals").Dict("RTP").Int("packets"); n != 10 {
		t.Fatalf("query totals: %v", q.Dict("totals"))
	}
	ta := q.Dict("tags").Dict("ta")
	if ta.Str("in dialogue with") != "tb" || ta.Str("label") != "caller" {
		t.Fatalf("tag ta: %v", ta)
	}
	medias, _ := ta["medias"].([]any)
	streams, _ := ng.Dict(medias[0].(map[string]any))["streams"].([]any)
	rtpStream := ng.Dict(streams[0].(map[string]any))
	if p, _ := rtpStream.Int("local port"); int(p) != toA.Port {
		t.Fatalf("tag ta's stream: %v", rtpStream)
	}
	if ep := rtpStream.Dict("endpoint"); ep.Str("address") != "127.0.0.1" || ep.Str("family") != "IPv4" {
		t.Fatalf("endpoint %v", ep)
	}
	if l := do(t, m, "list", ng.Dict{}); len(l.List("calls")) != 1 || l.List("calls")[0] != "call-1" {
		t.Fatalf("list %v", l)
	}

	del := do(t, m, "delete", ng.Dict{"call-id": "call-1", "from-tag": "ta"})
	if n, _ := del.Dict("totals").Dict("RTP").Int("packets"); del.Str("result") != "ok" || n != 10 {
		t.Fatalf("delete: %v", del)
	}
	if alloc.InUse() != 0 {
		t.Fatalf("%d port pairs left after delete", alloc.InUse())
	}
	for _, cmd := range []string{"query", "delete"} {
		if r := do(t, m, cmd, ng.Dict{"call-id": "call-1"}); r.Str("result") != "error" {
			t.Fatalf("%s after delete: %v", cmd, r)
		}
	}
}

func TestAdvertisedAddressFollowsTheSDPFamily(t *testing.T) {
	m, _ := newManager(t, 53400, 0, nil)
	v6 := strings.ReplaceAll(strings.ReplaceAll(phoneSDP(netip.MustParseAddrPort("127.0.0.1:4000")), "IN IP4 127.0.0.1", "IN IP6 2001:db8::20"), "c=IN IP4", "c=IN IP6")
	tests := []struct {
		body, family string
		want         netip.Addr
	}{
		{phoneSDP(netip.MustParseAddrPort("127.0.0.1:4000")), "", advertise},
		{v6, "", advertise6},
		{v6, "IP4", advertise},
		{phoneSDP(netip.MustParseAddrPort("127.0.0.1:4000")), "IP6", advertise6},
	}
	for i, tt := range tests {
		req := ng.Dict{"call-id": fmt.Sprint("fam-", i), "from-tag": "a", "sdp": tt.body}
		if tt.family != "" {
			req["address family"] = tt.family
		}
		res := do(t, m, "offer", req)
		if got := mediaOf(t, res.Str("sdp")).Addr; got != tt.want {
			t.Errorf("case %d: advertised %s, want %s\n%s", i, got, tt.want, res.Str("sdp"))
		}
	}
}

func TestPrivateSDPAddressBehindNATUsesTheSignallingSource(t *testing.T) {
	m, _ := newManager(t, 53600, 0, nil)
	private := phoneSDP(netip.MustParseAddrPort("192.168.1.20:4000"))
	endpoint := func(callID string) string {
		q := do(t, m, "query", ng.Dict{"call-id": callID})
		medias, _ := q.Dict("tags").Dict("a")["medias"].([]any)
		streams, _ := ng.Dict(medias[0].(map[string]any))["streams"].([]any)
		ep := ng.Dict(streams[0].(map[string]any)).Dict("endpoint")
		port, _ := ep.Int("port")
		return fmt.Sprintf("%s:%d", ep.Str("address"), port)
	}
	do(t, m, "offer", ng.Dict{"call-id": "nat", "from-tag": "a", "sdp": private, "received-from": []any{"IP4", "127.0.0.1"}})
	if got := endpoint("nat"); got != "127.0.0.1:4000" {
		t.Fatalf("behind NAT: endpoint %s", got)
	}
	do(t, m, "offer", ng.Dict{"call-id": "trusted", "from-tag": "a", "sdp": private, "received-from": []any{"IP4", "127.0.0.1"}, "flags": []any{"trust-address"}})
	if got := endpoint("trusted"); got != "192.168.1.20:4000" {
		t.Fatalf("trust-address: endpoint %s", got)
	}
}

func TestBadRequestsGetErrorReasons(t *testing.T) {
	m, alloc := newManager(t, 52400, 0, nil)
	good := phoneSDP(netip.MustParseAddrPort("127.0.0.1:4000"))
	tests := []struct {
		cmd    string
		req    ng.Dict
		reason string
	}{
		{"offer", ng.Dict{"from-tag": "a", "sdp": good}, "No call-id in message"},
		{"offer", ng.Dict{"call-id": "x", "sdp": good}, "No from-tag in message"},
		{"offer", ng.Dict{"call-id": "x", "from-tag": "a"}, "No SDP body in message"},
		{"offer", ng.Dict{"call-id": "x", "from-tag": "a", "sdp": "not sdp"}, "Failed to parse SDP"},
		{"offer", ng.Dict{"call-id": "x", "from-tag": "a", "sdp": good, "ICE": "force"}, "ICE=force toward RTP/AVP"},
		{"offer", ng.Dict{"call-id": "x", "from-tag": "a", "sdp": good, "transport-protocol": "TCP/TLS/RTP/SAVPF"}, "not supported"},
		{"offer", ng.Dict{"call-id": "x", "from-tag": "a", "sdp": strings.Replace(good, "RTP/AVP", "RTP/SAVP", 1)}, "no SDES crypto suite"},
		{"offer", ng.Dict{"call-id": "x", "from-tag": "a", "sdp": strings.Replace(good, "RTP/AVP", "RTP/SAVP", 1) + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:short\r\n"}, "key is not 30 bytes"},
		{"offer", ng.Dict{"call-id": "x", "from-tag": "a", "sdp": strings.Replace(good, "RTP/AVP", "RTP/SAVP", 1) + "a=fingerprint:sha-256 AB:CD\r\n"}, "DTLS-SRTP is supported only as UDP/TLS"},
		{"offer", ng.Dict{"call-id": "x", "from-tag": "a", "sdp": good, "transport-protocol": "RTP/SAVP", "SDES": []any{"off"}}, "no SDES crypto suite left"},
		{"answer", ng.Dict{"call-id": "nope", "from-tag": "a", "to-tag": "b", "sdp": good}, "Unknown call-id"},
		{"delete", ng.Dict{"call-id": "nope"}, "not found"},
		{"frobnicate", ng.Dict{}, "Unrecognized command"},
		// Not UTF-8: as a metric label it made prometheus panic (FuzzHandle).
		{"0\xc30", ng.Dict{}, "Unrecognized command"},
	}
	for _, tt := range tests {
		res := do(t, m, tt.cmd, tt.req)
		if res.Str("result") != "error" || !strings.Contains(res.Str("error-reason"), tt.reason) {
			t.Errorf("%s %v: %v", tt.cmd, tt.req, res)
		}
	}
	if alloc.InUse() != 0 {
		t.Fatalf("failed requests left %d port pairs", alloc.InUse())
	}
	// Unknown commands share one label: a datagram names no new series.
	if n := testutil.CollectAndCount(m.commands); n != 4 {
		t.Errorf("%d command series, want offer, answer, delete and unknown errors", n)
	}
	if got := testutil.ToFloat64(m.commands.WithLabelValues("unknown", "error")); got != 2 {
		t.Errorf("unknown commands counted %v, want 2", got)
	}
}

func TestPortsRunOut(t *testing.T) {
	alloc, err := ports.New(loopback, 52600, 52603) // two pairs: one call
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(alloc.Close) // the parked pairs, after everything else
	m := New(Config{Advertise: []netip.Addr{advertise}, Ports: alloc, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer m.Close()
	sdpA := phoneSDP(netip.MustParseAddrPort("127.0.0.1:4000"))
	if r := do(t, m, "offer", ng.Dict{"call-id": "1", "from-tag": "a", "sdp": sdpA}); r.Str("result") != "ok" {
		t.Fatalf("%v", r)
	}
	if r := do(t, m, "offer", ng.Dict{"call-id": "2", "from-tag": "a", "sdp": sdpA}); r.Str("error-reason") != "Ran out of ports" {
		t.Fatalf("%v", r)
	}
	if alloc.InUse() != 2 {
		t.Fatalf("the failed call kept ports: %d in use", alloc.InUse())
	}
}

func TestMediaTimeoutNotifiesTheController(t *testing.T) {
	var mu sync.Mutex
	var got []ng.Dict
	var to netip.AddrPort
	m, alloc := newManager(t, 52800, 300*time.Millisecond, func(addr netip.AddrPort, d ng.Dict) {
		mu.Lock()
		defer mu.Unlock()
		got, to = append(got, d), addr
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.RunTimeouts(ctx)
	a := phoneSDP(netip.MustParseAddrPort("127.0.0.1:4000"))
	do(t, m, "offer", ng.Dict{"call-id": "ringing", "from-tag": "a", "sdp": a}) // never answered: no timeout
	do(t, m, "offer", ng.Dict{"call-id": "silent", "from-tag": "a", "sdp": a})
	do(t, m, "answer", ng.Dict{"call-id": "silent", "from-tag": "a", "to-tag": "b", "sdp": a})
	deadline := time.Now().Add(3 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(400 * time.Millisecond) // and nothing more
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Str("command") != "media-timeout" || got[0].Str("call-id") != "silent" || to != control {
		t.Fatalf("notifications %v to %s", got, to)
	}
	if r := do(t, m, "query", ng.Dict{"call-id": "silent"}); r.Str("result") != "error" {
		t.Fatal("timed-out call still held")
	}
	if r := do(t, m, "query", ng.Dict{"call-id": "ringing"}); r.Str("result") != "ok" || alloc.InUse() != 2 {
		t.Fatal("the ringing call was ended")
	}
}

// The controller told of a media timeout is the one that last spoke for
// the call: a sori node restarted on a new control port queries its
// calls, and their reports come to it, not to its dead predecessor.
func TestMediaTimeoutGoesToTheLastController(t *testing.T) {
	reports := make(chan netip.AddrPort, 4)
	m, _ := newManager(t, 53000, 300*time.Millisecond, func(addr netip.AddrPort, d ng.Dict) { reports <- addr })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := phoneSDP(netip.MustParseAddrPort("127.0.0.1:4000"))
	do(t, m, "offer", ng.Dict{"call-id": "moved", "from-tag": "a", "sdp": a})
	do(t, m, "answer", ng.Dict{"call-id": "moved", "from-tag": "a", "to-tag": "b", "sdp": a})
	restarted := netip.MustParseAddrPort("127.0.0.1:40123")
	if r := m.Handle(ctx, "query", ng.Dict{"command": "query", "call-id": "moved"}, restarted); r.Str("result") != "ok" {
		t.Fatalf("query: %v", r)
	}
	// An unknown call's query takes nothing.
	if r := m.Handle(ctx, "query", ng.Dict{"command": "query", "call-id": "none"}, control); r.Str("result") != "error" {
		t.Fatalf("query of no call: %v", r)
	}
	go m.RunTimeouts(ctx)
	select {
	case to := <-reports:
		if to != restarted {
			t.Fatalf("the media timeout went to %s, want the last controller %s", to, restarted)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no media timeout reported")
	}
}

func TestQueryReportsEachHopsLossAndMOS(t *testing.T) {
	m, _ := newManager(t, 53800, 0, nil)
	pa, pb := newUDPPhone(t), newUDPPhone(t)
	offer := do(t, m, "offer", ng.Dict{"call-id": "q", "from-tag": "a", "sdp": phoneSDP(pa.addr())})
	answer := do(t, m, "answer", ng.Dict{"call-id": "q", "from-tag": "a", "to-tag": "b", "sdp": phoneSDP(pb.addr())})
	toA := netip.AddrPortFrom(loopback, uint16(mediaOf(t, answer.Str("sdp")).Port))
	toB := netip.AddrPortFrom(loopback, uint16(mediaOf(t, offer.Str("sdp")).Port))
	for seq := uint16(0); seq < 100; seq++ {
		if seq%20 != 9 { // A's uplink loses 5 %
			pa.roundTrip(t, toA, pb, rtpOf(seq))
		}
		pb.roundTrip(t, toB, pa, rtpOf(seq))
	}
	q := do(t, m, "query", ng.Dict{"call-id": "q"})
	reception := func(tag string) ng.Dict {
		medias, _ := q.Dict("tags").Dict(tag)["medias"].([]any)
		streams, _ := ng.Dict(medias[0].(map[string]any))["streams"].([]any)
		return ng.Dict(streams[0].(map[string]any)).Dict("reception")
	}
	a, b := reception("a"), reception("b")
	if n, _ := a.Int("lost"); n != 5 {
		t.Fatalf("hop A→anchor: %v", a)
	}
	if f, _ := a.Int("fraction lost"); f != 12 {
		t.Fatalf("hop A→anchor fraction: %v", a)
	}
	if n, _ := b.Int("lost"); n != 0 {
		t.Fatalf("hop B→anchor: %v", b)
	}
	if ma, _ := a.Int("MOS"); ma >= 41 || ma < 35 {
		t.Fatalf("MOS of the lossy hop %d", ma)
	}
	if mb, _ := b.Int("MOS"); mb != 44 {
		t.Fatalf("MOS of the clean hop %d", mb)
	}
}
