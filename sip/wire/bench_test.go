package wire

import (
	"os"
	"strconv"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// benchMessages are what a softphone sends most: an INVITE with its SDP
// offer, and a REGISTER answering a digest challenge.
func benchMessages(b *testing.B) map[string][]byte {
	sdp, err := os.ReadFile("../../testdata/sdp/linphone.sdp")
	if err != nil {
		b.Fatal(err)
	}
	invite := "INVITE sip:bob@sori.test SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.23:5060;branch=z9hG4bK.Zx3sRtG2l;rport\r\n" +
		"From: \"Alice\" <sip:alice@sori.test>;tag=bH5g~cIMq\r\n" +
		"To: <sip:bob@sori.test>\r\n" +
		"CSeq: 20 INVITE\r\n" +
		"Call-ID: 4PbE1pHs1W\r\n" +
		"Max-Forwards: 70\r\n" +
		"Supported: replaces, outbound, gruu\r\n" +
		"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, PRACK, UPDATE\r\n" +
		"Content-Type: application/sdp\r\n" +
		"Contact: <sip:alice@10.0.0.23;transport=udp>;+sip.instance=\"<urn:uuid:9ac2d5a1-2e1b-4b6a-9d8c-3c1e5f2a7b44>\"\r\n" +
		"User-Agent: Linphone-Desktop/5.2.4 (belle-sip/5.3.0)\r\n" +
		"Content-Length: " + strconv.Itoa(len(sdp)) + "\r\n\r\n" + string(sdp)
	register := "REGISTER sip:sori.test SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.23:5060;branch=z9hG4bK.b7Cr2yVxN;rport\r\n" +
		"From: <sip:alice@sori.test>;tag=8wVuM~Dk1\r\n" +
		"To: <sip:alice@sori.test>\r\n" +
		"CSeq: 21 REGISTER\r\n" +
		"Call-ID: yq0e7Ft2ha\r\n" +
		"Max-Forwards: 70\r\n" +
		"Supported: replaces, outbound, gruu, path\r\n" +
		"Accept: application/sdp, text/plain, application/vnd.gsma.rcs-ft-http+xml\r\n" +
		"Contact: <sip:alice@10.0.0.23;transport=udp>;+sip.instance=\"<urn:uuid:9ac2d5a1-2e1b-4b6a-9d8c-3c1e5f2a7b44>\";reg-id=1\r\n" +
		"Expires: 600\r\n" +
		"User-Agent: Linphone-Desktop/5.2.4 (belle-sip/5.3.0)\r\n" +
		"Authorization:  Digest realm=\"sori.test\", nonce=\"1712345678.0a1b2c3d4e5f60718293a4b5c6d7e8f9\", algorithm=MD5, " +
		"opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", username=\"alice\",  uri=\"sip:sori.test\", " +
		"response=\"f2f8d8d7b1d1a2c6e0e0a6b7d5c4b3a2\", cnonce=\"kJv0Wb3k\", nc=00000001, qop=auth\r\n" +
		"Content-Length: 0\r\n\r\n"
	return map[string][]byte{"INVITE": []byte(invite), "REGISTER": []byte(register)}
}

func BenchmarkCheck(b *testing.B) {
	for _, name := range []string{"INVITE", "REGISTER"} {
		data := benchMessages(b)[name]
		if _, f := Check(data); f != nil {
			b.Fatal(f)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				Check(data)
			}
		})
	}
}

// BenchmarkSipgoParse is sipgo's parser on the same messages, for the
// comparison in the package comment.
func BenchmarkSipgoParse(b *testing.B) {
	for _, name := range []string{"INVITE", "REGISTER"} {
		data := benchMessages(b)[name]
		if _, err := sip.ParseMessage(data); err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				_, _ = sip.ParseMessage(data)
			}
		})
	}
}

func BenchmarkFrame(b *testing.B) {
	data := benchMessages(b)["INVITE"]
	b.ReportAllocs()
	for b.Loop() {
		_, _, _ = Frame(data)
	}
}
