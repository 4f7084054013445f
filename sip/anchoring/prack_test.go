package anchoring

import (
	"strconv"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// An offer in a reliable 18x is the same ng offer as a 2xx's (the
// callee the offerer), and the PRACK answering it the same ng answer as
// an ACK's: the same tags, whatever the message.
func TestReliableOfferAndPrackAnswerTags(t *testing.T) {
	for _, tc := range []struct {
		code   int
		method string // of the request carrying the answer
	}{
		{183, "PRACK"},
		{180, "PRACK"},
		{200, "ACK"},
	} {
		t.Run(strconv.Itoa(tc.code)+" "+tc.method, func(t *testing.T) {
			req := invite(t, "prack-1@test", "", "")
			body := protoSDP("RTP/AVP")
			res := sip.NewResponseFromRequest(req, tc.code, "", nil)
			res.To().Params.Add("tag", "tb")
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			res.SetBody([]byte(body))
			res.SetSource("203.0.113.9:5070")
			offer := replyOffer(req, res, []byte(body), PassEncryption)
			for k, v := range map[string]string{"command": "offer", "from-tag": "tb", "to-tag": "ta"} {
				if got := offer.Str(k); got != v {
					t.Errorf("offer %s = %q, want %q", k, got, v)
				}
			}
			raw := tc.method + " sip:bob@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-2\r\n" +
				"From: <sip:alice@sori.test>;tag=ta\r\nTo: <sip:bob@sori.test>;tag=tb\r\nCall-ID: prack-1@test\r\n" +
				"CSeq: 2 " + tc.method + "\r\nRAck: 1 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n" +
				"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
			m, err := sip.ParseMessage([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			answer := ackAnswer(m.(*sip.Request), []byte(body), false)
			for k, v := range map[string]string{"command": "answer", "call-id": "prack-1@test", "from-tag": "tb", "to-tag": "ta"} {
				if got := answer.Str(k); got != v {
					t.Errorf("answer %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}
