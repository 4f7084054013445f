package sdes

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// The SRTP the anchor speaks is pion/srtp's; these tests check it, keyed
// through a parsed a=crypto, against RFC 3711 Appendix B computed here
// with the standard library: B.2 (the AES-CM keystream) checks this
// file's reference cipher, B.3 (key derivation) its reference key
// derivation, and every packet pion encrypts must equal the reference's.

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// aesCM is AES in counter mode with the 128-bit IV (RFC 3711 §4.1.1).
func aesCM(t *testing.T, key, iv []byte, n int) []byte {
	t.Helper()
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, n)
	cipher.NewCTR(blk, iv).XORKeyStream(out, out)
	return out
}

// derive is the AES-CM key derivation (RFC 3711 §4.3.1, §4.3.3) at index 0
// with a key derivation rate of 0: x = label<<48 XOR master salt.
func derive(t *testing.T, masterKey, masterSalt []byte, label byte, n int) []byte {
	t.Helper()
	iv := make([]byte, 16)
	copy(iv, masterSalt)
	iv[7] ^= label
	return aesCM(t, masterKey, iv, n)
}

// packetIV is the SRTP/SRTCP IV: (salt<<16) XOR (SSRC<<64) XOR (index<<16).
func packetIV(salt []byte, ssrc uint32, index uint64) []byte {
	iv := make([]byte, 16)
	copy(iv, salt)
	var s [4]byte
	binary.BigEndian.PutUint32(s[:], ssrc)
	for i := range 4 {
		iv[4+i] ^= s[i]
	}
	var x [8]byte
	binary.BigEndian.PutUint64(x[:], index<<16)
	for i := range 8 {
		iv[8+i] ^= x[i]
	}
	return iv
}

func TestRFC3711B2Keystream(t *testing.T) {
	key := unhex(t, "2B7E151628AED2A6ABF7158809CF4F3C")
	iv := unhex(t, "F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")
	want := unhex(t, "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB 41E95B3BB0A2E8DD477901E4FCA894C0")
	if got := aesCM(t, key, iv, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("keystream %x, RFC 3711 B.2 says %x", got, want)
	}
}

var (
	b3Key  = "E1F97A0D3E018BE0D64FA32C06DE4139"
	b3Salt = "0EC675AD498AFEEBB6960B3AABE6"
)

func TestRFC3711B3KeyDerivation(t *testing.T) {
	mk, ms := unhex(t, b3Key), unhex(t, b3Salt)
	for _, tt := range []struct {
		label byte
		want  string
	}{
		{0, "C61E7A93744F39EE10734AFE3FF7A087"},
		{2, "30CBBC08863D8C85D49DB34A9AE1"},
		{1, "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"},
	} {
		want := unhex(t, tt.want)
		if got := derive(t, mk, ms, tt.label, len(want)); !bytes.Equal(got, want) {
			t.Errorf("label %d: %x, RFC 3711 B.3 says %x", tt.label, got, want)
		}
	}
}

// b3Crypto is the B.3 master key and salt as a phone's a=crypto line.
func b3Crypto(t *testing.T, suite string) Crypto {
	t.Helper()
	raw := append(unhex(t, b3Key), unhex(t, b3Salt)...)
	c, err := Parse("1 " + suite + " inline:" + encodeStd(raw))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSRTPAgainstRFC3711(t *testing.T) {
	for _, tt := range []struct {
		suite  string
		tagLen int
	}{{"AES_CM_128_HMAC_SHA1_80", 10}, {"AES_CM_128_HMAC_SHA1_32", 4}} {
		t.Run(tt.suite, func(t *testing.T) {
			c := b3Crypto(t, tt.suite)
			mk, ms := c.Key, c.Salt
			encKey, salt, authKey := derive(t, mk, ms, 0, 16), derive(t, mk, ms, 2, 14), derive(t, mk, ms, 1, 20)
			send, err := c.Context()
			if err != nil {
				t.Fatal(err)
			}
			recv, _ := c.Context()
			payload := []byte("opus frame: not for the wire, 20 ms of it")
			for i, seq := range []uint16{0x1234, 0x1235, 0x1237} {
				pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: 960 * uint32(i), SSRC: 0xdecafbad}, Payload: payload}
				plain, _ := pkt.Marshal()
				wire, err := send.EncryptRTP(nil, plain, nil)
				if err != nil {
					t.Fatal(err)
				}
				// The reference: header in clear, payload XOR the keystream
				// at index ROC<<16|SEQ, then the HMAC-SHA1 of header,
				// encrypted payload and ROC, truncated.
				want := append([]byte{}, plain...)
				ks := aesCM(t, encKey, packetIV(salt, pkt.SSRC, uint64(seq)), len(payload))
				for j := range payload {
					want[12+j] ^= ks[j]
				}
				mac := hmac.New(sha1.New, authKey)
				mac.Write(want)
				mac.Write([]byte{0, 0, 0, 0})
				want = append(want, mac.Sum(nil)[:tt.tagLen]...)
				if !bytes.Equal(wire, want) {
					t.Fatalf("seq %#x: pion sent\n%x\nRFC 3711 computes\n%x", seq, wire, want)
				}
				got, err := recv.DecryptRTP(nil, wire, nil)
				if err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("seq %#x: decrypted %x, %v", seq, got, err)
				}
			}
			// A flipped bit anywhere fails authentication.
			pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: 0x1240, SSRC: 0xdecafbad}, Payload: payload}
			plain, _ := pkt.Marshal()
			wire, _ := send.EncryptRTP(nil, plain, nil)
			wire[14] ^= 1
			if _, err := recv.DecryptRTP(nil, wire, nil); err == nil {
				t.Fatal("a tampered packet decrypted")
			}
		})
	}
}

func TestSRTCPAgainstRFC3711(t *testing.T) {
	c := b3Crypto(t, "AES_CM_128_HMAC_SHA1_80")
	// SRTCP's session keys: labels 3, 4, 5 (RFC 3711 §4.3.2), derived as
	// B.3 checks for SRTP's.
	encKey, authKey, salt := derive(t, c.Key, c.Salt, 3, 16), derive(t, c.Key, c.Salt, 4, 20), derive(t, c.Key, c.Salt, 5, 14)
	send, err := c.Context()
	if err != nil {
		t.Fatal(err)
	}
	recv, _ := c.Context()
	rr := &rtcp.ReceiverReport{SSRC: 0xcafebabe, Reports: []rtcp.ReceptionReport{{SSRC: 0xdecafbad, FractionLost: 3, TotalLost: 7, LastSequenceNumber: 0x1237, Jitter: 42}}}
	plain, _ := rtcp.Marshal([]rtcp.Packet{rr, rtcp.NewCNAMESourceDescription(0xcafebabe, "sori-anchor")})
	var first uint32
	for n := uint32(0); n < 3; n++ {
		wire, err := send.EncryptRTCP(nil, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The index is the sender's count (pion's first is 1, libsrtp's
		// 0; the receiver reads it from the packet): one more each time.
		if len(wire) != len(plain)+14 {
			t.Fatalf("%d bytes for %d", len(wire), len(plain))
		}
		index := binary.BigEndian.Uint32(wire[len(plain):]) &^ (1 << 31)
		if n == 0 {
			first = index
		} else if index != first+n {
			t.Fatalf("SRTCP index %d after %d", index, first)
		}
		want := append([]byte{}, plain...)
		ks := aesCM(t, encKey, packetIV(salt, rr.SSRC, uint64(index)), len(plain)-8)
		for j := 8; j < len(plain); j++ {
			want[j] ^= ks[j-8]
		}
		want = binary.BigEndian.AppendUint32(want, 1<<31|index) // E flag and SRTCP index
		mac := hmac.New(sha1.New, authKey)
		mac.Write(want)
		want = append(want, mac.Sum(nil)[:10]...)
		if !bytes.Equal(wire, want) {
			t.Fatalf("index %d: pion sent\n%x\nRFC 3711 computes\n%x", index, wire, want)
		}
		got, err := recv.DecryptRTCP(nil, wire, nil)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("index %d: decrypted %x, %v", index, got, err)
		}
	}
}

// Every suite, with and without the session parameters, round-trips
// through the contexts of its parsed a=crypto, and never sends the
// payload in clear unless UNENCRYPTED_SRTP says so.
func TestEverySuiteRoundTrips(t *testing.T) {
	payload := bytes.Repeat([]byte("cleartext "), 8)
	for _, s := range Suites {
		for _, p := range []Params{{}, {UnencryptedSRTP: true, UnencryptedSRTCP: true}, {UnauthenticatedSRTP: true}} {
			gen, err := Generate(7, s, p)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Parse(gen.String(false))
			if err != nil {
				t.Fatalf("%s: %v", gen.String(false), err)
			}
			send, err := c.Context()
			if err != nil {
				t.Fatalf("%s: %v", s.Name, err)
			}
			recv, _ := c.Context()
			pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: 9, SSRC: 1}, Payload: payload}
			plain, _ := pkt.Marshal()
			wire, err := send.EncryptRTP(nil, plain, nil)
			if err != nil {
				t.Fatalf("%s %+v: %v", s.Name, p, err)
			}
			clear := bytes.Contains(wire, payload)
			if clear != (p.UnencryptedSRTP || s.null()) {
				t.Errorf("%s %+v: payload in clear on the wire: %v", s.Name, p, clear)
			}
			got, err := recv.DecryptRTP(nil, wire, nil)
			if err != nil || !bytes.Equal(got, plain) {
				t.Errorf("%s %+v: %v", s.Name, p, err)
			}
			rr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 5}})
			sw, err := send.EncryptRTCP(nil, rr, nil)
			if err != nil {
				t.Fatal(err)
			}
			if back, err := recv.DecryptRTCP(nil, sw, nil); err != nil || !bytes.Equal(back, rr) {
				t.Errorf("%s %+v: SRTCP: %v", s.Name, p, err)
			}
		}
	}
}
