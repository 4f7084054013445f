package nodes

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

const signedInvite = "INVITE sip:bob@192.168.1.20:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-node-b-1\r\n" +
	"Via: SIP/2.0/UDP 198.51.100.7:40112;branch=z9hG4bK-phone;received=198.51.100.7;rport=40112\r\n" +
	"Route: <sip:f1abc@10.0.0.1:5060;lr;ob>\r\n" +
	"Record-Route: <sip:10.0.0.2:5060;lr>\r\n" +
	"Path: <sip:10.0.0.2:5060;lr>\r\n" +
	"From: <sip:alice@sori.test>;tag=a1\r\n" +
	"To: <sip:bob@sori.test>\r\n" +
	"Contact: <sip:alice@198.51.100.7:40112;alias=198.51.100.7~40112~1>\r\n" +
	"Call-ID: call-1@198.51.100.7\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Max-Forwards: 69\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 4\r\n" +
	"\r\n" +
	"v=0\n"

const signedRinging = "SIP/2.0 180 Ringing\r\n" +
	"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-node-a-1\r\n" +
	"Via: SIP/2.0/UDP 198.51.100.7:40112;branch=z9hG4bK-phone;received=198.51.100.7;rport=40112\r\n" +
	"From: <sip:alice@sori.test>;tag=a1\r\n" +
	"To: <sip:bob@sori.test>;tag=b1\r\n" +
	"Contact: <sip:bob@192.168.1.20:5060>\r\n" +
	"Call-ID: call-1@198.51.100.7\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Content-Length: 0\r\n\r\n"

func parse(t *testing.T, raw string) sip.Message {
	t.Helper()
	m, err := sip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// seal is raw signed by b as the transport writes it: the signature the
// header section's last line, over every other byte.
func seal(b *Signer, raw string) []byte {
	end := strings.Index(raw, "\r\n\r\n")
	head, rest := raw[:end+2], raw[end+2:]
	return []byte(head + Header + ": " + b.Sign([]byte(head), []byte(rest)) + "\r\n" + rest)
}

// signedAt is seal, the signature made at `at`.
func signedAt(b *Signer, raw string, at time.Time) []byte {
	b.now = func() time.Time { return at }
	return seal(b, raw)
}

func TestSignature(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	peers := []Address{addr(t, "udp:10.0.0.1:5060"), addr(t, "udp:10.0.0.2:5060")}
	b := NewSigner(secret, peers[1], peers)
	stranger := NewSigner([]byte("another secret"), peers[1], peers)
	b.now = func() time.Time { return now }

	if a := NewSigner(secret, peers[0], peers); !a.Peer(netip.MustParseAddr("10.0.0.2")) || !a.Peer(netip.MustParseAddr("::ffff:10.0.0.2")) ||
		a.Peer(netip.MustParseAddr("10.0.0.1")) || a.Peer(netip.MustParseAddr("198.51.100.7")) {
		t.Fatal("Peer: only the other nodes' addresses are peers")
	}
	invite := string(seal(b, signedInvite))
	// alter is the signed INVITE, changed after it was signed.
	alter := func(old, new string) []byte {
		if !strings.Contains(invite, old) {
			t.Fatalf("%q is not in the INVITE", old)
		}
		return []byte(strings.Replace(invite, old, new, 1))
	}
	sigLine := invite[strings.Index(invite, Header) : strings.Index(invite, "\r\n\r\n")+2]
	for _, c := range []struct {
		name string
		msg  []byte
		want bool
	}{
		{"a request b signed", []byte(invite), true},
		{"a response b signed", seal(b, signedRinging), true},
		{"signed 29 s ago", signedAt(b, signedInvite, now.Add(-29*time.Second)), true},
		{"signed 29 s ahead", signedAt(b, signedInvite, now.Add(29*time.Second)), true},
		{"signed 31 s ago: expired", signedAt(b, signedInvite, now.Add(-31*time.Second)), false},
		{"signed 31 s ahead", signedAt(b, signedInvite, now.Add(31*time.Second)), false},
		{"signed with another secret", seal(stranger, signedInvite), false},
		{"not signed", []byte(signedInvite), false},
		// Whatever would redirect the request, or make more of it a node's.
		{"another Request-URI", alter("INVITE sip:bob@192.168.1.20:5060 ", "INVITE sip:bob@203.0.113.9:5060 "), false},
		{"another method", alter("INVITE sip:bob", "MESSAGE sip:bob"), false},
		{"another Route", alter("Route: <sip:f1abc@10.0.0.1", "Route: <sip:f1abd@10.0.0.1"), false},
		{"a Route more", alter("Route: <sip:f1abc", "Route: <sip:203.0.113.9;lr>\r\nRoute: <sip:f1abc"), false},
		{"a Route less", alter("Route: <sip:f1abc@10.0.0.1:5060;lr;ob>\r\n", ""), false},
		{"another Record-Route", alter("Record-Route: <sip:10.0.0.2", "Record-Route: <sip:203.0.113.9"), false},
		{"another Path", alter("Path: <sip:10.0.0.2", "Path: <sip:203.0.113.9"), false},
		{"another Contact", alter("alias=198.51.100.7~40112", "alias=203.0.113.9~40112"), false},
		{"another top Via sent-by", alter("UDP 10.0.0.2:5060;", "UDP 10.0.0.9:5060;"), false},
		{"another Via below", alter("received=198.51.100.7", "received=203.0.113.9"), false},
		{"another branch", alter("branch=z9hG4bK-node-b-1", "branch=z9hG4bK-node-b-2"), false},
		{"another Max-Forwards", alter("Max-Forwards: 69", "Max-Forwards: 70"), false},
		{"another Call-ID", alter("Call-ID: call-1@", "Call-ID: call-2@"), false},
		{"another CSeq", alter("CSeq: 1 INVITE", "CSeq: 2 INVITE"), false},
		{"another From tag", alter("tag=a1", "tag=a2"), false},
		{"another To tag", alter("To: <sip:bob@sori.test>", "To: <sip:bob@sori.test>;tag=x"), false},
		{"another body", alter("v=0\n", "v=1\n"), false},
		{"a header more", alter("Max-Forwards: 69\r\n", "Max-Forwards: 69\r\nP-Asserted-Identity: <sip:boss@sori.test>\r\n"), false},
		{"a header folded", alter("Max-Forwards: 69\r\n", "Max-Forwards: 69\r\n x\r\n"), false},
		{"other line ends", alter("CSeq: 1 INVITE\r\n", "CSeq: 1 INVITE\n"), false},
		// The signature's line itself.
		{"the signature moved up", []byte(strings.Replace(strings.Replace(invite, sigLine, "", 1), "Max-Forwards", sigLine+"Max-Forwards", 1)), false},
		{"the signature's header in lower case", alter(Header+": ", "x-sori-node: "), false},
		{"the signature spaced", alter(Header+": t=", Header+":  t="), false},
		{"the signature with a parameter more", alter("\r\n\r\n", ";x=1\r\n\r\n"), false},
		{"the signature with a header after it", alter("\r\n\r\n", "\nVia: SIP/2.0/UDP 203.0.113.9\r\n\r\n"), false},
		{"the signature's mac in upper case", []byte(strings.Replace(invite, sigLine, strings.ToUpper(sigLine[:len(sigLine)-2])+"\r\n", 1)), false},
		{"a mangled signature", []byte(strings.Replace(signedInvite, "\r\n\r\n", "\r\n"+Header+": t=x;mac=!!\r\n\r\n", 1)), false},
		{"no header section", []byte("INVITE sip:bob@sori.test SIP/2.0\r\n" + Header + ": t=1"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := NewSigner(secret, peers[0], peers) // a fresh replay cache
			a.now = func() time.Time { return now }
			if got := a.Verify(c.msg); got != c.want {
				t.Errorf("Verify %v, want %v:\n%s", got, c.want, c.msg)
			}
		})
	}
}

// A signature is taken once: the same bytes again are a replay, within
// Skew or after it (expired), on any transport; a retransmission, signed
// again by the transport, is the node's every time. What the transport
// hands up is vouched for only with a signature it took.
func TestSignatureReplay(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	peers := []Address{addr(t, "udp:10.0.0.1:5060"), addr(t, "udp:10.0.0.2:5060")}
	a, b := NewSigner(secret, peers[0], peers), NewSigner(secret, peers[1], peers)
	clock := now
	a.now = func() time.Time { return clock }
	b.now = func() time.Time { return now }

	first := seal(b, signedInvite)
	again := seal(b, signedInvite) // the transport's retransmission of it
	for _, c := range []struct {
		name string
		at   time.Duration
		msg  []byte
		want bool
	}{
		{"sent", 0, first, true},
		{"the same bytes again: a replay", 0, first, false},
		{"a retransmission, signed again", 500 * time.Millisecond, again, true},
		{"the retransmission's bytes again", time.Second, again, false},
		{"the first again after its transaction ended", 10 * time.Second, first, false},
		{"the first again, 29 s later", 29 * time.Second, first, false},
		{"the first again, expired", 31 * time.Second, first, false},
		{"the first again, a minute later", 64 * time.Second, first, false},
	} {
		clock = now.Add(c.at)
		if got := a.Verify(c.msg); got != c.want {
			t.Errorf("%s: Verify %v, want %v", c.name, got, c.want)
		}
	}

	// Vouched: what the transport hands up, the header kept.
	clock = now
	msg := seal(b, signedInvite)
	if a.Vouched(parse(t, string(msg))) {
		t.Error("a signature the transport did not take is vouched for")
	}
	if !a.Verify(msg) || !a.Vouched(parse(t, string(msg))) {
		t.Error("a signature the transport took is not vouched for")
	}
	if other := NewSigner(secret, peers[0], peers); other.Vouched(parse(t, string(msg))) {
		t.Error("another Signer vouched for a signature it did not take")
	}
	clock = now.Add(31 * time.Second)
	if a.Vouched(parse(t, string(msg))) {
		t.Error("an expired signature is vouched for")
	}
	clock = now
	m := parse(t, string(msg))
	m.AppendHeader(sip.NewHeader(Header, m.GetHeaders(Header)[0].Value()))
	if a.Vouched(m) {
		t.Error("two signatures are vouched for")
	}
	if a.Vouched(parse(t, signedInvite)) {
		t.Error("an unsigned message is vouched for")
	}
}

// The replay cache keeps each second's nonces while they can be replayed
// within Skew, reuses a second's slot once that is past, and holds at most
// MaxNonces a second.
func TestNonceCache(t *testing.T) {
	var c nonces
	key := func(shard byte, i int) []byte {
		k := []byte(fmt.Sprintf("%c%019d", 'a'+shard, i))
		return k[:nonceChars]
	}
	const sec = 1_800_000_000
	if !c.take(sec, key(0, 1)) || c.take(sec, key(0, 1)) || !c.has(sec, key(0, 1)) {
		t.Fatal("a nonce is taken once")
	}
	if c.has(sec+1, key(0, 1)) || !c.take(sec+1, key(0, 1)) {
		t.Fatal("a nonce of another second is another signature's")
	}
	// The slot of sec, ringSlots seconds later: sec's nonces are gone.
	if !c.take(sec+ringSlots, key(0, 2)) || c.has(sec, key(0, 1)) || !c.has(sec+ringSlots, key(0, 2)) {
		t.Fatal("a slot is not reused for a later second")
	}
	// The clock went back: the slot holds a later second's, still needed.
	if c.take(sec, key(0, 3)) || !c.has(sec+ringSlots, key(0, 2)) {
		t.Fatal("an earlier second cleared a later second's nonces")
	}
	// At most perSlot a second in a shard; the other shards have room.
	for i := range perSlot - 1 {
		if !c.take(sec+ringSlots, key(0, 100+i)) {
			t.Fatalf("nonce %d of a second refused", i)
		}
	}
	if c.take(sec+ringSlots, key(0, 99)) {
		t.Fatal("a full slot took one more")
	}
	if !c.take(sec+ringSlots, key(1, 99)) || !c.take(sec+ringSlots+1, key(0, 99)) {
		t.Fatal("a full slot refused another shard's, or another second's")
	}
}

// Many readers verify at once (go test -race).
func TestSignatureConcurrent(t *testing.T) {
	peers := []Address{addr(t, "udp:10.0.0.1:5060"), addr(t, "udp:10.0.0.2:5060")}
	a, b := NewSigner(secret, peers[0], peers), NewSigner(secret, peers[1], peers)
	msgs := make([][]byte, 400)
	for i := range msgs {
		msgs[i] = seal(b, signedInvite)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	taken := 0
	for range 8 {
		wg.Go(func() {
			n := 0
			for _, m := range msgs {
				if a.Verify(m) {
					n++
				}
			}
			mu.Lock()
			taken += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if taken != len(msgs) {
		t.Fatalf("%d signatures taken by 8 readers of %d messages, want each once", taken, len(msgs))
	}
}

// BenchmarkVerify is a node's check of a signed INVITE with an SDP body
// (~1 KB), each signature fresh (Verify takes each once).
func BenchmarkVerify(b *testing.B) {
	peers := []Address{{Transport: "UDP", Addr: netip.MustParseAddrPort("10.0.0.1:5060")}, {Transport: "UDP", Addr: netip.MustParseAddrPort("10.0.0.2:5060")}}
	a, s := NewSigner(secret, peers[0], peers), NewSigner(secret, peers[1], peers)
	sdp := strings.Repeat("a=rtpmap:0 PCMU/8000\r\n", 28)
	raw := strings.Replace(signedInvite, "Content-Length: 4\r\n\r\nv=0\n", fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(sdp), sdp), 1)
	const n = 1 << 14
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = seal(s, raw)
	}
	b.SetBytes(int64(len(msgs[0])))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%n == 0 && i > 0 {
			b.StopTimer()
			a = NewSigner(secret, peers[0], peers) // the nonces again, to a fresh cache
			b.StartTimer()
		}
		if !a.Verify(msgs[i%n]) {
			b.Fatal("not verified")
		}
	}
}

// BenchmarkVerifyReplay is the check of a replayed signature (refused).
func BenchmarkVerifyReplay(b *testing.B) {
	peers := []Address{{Transport: "UDP", Addr: netip.MustParseAddrPort("10.0.0.1:5060")}, {Transport: "UDP", Addr: netip.MustParseAddrPort("10.0.0.2:5060")}}
	a, s := NewSigner(secret, peers[0], peers), NewSigner(secret, peers[1], peers)
	msg := seal(s, signedInvite)
	a.Verify(msg)
	b.ReportAllocs()
	for b.Loop() {
		if a.Verify(msg) {
			b.Fatal("a replay verified")
		}
	}
}

// BenchmarkSign is the signature of a signed INVITE's bytes.
func BenchmarkSign(b *testing.B) {
	peers := []Address{{Transport: "UDP", Addr: netip.MustParseAddrPort("10.0.0.1:5060")}, {Transport: "UDP", Addr: netip.MustParseAddrPort("10.0.0.2:5060")}}
	s := NewSigner(secret, peers[1], peers)
	end := strings.Index(signedInvite, "\r\n\r\n")
	head, rest := []byte(signedInvite[:end+2]), []byte(signedInvite[end+2:])
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Sign(head, rest)
	}
}
