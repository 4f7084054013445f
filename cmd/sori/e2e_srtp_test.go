package main

// Real softphones over SDES-SRTP through sori and sori-anchor: baresip
// (mediaenc=srtp-mand) calls linphonec (SRTP mandatory) and back, each
// must hear the other's tone, and a capture of loopback shows what crossed it: every
// RTP and RTCP packet to and from the anchor's ports authenticates with
// its leg's key (read from the SDP sori relayed, captured too), none
// carries cleartext audio, and the anchor's own RTCP reports reach each
// phone as SRTCP under that phone's leg key.

import (
	"bytes"
	byteorder "encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
	"golang.org/x/sys/unix"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/sdes"
	"github.com/sori-voice/sori/media/sdp"
)

func TestPhonesCallOverSRTP(t *testing.T) {
	for _, tool := range []string{"baresip", "linphonec"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make test installs baresip and linphone-cli): %v", tool, err)
		}
	}
	t.Parallel()
	an := startAnchor(t, "-rtcp-interval", "500ms")
	n := startDefaultNode(t, an)
	capture := captureLoopback(t, func(src, dst netip.AddrPort) bool {
		return src.Port() == uint16(n.port) || dst.Port() == uint16(n.port) || an.owns(src.Addr().String(), itoa(src.Port())) || an.owns(dst.Addr().String(), itoa(dst.Port()))
	})
	alice := startBaresip(t, n.port, "udp", "alice", "alice-secret", aliceTone, "", mandatorySRTP)
	bob := startLinphonec(t, n.port, "udp", "bob", "bob-secret", bobTone, mandatorySRTP)
	alice.waitRegistered()
	bob.waitRegistered()
	phoneCall(t, an, n.node, alice, bob)
	phoneCall(t, an, n.node, bob, alice) // linphonec's offer, baresip's answer
	packets := capture.stop()

	// The keys: every a=crypto of the SDP on the wire, by the m= port it
	// was for: a phone's own RTP port (the keys it sends with), or one of
	// the anchor's (the anchor's keys towards the phone it was sent to).
	keys := map[uint16][]sdes.Crypto{}
	sdps := 0
	for _, p := range packets {
		body, ok := sipSDP(p.payload)
		if !ok {
			continue
		}
		s, err := sdp.Parse(body)
		if err != nil || len(s.Media) == 0 {
			t.Fatalf("SDP on the wire: %v\n%s", err, body)
		}
		cs, err := sdes.ParseAll(s.Media[0].Crypto)
		if err != nil || len(cs) == 0 || !strings.Contains(s.Media[0].Proto, "SAVP") {
			t.Fatalf("an SDP sent as %s with no usable a=crypto (%v):\n%s", s.Media[0].Proto, err, body)
		}
		keys[uint16(s.Media[0].Port)] = append(keys[uint16(s.Media[0].Port)], cs...)
		sdps++
	}
	if sdps < 8 {
		t.Fatalf("captured %d SDP bodies, want each call's INVITE and 200 OK on both sides of sori", sdps)
	}
	phones := map[uint16]string{uint16(alice.rtpPort()): "alice", uint16(bob.rtpPort()): "bob"}
	for port, who := range phones {
		if len(keys[port]) == 0 {
			t.Fatalf("%s's SDP (m= port %d) was not captured", who, port)
		}
	}

	// The phones' SRTCP sent before the hang-up must all reach the other
	// phone; after it, the anchor may have let the call go.
	byeAt := len(packets)
	for i, p := range packets {
		if bytes.HasPrefix(p.payload, []byte("BYE ")) {
			byeAt = i
			break
		}
	}
	v := newVerifier(keys)
	type flow struct{ from, to string }
	rtpOK, rtcpOK, reports, beforeBye := map[flow]int{}, map[flow]int{}, map[string]int{}, map[string]int{}
	var cleartexts [][]byte
	others := 0
	for i, p := range packets {
		in := an.owns(p.dst.Addr().String(), itoa(p.dst.Port()))
		out := an.owns(p.src.Addr().String(), itoa(p.src.Port()))
		if !in && !out {
			continue
		}
		if len(p.payload) < 12 || p.payload[0]>>6 != 2 {
			others++ // not RTP: linphonec's STUN keepalives (no audio in them: checked below)
			continue
		}
		phone, anchorPort := p.src, p.dst
		if out {
			phone, anchorPort = p.dst, p.src
		}
		rtcpPacket := p.payload[1] >= 192 && p.payload[1] <= 223
		who := phones[phone.Port()]
		if rtcpPacket {
			who = phones[phone.Port()-1]
		}
		if who == "" {
			t.Fatalf("a packet %s → %s of a phone that is not in the call", p.src, p.dst)
		}
		keyPort := phone.Port() // what the phone sends: its own keys
		if out {
			keyPort = anchorPort.Port() // what the anchor sends it: the anchor's keys in the SDP it got
		}
		if rtcpPacket {
			keyPort--
		}
		f := flow{"anchor", who}
		if in {
			f = flow{who, "anchor"}
		}
		plain, err := v.decrypt(keyPort, p.payload, rtcpPacket)
		if err != nil && in && rtcpPacket && plainControl(p.payload) {
			// baresip opens its RTCP path with a plain APP "PING" and ends
			// with a plain BYE once its SRTP is gone (libre): no media in
			// them, and the anchor drops them (what it sends authenticates).
			others++
			continue
		}
		if err != nil {
			t.Fatalf("%s → %s (%s → %s, RTCP %v, datagram %d of %d): does not authenticate with the leg's key: %v: %x", p.src, p.dst, f.from, f.to, rtcpPacket, i, len(packets), err, p.payload)
		}
		if rtcpPacket {
			rtcpOK[f]++
			if out && anchorReport(plain) {
				reports[who]++
			}
			if in && i < byeAt {
				beforeBye[who]++
			}
			continue
		}
		rtpOK[f]++
		if bytes.Equal(plain[12:], p.payload[12:len(plain)]) {
			t.Fatalf("%s → %s: the payload went in clear", p.src, p.dst)
		}
		if in && len(plain) >= 12+16 && len(cleartexts) < 200 {
			cleartexts = append(cleartexts, bytes.Clone(plain[12:12+16]))
		}
	}
	for _, f := range []flow{{"alice", "anchor"}, {"anchor", "bob"}, {"bob", "anchor"}, {"anchor", "alice"}} {
		if rtpOK[f] < 50 {
			t.Errorf("%s → %s: %d SRTP packets authenticated on the wire, want a call's worth", f.from, f.to, rtpOK[f])
		}
	}
	// No phone's audio, as the anchor decrypted it, crossed loopback in
	// clear.
	for _, c := range cleartexts {
		for _, p := range packets {
			if bytes.Contains(p.payload, c) {
				t.Fatalf("cleartext audio %x on the wire %s → %s", c, p.src, p.dst)
			}
		}
	}
	for who, other := range map[string]string{"alice": "bob", "bob": "alice"} {
		if reports[who] == 0 {
			t.Errorf("no RTCP report of the anchor's reached %s as SRTCP under its leg's key", who)
		}
		// A phone's SRTCP reaches the other re-encrypted under the other
		// leg's key (the anchor decrypted it to read it).
		if sent, relayed := beforeBye[who], rtcpOK[flow{"anchor", other}]-reports[other]; relayed < sent {
			t.Errorf("%s sent %d SRTCP packets; %d reached %s re-encrypted", who, sent, relayed, other)
		}
	}
	t.Logf("SRTP on the wire: %v; SRTCP: %v; the anchor's reports: %v; other datagrams: %d", rtpOK, rtcpOK, reports, others)
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// plainControl: a plain RTCP compound of APP, BYE and SDES packets only.
func plainControl(b []byte) bool {
	pkts, err := rtcp.Unmarshal(b)
	if err != nil {
		return false
	}
	for _, p := range pkts {
		switch p.(type) {
		case *rtcp.ApplicationDefined, *rtcp.Goodbye, *rtcp.SourceDescription:
		default:
			return false
		}
	}
	return true
}

// anchorReport: an RTCP compound of the anchor's own (its CNAME).
func anchorReport(b []byte) bool {
	pkts, err := rtcp.Unmarshal(b)
	if err != nil {
		return false
	}
	for _, p := range pkts {
		if sd, ok := p.(*rtcp.SourceDescription); ok {
			for _, c := range sd.Chunks {
				for _, it := range c.Items {
					if it.Type == rtcp.SDESCNAME && it.Text == "sori-anchor" {
						return true
					}
				}
			}
		}
	}
	return false
}

// sipSDP returns the SDP body of a SIP message in a datagram.
func sipSDP(b []byte) ([]byte, bool) {
	if !bytes.HasPrefix(b, []byte("INVITE ")) && !bytes.HasPrefix(b, []byte("SIP/2.0 ")) {
		return nil, false
	}
	head, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok || len(body) == 0 || !bytes.Contains(bytes.ToLower(head), []byte("application/sdp")) {
		return nil, false
	}
	return body, true
}

// verifier decrypts the packets of a capture with the keys by m= port:
// per key, an SRTP and an SRTCP context of pion/srtp (a wrong key's
// failure leaves a context as it was).
type verifier struct {
	keys map[uint16][]sdes.Crypto
	rtp  map[string]*srtp.Context
	rtcp map[string]*srtp.Context
}

func newVerifier(keys map[uint16][]sdes.Crypto) *verifier {
	return &verifier{keys: keys, rtp: map[string]*srtp.Context{}, rtcp: map[string]*srtp.Context{}}
}

func (v *verifier) decrypt(port uint16, b []byte, isRTCP bool) ([]byte, error) {
	var last error = errNoKey
	for _, c := range v.keys[port] {
		id := c.String(false)
		m := v.rtp
		if isRTCP {
			m = v.rtcp
		}
		ctx := m[id]
		if ctx == nil {
			var err error
			if ctx, err = c.Context(); err != nil {
				return nil, err
			}
			m[id] = ctx
		}
		var out []byte
		var err error
		if isRTCP {
			out, err = ctx.DecryptRTCP(nil, b, nil)
		} else {
			out, err = ctx.DecryptRTP(nil, b, nil)
		}
		if err == nil {
			return out, nil
		}
		last = err
	}
	return nil, last
}

type keyError string

func (e keyError) Error() string { return string(e) }

const errNoKey = keyError("no a=crypto was captured for that port")

// wirePacket is one UDP datagram seen on loopback.
type wirePacket struct {
	src, dst netip.AddrPort
	payload  []byte
}

// loopCapture reads loopback's IPv4 UDP datagrams with an AF_PACKET
// socket (the tests run as root), keeping those keep wants.
type loopCapture struct {
	t    *testing.T
	fd   int
	mu   sync.Mutex
	pkts []wirePacket
	done chan struct{}
	quit chan struct{}
}

func captureLoopback(t *testing.T, keep func(src, dst netip.AddrPort) bool) *loopCapture {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	proto := int(htons16(unix.ETH_P_IP))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatalf("AF_PACKET socket (the test needs root): %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: lo.Index}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	c := &loopCapture{t: t, fd: fd, done: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.quit:
				return
			default:
			}
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // the timeout: look at quit
			}
			// Loopback shows each datagram leaving and arriving: keep
			// the arrival.
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			p, ok := parseUDP(buf[:n])
			if ok && keep(p.src, p.dst) {
				c.mu.Lock()
				c.pkts = append(c.pkts, p)
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

// stop ends the capture and returns what it kept.
func (c *loopCapture) stop() []wirePacket {
	select {
	case <-c.quit:
	default:
		close(c.quit)
		<-c.done
		unix.Close(c.fd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pkts
}

// parseUDP reads an IPv4 UDP datagram.
func parseUDP(b []byte) (wirePacket, bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_UDP {
		return wirePacket{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	if len(b) < ihl+8 {
		return wirePacket{}, false
	}
	u := b[ihl:]
	ulen := int(byteorder.BigEndian.Uint16(u[4:6]))
	if ulen < 8 || ulen > len(u) {
		return wirePacket{}, false
	}
	src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[12:16])), byteorder.BigEndian.Uint16(u[0:2]))
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), byteorder.BigEndian.Uint16(u[2:4]))
	return wirePacket{src: src, dst: dst, payload: bytes.Clone(u[8:ulen])}, true
}

func htons16(v uint16) uint16 { return v<<8 | v>>8 }

// An SRTP phone calls a carrier whose trunk says encryption: rtp (the
// default, media.encryption, says srtp): the carrier is offered plain
// RTP/AVP without a=crypto and gets plain RTP, decrypted by the anchor,
// while the phone's leg stays SRTP.
func TestSRTPPhoneCallsAPlainCarrier(t *testing.T) {
	if _, err := exec.LookPath("baresip"); err != nil {
		t.Fatalf("baresip is not installed (make test installs it): %v", err)
	}
	t.Parallel()
	an := startAnchor(t)
	gw := freeSIPPort(t)
	n := startNode(t, nodeConfig{extra: fmt.Sprintf(`media: {anchors: [%q], encryption: srtp}
numbering: {country_code: "82", national_prefix: "0", international_prefix: "00"}
trunks:
  - name: carrier
    encryption: rtp
    gateways: [{address: "udp:127.0.0.1:%d"}]
routes:
  - {prefix: "+82", trunks: [carrier]}
users:
  - {name: alice, password: alice-secret, numbers: ["+821011112222"]}
`, an.ng, gw)})
	carrierRTP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { carrierRTP.Close() })
	offers := make(chan string, 4)
	fakeUDPPeer(t, gw, func(req *sip.Request, respond func(*sip.Response)) {
		if !req.IsInvite() {
			respond(sip.NewResponseFromRequest(req, 200, "OK", nil)) // OPTIONS pings, BYE
			return
		}
		offers <- string(req.Body())
		body := fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
			carrierRTP.LocalAddr().(*net.UDPAddr).Port)
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(body))
		if _, ok := res.To().Params.Get("tag"); !ok {
			res.To().Params.Add("tag", "carrier")
		}
		res.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<sip:carrier@127.0.0.1:%d>", gw)))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		respond(res)
	})
	alice := startBaresip(t, n.port, "udp", "alice", "alice-secret", aliceTone, "", mandatorySRTP)
	alice.waitRegistered()
	callee := "sip:+821099998888@sori.test"
	alice.dial(callee)
	var offer string
	select {
	case offer = <-offers:
	case <-time.After(10 * time.Second):
		t.Fatal("the carrier got no INVITE")
	}
	m, err := sdp.Parse([]byte(offer))
	if err != nil || len(m.Media) != 1 || m.Media[0].Proto != "RTP/AVP" || len(m.Media[0].Crypto) != 0 || !an.owns(m.Media[0].Addr.String(), strconv.Itoa(m.Media[0].Port)) {
		t.Fatalf("the carrier was offered, want plain RTP/AVP from the anchor (%v):\n%s", err, offer)
	}
	alice.expect("SRTP on alice's leg", 10*time.Second, regexp.MustCompile(`SRTP is Enabled \(cryptosuite=\w+\)`), nil)
	alice.waitAnswered(callee)

	// The carrier hears plain RTP: alice's G.711, decrypted by the anchor.
	buf := make([]byte, 2048)
	plain := 0
	for deadline := time.Now().Add(5 * time.Second); plain < 50 && time.Now().Before(deadline); {
		_ = carrierRTP.SetReadDeadline(deadline)
		k, from, err := carrierRTP.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		if !an.owns(from.Addr().String(), itoa(from.Port())) {
			t.Fatalf("the carrier's RTP came from %s, not the anchor", from)
		}
		if k != 12+160 || buf[0]>>6 != 2 || buf[1]&0x7f != 0 {
			t.Fatalf("the carrier got %d bytes, PT %d: want plain 20 ms PCMU RTP (no SRTP tag)", k, buf[1]&0x7f)
		}
		plain++
	}
	if plain < 50 {
		t.Fatalf("the carrier got %d plain RTP packets", plain)
	}
	q := anchorCall(t, an)
	srtpLegs := 0
	for tag, v := range q.Dict("tags") {
		medias, _ := ng.Dict(v.(map[string]any))["medias"].([]any)
		md := ng.Dict(medias[0].(map[string]any))
		if md.Dict("SRTP") != nil {
			srtpLegs++
			if md.Str("protocol") != "RTP/SAVP" {
				t.Errorf("leg %s: SRTP on %s", tag, md.Str("protocol"))
			}
		}
	}
	if srtpLegs != 1 {
		t.Fatalf("%d SRTP legs, want alice's only: %v", srtpLegs, q.Dict("tags"))
	}
	alice.hangUp()
	alice.waitEnded(callee)
}
