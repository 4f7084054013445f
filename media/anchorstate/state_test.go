package anchorstate

import (
	"bytes"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/icelite"
	"github.com/sori-voice/sori/media/relay"
	"github.com/sori-voice/sori/media/rtpstats"
	"github.com/sori-voice/sori/media/sdes"
)

func sample(id string) Call {
	now := time.Now().Round(0).UTC()
	yes := true
	return Call{ID: id, Created: now.Add(-time.Minute), LastSignal: now, Answered: now.Add(-50 * time.Second),
		Control: netip.MustParseAddrPort("127.0.0.1:5060"),
		Legs: []Leg{
			{Tag: "a", Label: "caller", Created: now.Add(-time.Minute), Peer: 1, Medias: []Media{{
				Index: 1, Type: "audio", Proto: "RTP/SAVP", Port: 30000, OpusPT: 111,
				Stream: relay.State{
					Expected: netip.MustParseAddrPort("192.0.2.1:4000"), Latched: netip.MustParseAddrPort("198.51.100.7:61000"),
					RTCPDest: netip.MustParseAddrPort("192.0.2.1:4001"),
					RTP:      relay.Counters{Packets: 2500, Bytes: 230000, Errors: 1}, RTCP: relay.Counters{Packets: 10, Bytes: 800},
					Last:      now,
					Reception: rtpstats.State{Started: true, SSRC: 0x42, BaseSeq: 7, MaxSeq: 2506, Received: 2490, Jitter: 91.5, Seen: []uint64{1, 2, 3}},
				},
				SDES: &SDES{Phone: []string{"1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"},
					In: "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", Out: "1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj",
					Flags: sdes.Flags{Pad: true, UnencryptedSRTCP: &yes, No: map[string]bool{"NULL_HMAC_SHA1_32": true}}},
			}}},
			{Tag: "b", Created: now.Add(-50 * time.Second), Peer: 0, Medias: []Media{{
				Index: 1, Type: "audio", Proto: "RTP/AVP", Mux: true, Port: 30002, StrictSource: true, Handover: true, OpusPT: -1,
				Stream: relay.State{Expected: netip.MustParseAddrPort("[2001:db8::9]:5000"), Mux: true},
			}}},
		}}
}

func TestEncodingKeepsEverythingARestoreNeeds(t *testing.T) {
	c := sample("call-1@host")
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("decoded\n%+v\nwant\n%+v\nfrom %s", got, c, b)
	}
	if p := got.Ports(); !reflect.DeepEqual(p, []int{30000, 30002}) {
		t.Fatalf("ports %v", p)
	}
	// Zero addresses and times are left out, not written as zero values.
	if strings.Contains(string(b), `"rtcp_seen"`) || strings.Contains(string(b), "0001-01-01") {
		t.Fatalf("zero values encoded: %s", b)
	}
}

func TestDecodeRefusesWhatARestoreCannotUse(t *testing.T) {
	for _, bad := range []string{
		`not json`,
		`{"legs":[]}`,
		`{"id":"x","legs":[{"tag":"a","peer":2,"medias":[]}]}`,
		`{"id":"x","legs":[{"tag":"a","peer":0,"medias":[]}]}`,
		`{"id":"x","legs":[{"tag":"a","peer":-2,"medias":[]}]}`,
	} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}

func TestKeysOfOneCallShareItsHashTag(t *testing.T) {
	s, err := NewStore(nil, Options{ID: "203.0.113.5:22222", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if k := s.Key("abc@host"); k != "sori:anchor:203.0.113.5:22222:{abc@host}" {
		t.Fatalf("key %s", k)
	}
	// Braces cannot end the tag early, and distinct Call-IDs never share a key.
	if k := s.Key("a}b{c"); strings.Count(k, "{") != 1 || strings.Count(k, "}") != 1 || !strings.HasSuffix(k, "{a%7Db%7Bc}") {
		t.Fatalf("key %s", k)
	}
	if s.Key("a}b") == s.Key("a%7Db") {
		t.Fatal("two Call-IDs share a key")
	}
	if _, err := NewStore(nil, Options{TTL: time.Minute}); err == nil {
		t.Fatal("a store with no anchor id")
	}
}

// A WebRTC leg keeps its ICE credentials and state, its DTLS certificate,
// key and role, what the browser's SDP said and the exported SRTP keys.
func TestEncodingKeepsAWebRTCLeg(t *testing.T) {
	c := sample("webrtc@host")
	now := time.Now().Round(0).UTC()
	c.Legs[1].Medias[0].Proto = "UDP/TLS/RTP/SAVPF"
	c.Legs[1].Medias[0].WebRTC = &WebRTC{
		Ufrag: "aB3+/xyz", Pwd: "0123456789abcdefghijklmn", Setup: "passive", Role: "server",
		Cert: "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n",
		Key:  "-----BEGIN PRIVATE KEY-----\nMIGH...\n-----END PRIVATE KEY-----\n",
		Peer: WebRTCPeer{Ufrag: "Gw3R", Pwd: "browserpasswordbrowserpass", FingerprintHash: "sha-256", Fingerprint: "AB:CD:EF", Setup: "actpass", Mux: true, Mid: "0"},
		ICE: icelite.State{RemoteUfrag: "Gw3R", Valid: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.9:50000"), netip.MustParseAddrPort("[2001:db8::9]:50001")},
			Nominated: netip.MustParseAddrPort("192.0.2.9:50000"), Consent: now},
		SRTP: &DTLSKeys{Profile: 7, LocalKey: bytes.Repeat([]byte{1}, 16), LocalSalt: bytes.Repeat([]byte{2}, 12),
			RemoteKey: bytes.Repeat([]byte{3}, 16), RemoteSalt: bytes.Repeat([]byte{4}, 12)},
	}
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("decoded\n%+v\nwant\n%+v\nfrom %s", got.Legs[1].Medias[0].WebRTC, c.Legs[1].Medias[0].WebRTC, b)
	}
	// A leg whose handshake had not finished has no keys, and a leg not
	// WebRTC no WebRTC at all.
	c.Legs[1].Medias[0].WebRTC.SRTP = nil
	if b, _ = Encode(c); strings.Contains(string(b), `"srtp"`) || strings.Count(string(b), `"webrtc"`) != 1 {
		t.Fatalf("encoded %s", b)
	}
}
