package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	pion "github.com/pion/webrtc/v4"
	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
)

// TestWebRTCCallSurvivesAnAnchorKill: a pion/webrtc peer (a browser's ICE
// agent and DTLS client) calls a plain RTP phone through a sori-anchor
// running with -redis; the anchor is SIGKILLed, or stopped with SIGTERM,
// and started again: the browser's SRTP goes on both ways through the
// same port with the keys of its one handshake, its DTLS association
// never changes state, and a re-offer's answer has the same fingerprint.
func TestWebRTCCallSurvivesAnAnchorKill(t *testing.T) {
	bin, redisURL, rdb := buildAnchor(t)
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) { webrtcRestart(t, bin, redisURL, rdb, sig) })
	}
}

func webrtcRestart(t *testing.T, bin, redisURL string, rdb *redis.Client, sig syscall.Signal) {
	anchor := startRedisAnchor(t, bin, redisURL, rdb, 52000, 100, "webrtc-"+sig.String())
	client, ngAddr, logs := anchor.client, anchor.ng, anchor.logs

	// The browser, with a certificate it keeps (a tab's RTCCertificate).
	browserCert := webrtctest.NewCertificate(t)
	b := webrtctest.NewPeerWith(t, browserCert)
	offer := func() string { return b.MakeOffer(t) }

	// The phone.
	phone, phoneSDP, fromBrowser := newPlainPhone(t)

	const id = "webrtc-restart@127.0.0.1"
	res := ngDo(t, client, ngAddr, ng.Dict{"command": "offer", "call-id": id, "from-tag": "browser", "sdp": offer(), "ICE": "remove", "transport-protocol": "RTP/AVP"})
	toPhoneLeg := anchorPort(t, res.Str("sdp"))
	res = ngDo(t, client, ngAddr, ng.Dict{"command": "answer", "call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP, "ICE": "force"})
	fingerprint := sdpLine(res.Str("sdp"), "a=fingerprint:")
	if fingerprint == "" {
		t.Fatalf("no fingerprint in the answer:\n%s", res.Str("sdp"))
	}
	// The anchor's certificate for new legs, as its start logged it: the
	// one this leg got.
	if started := loggedFingerprints(logs.String()); len(started) != 1 || "a=fingerprint:"+started[0] != fingerprint {
		t.Fatalf("started with fingerprints %q, the answer has %s", started, fingerprint)
	}
	b.Answer(t, res.Str("sdp"))
	b.WaitConnected(t, 15*time.Second)
	var seq uint16 = 1
	talk := func(phase string) { // with b, the browser then
		t.Helper()
		seq = b.Talk(t, phase, phone, fromBrowser, toPhoneLeg, seq)
	}
	talk("before")
	dtlsChanged := make(chan pion.DTLSTransportState, 4)
	b.PC.GetSenders()[0].Transport().OnStateChange(func(s pion.DTLSTransportState) {
		select {
		case dtlsChanged <- s:
		default:
		}
	})
	waitUntil(t, "the call kept with its DTLS-SRTP keys", 10*time.Second, func() bool {
		got, err := anchor.keptWebRTC()
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range got {
			if w.SRTP != nil && len(w.ICE.Valid) > 0 {
				return true
			}
		}
		return false
	})

	anchor.restart(sig)
	q := ngDo(t, client, ngAddr, ng.Dict{"command": "query", "call-id": id})
	medias, _ := q.Dict("tags").Dict("browser")["medias"].([]any)
	if len(medias) != 1 || ng.Dict(medias[0].(map[string]any)).Dict("SRTP").Str("suite") == "" {
		t.Fatalf("the browser's leg after the restart: %v", q.Dict("tags").Dict("browser"))
	}
	talk("after the restart")
	ngDo(t, client, ngAddr, ng.Dict{"command": "offer", "call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": offer(), "ICE": "remove"})
	res = ngDo(t, client, ngAddr, ng.Dict{"command": "answer", "call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP, "ICE": "force"})
	if got := sdpLine(res.Str("sdp"), "a=fingerprint:"); got != fingerprint {
		t.Fatalf("the re-answer's %s, the first answer's %s", got, fingerprint)
	}
	b.Answer(t, res.Str("sdp"))
	talk("after the re-offer")
	select {
	case s := <-dtlsChanged:
		t.Fatalf("pion's DTLS transport went %s across the %s", s, sig)
	default:
	}

	// The restarted anchor offers new calls the certificate it had: its
	// start logs the same fingerprint, and a new WebRTC leg gets it.
	if started := loggedFingerprints(logs.String()); len(started) != 2 || started[1] != started[0] {
		t.Fatalf("the starts before and after the %s logged fingerprints %q", sig, started)
	}
	const id2 = "webrtc-restart-new@127.0.0.1"
	res = ngDo(t, client, ngAddr, ng.Dict{"command": "offer", "call-id": id2, "from-tag": "phone2", "sdp": phoneSDP,
		"transport-protocol": "UDP/TLS/RTP/SAVPF", "ICE": "force"})
	if got := sdpLine(res.Str("sdp"), "a=fingerprint:"); got != fingerprint {
		t.Fatalf("a new call after the %s is offered %s, the calls before it %s", sig, got, fingerprint)
	}
	ngDo(t, client, ngAddr, ng.Dict{"command": "delete", "call-id": id2, "from-tag": "phone2"})

	// The browser reconnects (a new peer connection with the tab's
	// certificate: its fingerprint, new ICE credentials): the restored leg
	// answers with the fingerprint its SDP advertised and takes a new DTLS
	// handshake with the certificate that fingerprint names.
	reconnected := webrtctest.NewPeerWith(t, browserCert)
	_ = b.PC.Close()
	b = reconnected
	ngDo(t, client, ngAddr, ng.Dict{"command": "offer", "call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": b.MakeOffer(t), "ICE": "remove"})
	res = ngDo(t, client, ngAddr, ng.Dict{"command": "answer", "call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP, "ICE": "force"})
	if got := sdpLine(res.Str("sdp"), "a=fingerprint:"); got != fingerprint {
		t.Fatalf("the answer to the reconnected browser has %s, the first answer %s", got, fingerprint)
	}
	b.Answer(t, res.Str("sdp"))
	b.WaitConnected(t, 15*time.Second) // DTLS too: the anchor's certificate matched the fingerprint
	talk("after the browser reconnected")
	ngDo(t, client, ngAddr, ng.Dict{"command": "delete", "call-id": id, "from-tag": "browser"})
}

// loggedFingerprints are the dtls_fingerprint values of each start a log
// has, in order.
func loggedFingerprints(log string) []string {
	var fps []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "sori-anchor started") {
			continue
		}
		_, v, ok := strings.Cut(l, `dtls_fingerprint="`)
		if !ok {
			continue
		}
		if v, _, ok = strings.Cut(v, `"`); ok {
			fps = append(fps, v)
		}
	}
	return fps
}

func sdpLine(body, prefix string) string {
	for _, l := range strings.Split(body, "\r\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
