package relay

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"

	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/ports"
)

// The anchor's SRTP tests bind its ports on 127.0.0.20.
var srtpLoop = netip.MustParseAddr("127.0.0.20")

func srtpPorts(t testing.TB, lo int) *ports.Allocator {
	t.Helper()
	a, err := ports.New(srtpLoop, lo, lo+99)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close) // the parked pairs, after everything else
	return a
}

func newKeys(t testing.TB, p srtp.ProtectionProfile) *Keys {
	t.Helper()
	kl, _ := p.KeyLen()
	sl, _ := p.SaltLen()
	k := &Keys{Profile: p, Key: make([]byte, kl), Salt: make([]byte, sl)}
	_, _ = rand.Read(k.Key)
	_, _ = rand.Read(k.Salt)
	return k
}

// srtpPhone is a phone speaking SRTP: it encrypts with send, decrypts
// with recv (the anchor's In and Out keys of its leg).
type srtpPhone struct {
	*phone
	send, recv         *srtp.Context
	sendRTCP, recvRTCP *srtp.Context
}

func newSRTPPhone(t testing.TB, k *Crypto) *srtpPhone {
	t.Helper()
	p := &srtpPhone{phone: newPhone(t)}
	var err error
	for _, c := range []struct {
		dst **srtp.Context
		k   *Keys
	}{{&p.send, k.In}, {&p.sendRTCP, k.In}, {&p.recv, k.Out}, {&p.recvRTCP, k.Out}} {
		if *c.dst, err = srtp.CreateContext(c.k.Key, c.k.Salt, c.k.Profile); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

type srtpCall struct {
	a, b   *Stream
	alloc  *ports.Allocator
	portA  netip.AddrPort
	portB  netip.AddrPort
	rtcpA  netip.AddrPort
	ka, kb *Crypto // nil: plain
}

// newSRTPCall links two streams; leg A's and leg B's phones are at pa, pb.
func newSRTPCall(t *testing.T, lo int, o Options, ka, kb *Crypto, pa, pb netip.AddrPort) *srtpCall {
	t.Helper()
	c := &srtpCall{alloc: srtpPorts(t, lo), ka: ka, kb: kb}
	for _, s := range []**Stream{&c.a, &c.b} {
		p, err := c.alloc.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		if *s, err = NewStream(p, o); err != nil {
			t.Fatal(err)
		}
		st := *s
		t.Cleanup(func() { st.Stop(); c.alloc.Release(p); st.Wait() })
	}
	if err := c.a.SetCrypto(ka); err != nil {
		t.Fatal(err)
	}
	if err := c.b.SetCrypto(kb); err != nil {
		t.Fatal(err)
	}
	c.a.SetEndpoint(pa, netip.AddrPortFrom(pa.Addr(), pa.Port()+1))
	c.b.SetEndpoint(pb, netip.AddrPortFrom(pb.Addr(), pb.Port()+1))
	c.a.SetPeer(c.b)
	c.b.SetPeer(c.a)
	c.a.Start()
	c.b.Start()
	c.portA = netip.AddrPortFrom(srtpLoop, uint16(c.a.Port()))
	c.portB = netip.AddrPortFrom(srtpLoop, uint16(c.b.Port()))
	c.rtcpA = netip.AddrPortFrom(srtpLoop, uint16(c.a.Port()+1))
	return c
}

func TestSRTPLegToPlainLeg(t *testing.T) {
	ka := &Crypto{In: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80), Out: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80)}
	pa := newSRTPPhone(t, ka)
	pb := newPhone(t)
	c := newSRTPCall(t, 46000, Options{OpusPT: 111}, ka, nil, pa.addr(), pb.addr())
	for seq := uint16(1); seq <= 20; seq++ {
		plain := opusPacket(seq)
		wire, err := pa.send.EncryptRTP(nil, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		pa.phone.send(c.portA, wire)
		got, _, ok := pb.recv(time.Second)
		if !ok || !bytes.Equal(got, plain) {
			t.Fatalf("A→B %d: B got %x, want the cleartext %x", seq, got, plain)
		}
		back := opusPacket(1000 + seq)
		pb.send(c.portB, back)
		got, _, ok = pa.phone.recv(time.Second)
		if !ok {
			t.Fatalf("B→A %d: nothing reached A", seq)
		}
		if bytes.Contains(got, back[12:]) {
			t.Fatalf("B→A %d: payload in clear on A's leg", seq)
		}
		dec, err := pa.recv.DecryptRTP(nil, got, nil)
		if err != nil || !bytes.Equal(dec, back) {
			t.Fatalf("B→A %d: %v", seq, err)
		}
	}
	// Forged (bad tag), replayed and plain packets from A go nowhere.
	wire, _ := pa.send.EncryptRTP(nil, opusPacket(21), nil)
	forged := bytes.Clone(wire)
	forged[len(forged)-1] ^= 1
	pa.phone.send(c.portA, forged)
	pa.phone.send(c.portA, opusPacket(22))
	pa.phone.send(c.portA, wire)
	pa.phone.send(c.portA, wire) // replayed
	if got, _, ok := pb.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(21)) {
		t.Fatalf("the good packet after the forged and plain ones: %v", ok)
	}
	if got, _, ok := pb.recv(200 * time.Millisecond); ok {
		t.Fatalf("a forged, plain or replayed packet was relayed: %x", got)
	}
	rtpA, _ := c.a.Stats()
	if rtpA.Errors != 3 {
		t.Fatalf("A's errors %d, want 3", rtpA.Errors)
	}
	// The statistics read the decrypted stream: 21 packets, none lost.
	if rep := c.a.ReceptionSnapshot(); rep.Received != 21 || rep.Lost != 0 {
		t.Fatalf("reception %+v", rep)
	}
}

func TestSRTPBothLegsReencrypted(t *testing.T) {
	for _, prof := range []srtp.ProtectionProfile{srtp.ProtectionProfileAes128CmHmacSha1_32, srtp.ProtectionProfileAeadAes128Gcm} {
		t.Run(prof.String(), func(t *testing.T) {
			ka := &Crypto{In: newKeys(t, prof), Out: newKeys(t, prof)}
			kb := &Crypto{In: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80), Out: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80)}
			pa, pb := newSRTPPhone(t, ka), newSRTPPhone(t, kb)
			lo := 46100
			if prof == srtp.ProtectionProfileAeadAes128Gcm {
				lo = 46200
			}
			c := newSRTPCall(t, lo, Options{OpusPT: 111, Jitter: &jitter.Config{Mode: jitter.Fixed, Min: 20 * time.Millisecond}}, ka, kb, pa.addr(), pb.addr())
			for seq := uint16(1); seq <= 10; seq++ {
				plain := opusPacket(seq)
				wire, _ := pa.send.EncryptRTP(nil, plain, nil)
				pa.phone.send(c.portA, wire)
				got, _, ok := pb.phone.recv(time.Second)
				if !ok || bytes.Equal(got, wire) || bytes.Contains(got, plain[12:]) {
					t.Fatalf("A→B %d: not re-encrypted (ok %v)", seq, ok)
				}
				dec, err := pb.recv.DecryptRTP(nil, got, nil)
				if err != nil || !bytes.Equal(dec, plain) {
					t.Fatalf("A→B %d: B cannot decrypt with its leg's key: %v", seq, err)
				}
			}
		})
	}
}

func TestSRTCPReadAndOwnReportsEncrypted(t *testing.T) {
	ka := &Crypto{In: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80), Out: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80)}
	pa := newSRTPPhone(t, ka)
	rtcpPhone := newPhone(t) // phone A's RTCP socket
	pb := newPhone(t)
	c := newSRTPCall(t, 46300, Options{}, ka, nil, pa.addr(), pb.addr())
	c.a.SetEndpoint(pa.addr(), rtcpPhone.addr())
	for seq := uint16(1); seq <= 5; seq++ {
		wire, _ := pa.send.EncryptRTP(nil, opusPacket(seq), nil)
		pa.phone.send(c.portA, wire)
		if _, _, ok := pb.recv(time.Second); !ok {
			t.Fatal("not relayed")
		}
	}
	// Phone A's SRTCP sender report is read (its NTP time answers in the
	// anchor's report) and reaches B as plain RTCP.
	sr := &rtcp.SenderReport{SSRC: 0x1234, NTPTime: 0x0102030405060708, RTPTime: 4800, PacketCount: 5}
	plainSR, _ := rtcp.Marshal([]rtcp.Packet{sr})
	wireSR, err := pa.sendRTCP.EncryptRTCP(nil, plainSR, nil)
	if err != nil {
		t.Fatal(err)
	}
	rtcpB := newPhone(t)
	c.b.SetEndpoint(pb.addr(), rtcpB.addr())
	rtcpPhone.send(c.rtcpA, wireSR)
	if got, _, ok := rtcpB.recv(time.Second); !ok || !bytes.Equal(got, plainSR) {
		t.Fatalf("B got %x, want the decrypted SR", got)
	}
	report, _, ok := c.a.Report(time.Now(), JitterFigures{})
	if !ok {
		t.Fatal("no report")
	}
	if err := c.a.SendRTCP(report); err != nil {
		t.Fatal(err)
	}
	got, from, ok := rtcpPhone.recv(time.Second)
	if !ok || from != c.rtcpA {
		t.Fatalf("no report from the anchor's RTCP port: %v %s", ok, from)
	}
	if bytes.Equal(got, report) {
		t.Fatal("the anchor's report went in clear")
	}
	dec, err := pa.recvRTCP.DecryptRTCP(nil, got, nil)
	if err != nil || !bytes.Equal(dec, report) {
		t.Fatalf("A cannot decrypt the anchor's SRTCP with its leg's key: %v", err)
	}
	pkts, _ := rtcp.Unmarshal(dec)
	rr, _ := pkts[0].(*rtcp.ReceiverReport)
	if rr == nil || len(rr.Reports) != 1 || rr.Reports[0].SSRC != 0x1234 || rr.Reports[0].LastSenderReport != 0x03040506 {
		t.Fatalf("report %+v", pkts[0])
	}
}

func TestSRTPNotKeyedDropsAndKeysLater(t *testing.T) {
	// A leg whose keys are not known yet (DTLS-SRTP mid-handshake) sends
	// and takes nothing; once keyed, it relays.
	ka := &Crypto{In: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80), Out: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80)}
	pa := newSRTPPhone(t, ka)
	pb := newPhone(t)
	c := newSRTPCall(t, 46400, Options{}, &Crypto{}, nil, pa.addr(), pb.addr())
	pb.send(c.portB, opusPacket(1))
	wire, _ := pa.send.EncryptRTP(nil, opusPacket(2), nil)
	pa.phone.send(c.portA, wire)
	if got, _, ok := pa.phone.recv(200 * time.Millisecond); ok {
		t.Fatalf("an unkeyed leg got %x", got)
	}
	if got, _, ok := pb.recv(50 * time.Millisecond); ok {
		t.Fatalf("an unkeyed leg's packet was relayed: %x", got)
	}
	// B's packet was held back from A for want of keys: counted on A,
	// and not as an error of B's.
	if n := c.a.Unkeyed(); n != 1 {
		t.Fatalf("A counts %d packets dropped before its keys, want 1", n)
	}
	if rtp, _ := c.b.Stats(); rtp.Packets != 1 || rtp.Errors != 0 {
		t.Fatalf("B's counters %+v", rtp)
	}
	if err := c.a.SetCrypto(ka); err != nil {
		t.Fatal(err)
	}
	pa.phone.send(c.portA, wire)
	if got, _, ok := pb.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(2)) {
		t.Fatal("not relayed once keyed")
	}
	pb.send(c.portB, opusPacket(3))
	got, _, ok := pa.phone.recv(time.Second)
	if !ok {
		t.Fatal("nothing to A once keyed")
	}
	if dec, err := pa.recv.DecryptRTP(nil, got, nil); err != nil || !bytes.Equal(dec, opusPacket(3)) {
		t.Fatal(err)
	}
	if n := c.a.Unkeyed(); n != 1 {
		t.Fatalf("A counts %d packets dropped before its keys once keyed, want still 1", n)
	}
	// The same keys again (a re-INVITE) keep the contexts: the replay
	// window still knows packet 2.
	if err := c.a.SetCrypto(&Crypto{In: ka.In, Out: ka.Out}); err != nil {
		t.Fatal(err)
	}
	pa.phone.send(c.portA, wire)
	if got, _, ok := pb.recv(200 * time.Millisecond); ok {
		t.Fatalf("a replay after re-keying with the same keys was relayed: %x", got)
	}
	// Back to plain.
	_ = c.a.SetCrypto(nil)
	pa.phone.send(c.portA, opusPacket(4))
	if got, _, ok := pb.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(4)) {
		t.Fatal("plain after SetCrypto(nil)")
	}
}

// BenchmarkSRTPTransform is the worker's SRTP work on one 92-byte Opus
// packet (a 12-byte header, 80 bytes of payload), in its buffers:
// encrypt (towards an SRTP phone) and decrypt (from one).
func BenchmarkSRTPTransform(b *testing.B) {
	for _, prof := range []srtp.ProtectionProfile{srtp.ProtectionProfileAes128CmHmacSha1_80, srtp.ProtectionProfileAeadAes128Gcm} {
		b.Run(prof.String(), func(b *testing.B) {
			k := newKeys(b, prof)
			s := &Stream{}
			if err := s.SetCrypto(&Crypto{In: k, Out: k}); err != nil {
				b.Fatal(err)
			}
			lc := s.crypto.Load()
			var buf [bufSize + srtpRoom]byte
			pkt := opusPacket(0)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				binary.BigEndian.PutUint16(pkt[2:], uint16(i))
				lc.mu.Lock()
				out, err := lc.encrypt(buf[:0], pkt, false)
				if err == nil {
					_, err = lc.decrypt(out, false)
				}
				lc.mu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestSRTPLegHandsSTUNAndDTLSToItsKeying(t *testing.T) {
	pa := newPhone(t)
	pb := newPhone(t)
	c := newSRTPCall(t, 46600, Options{}, &Crypto{}, nil, pa.addr(), pb.addr())
	type got struct {
		b    []byte
		from netip.AddrPort
	}
	others := make(chan got, 4)
	c.a.SetOther(func(b []byte, from netip.AddrPort) { others <- got{bytes.Clone(b), from} })
	stun := append([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}, make([]byte, 12)...)
	dtls := []byte{0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for _, want := range [][]byte{stun, dtls} {
		pa.send(c.portA, want)
		select {
		case g := <-others:
			if !bytes.Equal(g.b, want) || g.from != pa.addr() {
				t.Fatalf("handed %x from %s, want %x from %s", g.b, g.from, want, pa.addr())
			}
		case <-time.After(time.Second):
			t.Fatalf("%x not handed over", want[:1])
		}
	}
	if got, _, ok := pb.recv(100 * time.Millisecond); ok {
		t.Fatalf("keying traffic relayed to the other phone: %x", got)
	}
	// The anchor's own answer leaves from the leg's RTP port, as it is.
	if err := c.a.SendOther(dtls, pa.addr()); err != nil {
		t.Fatal(err)
	}
	if got, from, ok := pa.recv(time.Second); !ok || !bytes.Equal(got, dtls) || from != c.portA {
		t.Fatalf("SendOther: %x from %s", got, from)
	}
	// Once keyed, RTP still goes to the media, not to the handler.
	k := &Crypto{In: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80), Out: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80)}
	if err := c.a.SetCrypto(k); err != nil {
		t.Fatal(err)
	}
	sp := newSRTPPhone(t, k)
	wire, _ := sp.send.EncryptRTP(nil, opusPacket(1), nil)
	pa.send(c.portA, wire)
	if got, _, ok := pb.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(1)) {
		t.Fatal("RTP not relayed once keyed")
	}
	select {
	case g := <-others:
		t.Fatalf("RTP handed to the keying: %x", g.b)
	default:
	}
}

// validSet is an ICE that validated a fixed set of addresses.
type validSet map[netip.AddrPort]bool

func (v validSet) Validated(a netip.AddrPort) bool { return v[a] }

// A WebRTC leg relays media only from addresses ICE validated, and sends
// to the one Latch names, not to whoever sent first.
func TestWebRTCLegTakesMediaOnlyFromICEValidatedAddresses(t *testing.T) {
	k := &Crypto{In: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80), Out: newKeys(t, srtp.ProtectionProfileAes128CmHmacSha1_80)}
	browser := newSRTPPhone(t, k)
	stranger := newSRTPPhone(t, k) // holds the keys, but passed no check
	pb := newPhone(t)
	// A browser's SDP gives no usable address (c=0.0.0.0, port 9).
	c := newSRTPCall(t, 46800, Options{}, k, nil, netip.AddrPort{}, pb.addr())
	c.a.SetMux(true)
	var stun []netip.AddrPort
	others := make(chan netip.AddrPort, 8)
	c.a.SetOther(func(_ []byte, from netip.AddrPort) { others <- from })
	c.a.SetICE(validSet{browser.addr(): true})

	// STUN from the stranger reaches the keying but latches nothing.
	stranger.phone.send(c.portA, append([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}, make([]byte, 12)...))
	select {
	case from := <-others:
		stun = append(stun, from)
	case <-time.After(time.Second):
		t.Fatal("STUN not handed to the keying")
	}
	if ep, ok := c.a.Endpoint(); ok {
		t.Fatalf("a STUN datagram latched the leg to %s", ep)
	}
	wire, _ := stranger.send.EncryptRTP(nil, opusPacket(1), nil)
	stranger.phone.send(c.portA, wire)
	if got, _, ok := pb.recv(200 * time.Millisecond); ok {
		t.Fatalf("SRTP from an address no check validated was relayed: %x", got)
	}
	if ep, ok := c.a.Endpoint(); ok {
		t.Fatalf("media from an unvalidated address latched the leg to %s", ep)
	}
	// The validated browser's media is relayed...
	wire, _ = browser.send.EncryptRTP(nil, opusPacket(2), nil)
	browser.phone.send(c.portA, wire)
	if got, _, ok := pb.recv(time.Second); !ok || !bytes.Equal(got, opusPacket(2)) {
		t.Fatalf("the validated browser's RTP: got %x", got)
	}
	// ...and what goes back follows Latch (the nominated path), RTCP
	// too on the multiplexed port.
	c.a.Latch(browser.addr())
	pb.send(c.portB, opusPacket(3))
	got, from, ok := browser.phone.recv(time.Second)
	if !ok || from != c.portA {
		t.Fatalf("nothing reached the latched browser from %s (got %x from %s)", c.portA, got, from)
	}
	if dec, err := browser.recv.DecryptRTP(nil, got, nil); err != nil || !bytes.Equal(dec, opusPacket(3)) {
		t.Fatalf("B→browser: %v", err)
	}
	if _, _, ok := stranger.phone.recv(100 * time.Millisecond); ok {
		t.Fatal("the stranger got media")
	}
	if rtp, _ := c.a.Stats(); rtp.Errors != 1 {
		t.Fatalf("leg A counts %d errors, want 1 (the stranger's RTP)", rtp.Errors)
	}
	if len(stun) != 1 || stun[0] != stranger.addr() {
		t.Fatalf("keying got STUN from %v", stun)
	}
}
