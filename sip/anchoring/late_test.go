package anchoring

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/media/ng"
)

func protoSDP(proto string) string {
	return "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 " + proto + " 0\r\n"
}

// ok200 is bob's 200 (To tag tb) to req with body, from src.
func ok200(t *testing.T, req *sip.Request, body, src, transport string) *sip.Response {
	t.Helper()
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.To().Params.Add("tag", "tb")
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res.SetBody([]byte(body))
	res.SetSource(src)
	res.SetTransport(transport)
	return res
}

// The offer in a 2xx to an INVITE without SDP: rtpengine's tags for an
// offer in a reply (the 2xx's sender, its To tag, is the offerer), the
// INVITE's sender offered what its encryption says.
func TestOfferInReplySwapsTheTags(t *testing.T) {
	for _, tc := range []struct {
		name, proto, encryption string
		wantTP                  string // "": none sent
		wantICE                 string
	}{
		{"plain callee, caller as the offer", "RTP/AVP", PassEncryption, "", "remove"},
		{"SRTP callee, plain caller (media.encryption rtp)", "RTP/SAVP", PlainRTP, "RTP/AVP", "remove"},
		{"plain callee, SRTP caller", "RTP/AVP", SRTP, "RTP/SAVP", "remove"},
		{"AVPF callee, SRTP caller keeps feedback", "RTP/AVPF", SRTP, "RTP/SAVPF", "remove"},
		{"browser caller over WebSocket", "RTP/AVP", WebRTC, "UDP/TLS/RTP/SAVPF", "force"},
		{"browser callee, plain caller", "UDP/TLS/RTP/SAVPF", PassEncryption, "RTP/AVP", "remove"},
		{"browser callee, SRTP caller", "UDP/TLS/RTP/SAVPF", SRTP, "RTP/SAVP", "remove"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := invite(t, "late-1@test", "", "")
			body := protoSDP(tc.proto)
			res := ok200(t, req, body, "203.0.113.9:5070", "UDP")
			d := replyOffer(req, res, []byte(body), tc.encryption)
			want := ng.Dict{"command": "offer", "call-id": "late-1@test", "from-tag": "tb", "to-tag": "ta", "ICE": tc.wantICE, "via-branch": "z9hG4bK-1"}
			for k, v := range want {
				if got := d.Str(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if got := d.Str("transport-protocol"); got != tc.wantTP {
				t.Errorf("transport-protocol = %q, want %q", got, tc.wantTP)
			}
			if rf, _ := d["received-from"].([]any); len(rf) != 2 || rf[0] != "IP4" || rf[1] != "203.0.113.9" {
				t.Errorf("received-from = %v, want the 2xx's source", d["received-from"])
			}
		})
	}
}

// The answer in the ACK names the same offerer: from-tag the callee's
// (the ACK's To tag), to-tag the caller's.
func TestAnswerInAckNamesTheOfferer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		webrtc  bool
		src     string
		wantICE string
		wantFam string
	}{
		{"phone callee", false, "198.51.100.7:5060", "remove", "IP4"},
		{"browser callee", true, "[2001:db8::7]:5060", "force", "IP6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := "ACK sip:bob@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-2\r\nFrom: <sip:alice@sori.test>;tag=ta\r\n" +
				"To: <sip:bob@sori.test>;tag=tb\r\nCall-ID: late-2@test\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n"
			body := protoSDP("RTP/AVP")
			raw += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
			m, err := sip.ParseMessage([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			ack := m.(*sip.Request)
			ack.SetSource(tc.src)
			d := ackAnswer(ack, []byte(body), tc.webrtc)
			for k, v := range map[string]string{"command": "answer", "call-id": "late-2@test", "from-tag": "tb", "to-tag": "ta", "ICE": tc.wantICE} {
				if got := d.Str(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if sdp, _ := d["sdp"].([]byte); string(sdp) != body {
				t.Errorf("sdp = %q, want the ACK's", d["sdp"])
			}
			if rf, _ := d["received-from"].([]any); len(rf) != 2 || rf[0] != tc.wantFam {
				t.Errorf("received-from = %v, want family %s", d["received-from"], tc.wantFam)
			}
		})
	}
}

func TestEncryptionOfASidesSDP(t *testing.T) {
	for proto, want := range map[string]string{"RTP/AVP": PlainRTP, "RTP/AVPF": PlainRTP, "RTP/SAVP": SRTP, "RTP/SAVPF": SRTP,
		"UDP/TLS/RTP/SAVPF": WebRTC} {
		if got := EncryptionOf([]byte(protoSDP(proto))); got != want {
			t.Errorf("%s: %q, want %q", proto, got, want)
		}
	}
	if got := EncryptionOf([]byte("not sdp")); got != PassEncryption {
		t.Errorf("unparsable SDP: %q", got)
	}
}

// Through the pool: the 2xx's body becomes the anchor's, and the ACK's.
func TestOfferInReplyAndAnswerInAckRewriteTheBodies(t *testing.T) {
	f := startFake(t)
	p := newPool(t, f)
	req := invite(t, "late-3@test", "", "")
	res := ok200(t, req, protoSDP("RTP/AVP"), "192.0.2.10:5060", "UDP")
	on, ok, err := p.OfferInReply(t.Context(), netip.AddrPort{}, req, res, PassEncryption)
	if err != nil || !ok || on != f.srv.Addr() {
		t.Fatalf("OfferInReply: %v %v %v", on, ok, err)
	}
	if want := protoSDP("RTP/AVP"); string(res.Body()) == want {
		t.Fatalf("2xx body not rewritten")
	}
	ack := invite(t, "late-3@test", protoSDP("RTP/AVP"), "application/sdp")
	ack.Method = sip.ACK
	if ok, err := p.AnswerInAck(t.Context(), on, ack, false); err != nil || !ok {
		t.Fatalf("AnswerInAck: %v %v", ok, err)
	}
	if got := f.commands(); len(got) < 2 || got[len(got)-2] != "offer" || got[len(got)-1] != "answer" {
		t.Fatalf("anchor got %v", got)
	}
	noSDP := invite(t, "late-3@test", "", "")
	if ok, err := p.AnswerInAck(t.Context(), on, noSDP, false); ok || err != nil {
		t.Fatalf("an ACK without SDP: %v %v", ok, err)
	}
}
