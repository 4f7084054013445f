package anchor

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/sdes"
)

// The SDES tests' anchor listens on 127.0.0.20.
var srtpAnchor = netip.MustParseAddr("127.0.0.20")

func newSRTPManager(t *testing.T, lo int) *Manager {
	t.Helper()
	alloc, err := ports.New(srtpAnchor, lo, lo+99)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(alloc.Close) // the parked pairs, after everything else
	m := New(Config{Advertise: []netip.Addr{srtpAnchor}, Ports: alloc, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(m.Close)
	return m
}

// savpSDP is a phone's SDP with the given protocol and a=crypto lines.
func savpSDP(addr netip.AddrPort, proto string, cryptos ...sdes.Crypto) string {
	body := strings.Replace(phoneSDP(addr), "RTP/AVP", proto, 1)
	for _, c := range cryptos {
		body += "a=crypto:" + c.String(false) + "\r\n"
	}
	return body
}

func gen(t *testing.T, tag int, suite string) sdes.Crypto {
	t.Helper()
	s, ok := sdes.SuiteByName(suite)
	if !ok {
		t.Fatal(suite)
	}
	c, err := sdes.Generate(tag, s, sdes.Params{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cryptosOf reads the a=crypto lines of an SDP's first m= section.
func cryptosOf(t *testing.T, body string) []sdes.Crypto {
	t.Helper()
	cs, err := sdes.ParseAll(mediaOf(t, body).Crypto)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func suitesOf(cs []sdes.Crypto) string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%d:%s", c.Tag, c.Suite.Name))
	}
	return strings.Join(out, " ")
}

func ctx(t *testing.T, c sdes.Crypto) *srtp.Context {
	t.Helper()
	x, err := c.Context()
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// end is one phone of a test call: its socket, its keys (nil: plain).
type end struct {
	p          *udpPhone
	send, recv *srtp.Context
	to         netip.AddrPort // the anchor's port it sends to
}

func (e *end) packet(t *testing.T, seq uint16) (plain, wire []byte) {
	t.Helper()
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 0xabc0 + uint32(e.to.Port())},
		Payload: bytes.Repeat([]byte("cleartext opus "), 4)}
	plain, _ = pkt.Marshal()
	if e.send == nil {
		return plain, plain
	}
	wire, err := e.send.EncryptRTP(nil, plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	return plain, wire
}

// relays sends n packets from e to o and checks o gets them as it must
// (SRTP under its leg's key, or plain), never with the payload in clear
// on an SRTP leg.
func relays(t *testing.T, name string, from, to *end, n int) {
	t.Helper()
	relaysFrom(t, name, from, to, 1, n)
}

// relaysFrom is relays of the sequence numbers first..last.
func relaysFrom(t *testing.T, name string, from, to *end, first, last int) {
	t.Helper()
	buf := make([]byte, 1500)
	for seq := uint16(first); seq <= uint16(last); seq++ {
		plain, wire := from.packet(t, seq)
		if _, err := from.p.conn.WriteToUDPAddrPort(wire, from.to); err != nil {
			t.Fatal(err)
		}
		_ = to.p.conn.SetReadDeadline(time.Now().Add(time.Second))
		k, _, err := to.p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("%s: packet %d not relayed: %v", name, seq, err)
		}
		got := buf[:k]
		if to.recv == nil {
			if !bytes.Equal(got, plain) {
				t.Fatalf("%s: packet %d: plain leg got %x, want %x", name, seq, got, plain)
			}
			continue
		}
		if bytes.Contains(got, plain[12:]) {
			t.Fatalf("%s: packet %d: payload in clear on an SRTP leg", name, seq)
		}
		dec, err := to.recv.DecryptRTP(nil, got, nil)
		if err != nil || !bytes.Equal(dec, plain) {
			t.Fatalf("%s: packet %d does not decrypt with the leg's key: %v", name, seq, err)
		}
	}
}

func TestSDESBridging(t *testing.T) {
	tests := []struct {
		name          string
		offerProto    string   // A's
		offerCrypto   []string // A's suites, tags 1..
		transport     string   // the offer's "transport protocol"
		flags         []any
		wantToB       string // B is offered: protocol and suites
		answerTag     int    // B's pick among them (0: B answers plain)
		wantToA       string // A is answered
		answerToAFlag []any
	}{
		{name: "SRTP both legs, own keys each", offerProto: "RTP/SAVP", offerCrypto: []string{"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"},
			wantToB:   "RTP/SAVP 1:AES_CM_128_HMAC_SHA1_80 2:AES_CM_128_HMAC_SHA1_32 3:AEAD_AES_256_GCM 4:AEAD_AES_128_GCM 5:AES_256_CM_HMAC_SHA1_80 6:AES_256_CM_HMAC_SHA1_32",
			answerTag: 2, wantToA: "RTP/SAVP 2:AES_CM_128_HMAC_SHA1_32"},
		{name: "SRTP to a suite the offerer lacks", offerProto: "RTP/SAVPF", offerCrypto: []string{"AES_CM_128_HMAC_SHA1_80"},
			wantToB:   "RTP/SAVPF 1:AES_CM_128_HMAC_SHA1_80 2:AEAD_AES_256_GCM 3:AEAD_AES_128_GCM 4:AES_256_CM_HMAC_SHA1_80 5:AES_256_CM_HMAC_SHA1_32 6:AES_CM_128_HMAC_SHA1_32",
			answerTag: 3, wantToA: "RTP/SAVPF 1:AES_CM_128_HMAC_SHA1_80"},
		{name: "SRTP phone, plain carrier", offerProto: "RTP/SAVP", offerCrypto: []string{"AES_CM_128_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_80"}, transport: "RTP/AVP",
			wantToB: "RTP/AVP", wantToA: "RTP/SAVP 1:AES_CM_128_HMAC_SHA1_32"},
		{name: "plain carrier, SRTP phone", offerProto: "RTP/AVP", transport: "RTP/SAVP", flags: []any{"SDES-only-AES_CM_128_HMAC_SHA1_80", "SDES-only-AEAD_AES_128_GCM"},
			wantToB: "RTP/SAVP 1:AEAD_AES_128_GCM 2:AES_CM_128_HMAC_SHA1_80", answerTag: 1, wantToA: "RTP/AVP"},
		{name: "no- and nonew", offerProto: "RTP/SAVP", offerCrypto: []string{"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"}, flags: []any{"SDES-no-AES_CM_128_HMAC_SHA1_80", "SDES-nonew"},
			wantToB: "RTP/SAVP 2:AES_CM_128_HMAC_SHA1_32", answerTag: 2, wantToA: "RTP/SAVP 2:AES_CM_128_HMAC_SHA1_32"},
		{name: "offerer_pref", offerProto: "RTP/SAVP", offerCrypto: []string{"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"}, flags: []any{"SDES-offerer_pref:AES_CM_128_HMAC_SHA1_32", "SDES-nonew"},
			wantToB: "RTP/SAVP 1:AES_CM_128_HMAC_SHA1_80 2:AES_CM_128_HMAC_SHA1_32", answerTag: 1, wantToA: "RTP/SAVP 2:AES_CM_128_HMAC_SHA1_32"},
		{name: "plain stays plain", offerProto: "RTP/AVP", wantToB: "RTP/AVP", wantToA: "RTP/AVP"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newSRTPManager(t, 46500+100*i)
			a := &end{p: newUDPPhone(t)}
			b := &end{p: newUDPPhone(t)}
			var aCryptos []sdes.Crypto
			for j, s := range tt.offerCrypto {
				aCryptos = append(aCryptos, gen(t, j+1, s))
			}
			offer := ng.Dict{"call-id": "sdes-" + fmt.Sprint(i), "from-tag": "ta", "sdp": savpSDP(a.p.addr(), tt.offerProto, aCryptos...)}
			if tt.transport != "" {
				offer["transport protocol"] = tt.transport
			}
			if tt.flags != nil {
				offer["flags"] = tt.flags
			}
			res := do(t, m, "offer", offer)
			if res.Str("result") != "ok" {
				t.Fatalf("offer: %v", res)
			}
			toB := res.Str("sdp")
			mb := mediaOf(t, toB)
			offeredB := cryptosOf(t, toB)
			if got := strings.TrimSpace(mb.Proto + " " + suitesOf(offeredB)); got != tt.wantToB {
				t.Fatalf("B is offered\n %s\nwant\n %s\n%s", got, tt.wantToB, toB)
			}
			for _, o := range offeredB {
				for _, c := range aCryptos {
					if bytes.Equal(o.Key, c.Key) {
						t.Fatal("A's key was passed through to B")
					}
				}
			}
			b.to = netip.AddrPortFrom(srtpAnchor, uint16(mb.Port))
			var answerSDP string
			if tt.answerTag == 0 {
				answerSDP = savpSDP(b.p.addr(), "RTP/AVP")
			} else {
				var ours sdes.Crypto
				for _, o := range offeredB {
					if o.Tag == tt.answerTag {
						ours = o
					}
				}
				bKey := gen(t, ours.Tag, ours.Suite.Name)
				answerSDP = savpSDP(b.p.addr(), mb.Proto, bKey)
				b.send, b.recv = ctx(t, bKey), ctx(t, ours)
			}
			res = do(t, m, "answer", ng.Dict{"call-id": offer["call-id"], "from-tag": "ta", "to-tag": "tb", "sdp": answerSDP})
			if res.Str("result") != "ok" {
				t.Fatalf("answer: %v", res)
			}
			toA := res.Str("sdp")
			ma := mediaOf(t, toA)
			answeredA := cryptosOf(t, toA)
			if got := strings.TrimSpace(ma.Proto + " " + suitesOf(answeredA)); got != tt.wantToA {
				t.Fatalf("A is answered\n %s\nwant\n %s\n%s", got, tt.wantToA, toA)
			}
			a.to = netip.AddrPortFrom(srtpAnchor, uint16(ma.Port))
			if len(answeredA) == 1 {
				// A sends with its key of the tag the answer names.
				for _, c := range aCryptos {
					if c.Tag == answeredA[0].Tag {
						a.send = ctx(t, c)
					}
				}
				a.recv = ctx(t, answeredA[0])
			}
			relays(t, "A→B", a, b, 5)
			relays(t, "B→A", b, a, 5)

			q := do(t, m, "query", ng.Dict{"call-id": offer["call-id"]})
			for tag, e := range map[string]*end{"ta": a, "tb": b} {
				md := ng.Dict(q.Dict("tags").Dict(tag)["medias"].([]any)[0].(map[string]any))
				st := ng.Dict(md["streams"].([]any)[0].(map[string]any))
				if got, _ := st.Dict("reception").Int("received"); got != 5 {
					t.Errorf("%s: the anchor counted %d packets from it, want 5: %v", tag, got, st)
				}
				if (md.Dict("SRTP") != nil) != (e.recv != nil) {
					t.Errorf("%s: query's SRTP %v", tag, md.Dict("SRTP"))
				}
			}
		})
	}
}

func TestSDESReofferKeepsKeysAndPad(t *testing.T) {
	m := newSRTPManager(t, 47300)
	a, b := newUDPPhone(t), newUDPPhone(t)
	ac := gen(t, 1, "AEAD_AES_128_GCM")
	offer := ng.Dict{"call-id": "re", "from-tag": "ta", "sdp": savpSDP(a.addr(), "RTP/SAVP", ac), "flags": []any{"SDES-pad", "SDES-nonew"}}
	res := do(t, m, "offer", offer)
	if !strings.Contains(res.Str("sdp"), "a=crypto:1 AEAD_AES_128_GCM inline:") || !strings.Contains(res.Str("sdp"), "==\r\n") {
		t.Fatalf("SDES-pad: %s", res.Str("sdp"))
	}
	ours := cryptosOf(t, res.Str("sdp"))[0]
	bc := gen(t, 1, "AEAD_AES_128_GCM")
	res = do(t, m, "answer", ng.Dict{"call-id": "re", "from-tag": "ta", "to-tag": "tb", "sdp": savpSDP(b.addr(), "RTP/SAVP", bc)})
	toA := cryptosOf(t, res.Str("sdp"))
	// A re-INVITE from A with the same SDP, and its answer: both sides
	// keep the anchor's keys.
	offer["to-tag"] = "tb"
	res = do(t, m, "offer", offer)
	again := cryptosOf(t, res.Str("sdp"))
	if len(again) != 1 || !bytes.Equal(again[0].Key, ours.Key) {
		t.Fatalf("re-offer changed B's key: %v", suitesOf(again))
	}
	res = do(t, m, "answer", ng.Dict{"call-id": "re", "from-tag": "ta", "to-tag": "tb", "sdp": savpSDP(b.addr(), "RTP/SAVP", bc)})
	if again := cryptosOf(t, res.Str("sdp")); len(again) != 1 || !bytes.Equal(again[0].Key, toA[0].Key) {
		t.Fatal("re-answer changed A's key")
	}
	// A tag the anchor did not offer is refused.
	res = do(t, m, "answer", ng.Dict{"call-id": "re", "from-tag": "ta", "to-tag": "tb", "sdp": savpSDP(b.addr(), "RTP/SAVP", gen(t, 9, "AES_CM_128_HMAC_SHA1_80"))})
	if res.Str("result") != "error" || !strings.Contains(res.Str("error-reason"), "was not offered") {
		t.Fatalf("%v", res)
	}
}
