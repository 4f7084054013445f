package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
)

// socketAt is a UDP socket (a phone's media) bound to ip, as a phone on
// another network would have.
func socketAt(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sipFrom is a phone's SIP connection to sori from ip.
func sipFrom(t *testing.T, ip string, n *node) *ua {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(n.addr())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &ua{sipConn: &sipConn{t: t, transport: "udp", conn: c, reader: bufio.NewReader(c), local: c.LocalAddr().String()}, user: "alice", password: "alice-secret"}
}

func sdpAt(m *net.UDPConn, session int) string {
	a := m.LocalAddr().(*net.UDPAddr)
	return fmt.Sprintf("v=0\r\no=- %d %d IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=sendrecv\r\n",
		session, session, a.IP, a.IP, a.Port)
}

// talkStart is when the phones started talking: RTP timestamps follow the
// clock (48 kHz), as a phone's do, also across a pause in sending.
var talkStart = time.Now()

func opus(seq uint16, ssrc uint32) []byte {
	ts := uint32(time.Since(talkStart).Milliseconds() * 48)
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc},
		Payload: append([]byte{0xfc}, bytes.Repeat([]byte{byte(seq)}, 79)...)}
	b, _ := p.Marshal()
	return b
}

// recvRTP reads one RTP packet from m within d: its sequence number and SSRC.
func recvRTP(m *net.UDPConn, d time.Duration) (uint16, uint32, bool) {
	buf := make([]byte, 2048)
	_ = m.SetReadDeadline(time.Now().Add(d))
	k, _, err := m.ReadFromUDPAddrPort(buf)
	if err != nil {
		return 0, 0, false
	}
	var p rtp.Packet
	if p.Unmarshal(buf[:k]) != nil {
		return 0, 0, false
	}
	return p.SequenceNumber, p.SSRC, true
}

// A phone in an answered call moves from one network (127.0.0.2) to
// another (127.0.0.3): it re-registers with the same +sip.instance from
// its new address (the binding is replaced) and sends a re-INVITE with its
// new Contact and media address. The call goes on: its media reaches the
// other phone from the new address, the other phone's media follows it
// there, the other phone's BYE reaches it at its new address; the gap is
// printed and under 300 ms. A stranger sending to its anchor port from a
// third address does not take the stream.
func TestHandoverWiFiToLTE(t *testing.T) {
	an := startAnchor(t)
	n := startNode(t, nodeConfig{extra: fmt.Sprintf("media:\n  anchors: [%q]\n", an.ng)})
	const inst = `;+sip.instance="<urn:uuid:00000000-0000-1000-8000-0000000000aa>";reg-id=1`
	wifi := sipFrom(t, "127.0.0.2", n)
	if res := wifi.registerAuth("alice", "alice-secret", "alice-reg@test", 1, "Contact: <sip:alice@"+wifi.local+">"+inst); res.StatusCode != 200 {
		t.Fatalf("REGISTER on Wi-Fi: %d", res.StatusCode)
	}
	bob := newUA(t, n, "udp", "bob")
	if res := bob.registerAuth("bob", "bob-secret", "bob-reg@test", 1, "Contact: <sip:bob@"+bob.local+">"); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	wifiMedia, lteMedia, bobMedia := socketAt(t, "127.0.0.2"), socketAt(t, "127.0.0.3"), socketAt(t, "127.0.0.1")

	// alice calls bob from Wi-Fi.
	wifi.sdp = sdpAt(wifiMedia, 1)
	wifi.authenticated("INVITE", "sip:bob@sori.test")
	wifi.sdp = ""
	inv := bob.readRequest()
	bobContact := "Contact: <sip:bob@" + bob.local + ">"
	bob.respondSDP(inv, 200, "OK", sdpAt(bobMedia, 2), bobContact)
	res := wifi.final()
	if res.StatusCode != 200 {
		t.Fatalf("INVITE: %d", res.StatusCode)
	}
	wifi.send(wifi.inDialog("ACK", 2, res))
	bob.readRequest()
	toBob, toAlice := mediaTarget(t, res.Body()), mediaTarget(t, inv.Body()) // the anchor's ports

	const aliceSSRC, bobSSRC = 0xa11ce, 0xb0b
	var seq uint16
	var lastOld time.Time
	for i := 0; i < 10; i++ { // talking on Wi-Fi
		seq++
		_, _ = wifiMedia.WriteToUDPAddrPort(opus(seq, aliceSSRC), toBob)
		if _, _, ok := recvRTP(bobMedia, time.Second); !ok {
			t.Fatalf("packet %d from Wi-Fi lost", seq)
		}
		lastOld = time.Now()
		time.Sleep(20 * time.Millisecond)
	}
	_, _ = bobMedia.WriteToUDPAddrPort(opus(1, bobSSRC), toAlice)
	if _, _, ok := recvRTP(wifiMedia, time.Second); !ok {
		t.Fatal("bob's media did not reach alice on Wi-Fi")
	}

	// Wi-Fi is gone: alice is on LTE now, behind the carrier's NAT (her
	// Contact names her private address in the CGNAT range, RFC 6598).
	lte := sipFrom(t, "127.0.0.3", n)
	const cgnat = "100.64.12.34:5060"
	reg := lte.registerAuth("alice", "alice-secret", "alice-reg@test", 3, "Contact: <sip:alice@"+cgnat+">"+inst)
	if reg.StatusCode != 200 || len(reg.GetHeaders("Contact")) != 1 || !strings.Contains(reg.GetHeader("Contact").Value(), cgnat) {
		t.Fatalf("re-REGISTER from LTE: %d, contacts %v (want only the new one)", reg.StatusCode, contactValues(reg))
	}
	reinvite := strings.Replace(lte.inDialog("INVITE", 3, res), "Content-Length: 0\n\n",
		fmt.Sprintf("Contact: <sip:alice@%s>\nContent-Type: application/sdp\nContent-Length: %d\n\n%s", cgnat, len(sdpAt(lteMedia, 1)), sdpAt(lteMedia, 1)), 1)
	lte.send(reinvite)
	reinv := bob.readRequest()
	// The target refresh carries sori's alias of where it came from.
	if reinv.Method != sip.INVITE || !strings.Contains(reinv.Contact().Address.String(), "alias="+strings.ReplaceAll(lte.local, ":", "~")+"~1") {
		t.Fatalf("bob got %s with Contact %v", reinv.Method, reinv.Contact())
	}
	bob.respondSDP(reinv, 200, "OK", sdpAt(bobMedia, 2), bobContact)
	res2 := lte.final()
	if res2.StatusCode != 200 {
		t.Fatalf("re-INVITE: %d", res2.StatusCode)
	}
	lte.send(lte.inDialog("ACK", 3, res)) // along the dialog's route set, fixed by the first INVITE
	bob.readRequest()
	toBobNow := mediaTarget(t, res2.Body())

	// Talking on LTE.
	var firstNew time.Time
	for i := 0; i < 10; i++ {
		seq++
		_, _ = lteMedia.WriteToUDPAddrPort(opus(seq, aliceSSRC), toBobNow)
		got, _, ok := recvRTP(bobMedia, time.Second)
		if !ok {
			t.Fatalf("packet %d from LTE lost", seq)
		}
		if firstNew.IsZero() && got == seq {
			firstNew = time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	gap := firstNew.Sub(lastOld)
	t.Logf("handover gap: %s from the last packet over Wi-Fi to the first over LTE at the other phone", gap.Round(time.Millisecond))
	if gap > 300*time.Millisecond {
		t.Fatalf("handover gap %s, want under 300ms", gap)
	}
	_, _ = bobMedia.WriteToUDPAddrPort(opus(2, bobSSRC), toAlice)
	if _, _, ok := recvRTP(lteMedia, time.Second); !ok {
		t.Fatal("bob's media did not follow alice to LTE")
	}

	_, metrics := httpGet(t, "http://"+n.http+"/metrics")
	if v, ok := sampleIn(metrics, "sori_call_handovers_total"); !ok || v != 1 {
		t.Fatalf("sori_call_handovers_total %v %v, want 1", v, ok)
	}

	// A stranger does not take the stream.
	stranger := socketAt(t, "127.0.0.4")
	_, _ = stranger.WriteToUDPAddrPort(opus(99, 0x5eed), toBobNow)
	recvRTP(bobMedia, 500*time.Millisecond)
	_, _ = bobMedia.WriteToUDPAddrPort(opus(3, bobSSRC), toAlice)
	if _, _, ok := recvRTP(lteMedia, time.Second); !ok {
		t.Fatal("a stranger's packet took alice's stream")
	}
	if _, _, ok := recvRTP(stranger, 200*time.Millisecond); ok {
		t.Fatal("bob's media went to the stranger")
	}

	// bob hangs up: the BYE reaches alice on LTE.
	callID := res.CallID().Value()
	bob.send(fmt.Sprintf("BYE %s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-bye-ho;rport\nMax-Forwards: 70\n%sFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: 1 BYE\nContent-Length: 0\n\n",
		reinv.Contact().Address.String(), bob.local, routeSet(inv), res.To().Value(), res.From().Value(), callID))
	bye := lte.readRequest()
	if bye.Method != sip.BYE {
		t.Fatalf("alice on LTE got %s, want the BYE", bye.Method)
	}
	lte.respond(bye, 200, "OK")
	if r := bob.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
}
