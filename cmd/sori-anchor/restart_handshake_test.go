package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/webrtc/webrtctest"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

// TestWebRTCHandshakeSurvivesAnAnchorKill: a sori-anchor with -redis is
// SIGKILLed while a pion peer's DTLS handshake with it is under way (the
// peer's ClientHello at the anchor, the anchor's answer never out: the
// call kept in Redis after ICE, before any keys) and started again; the
// peer's retransmitted ClientHello is answered by the restored leg, the
// handshake completes against the fingerprint of the anchor's answer,
// and SRTP flows both ways.
func TestWebRTCHandshakeSurvivesAnAnchorKill(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	bin := filepath.Join(t.TempDir(), "sori-anchor")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ngAddr := freeUDP(t)
	lo := freeRange(t, 53000, 100)
	const redisID = "webrtc-handshake"
	args := []string{"-ng", ngAddr.String(), "-rtp-ports", fmt.Sprintf("%d-%d", lo, lo+99), "-listen", "127.0.0.1", "-http", "",
		"-jitter-buffer", "off", "-media-timeout", "30s", "-redis", srv.URL(), "-redis-every", "1s", "-redis-id", redisID}
	logs := &syncBuffer{}
	anchor := startAnchorProcess(t, bin, logs, args...)
	defer func() {
		if t.Failed() {
			t.Logf("sori-anchor log:\n%s", logs.String())
		}
	}()
	client, err := ng.NewClient("127.0.0.1:0", 50*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ngDo(t, client, ngAddr, ng.Dict{"command": "ping"})
	store, err := anchorstate.NewStore(rdb, anchorstate.Options{ID: redisID, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	phone, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { phone.Close() })
	phoneSDP := fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n",
		phone.LocalAddr().(*net.UDPAddr).Port)
	fromBrowser := make(chan []byte, 256)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := phone.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			var p rtp.Packet
			if p.Unmarshal(buf[:n]) == nil {
				select {
				case fromBrowser <- bytes.Clone(p.Payload):
				default:
				}
			}
		}
	}()

	b := webrtctest.NewPeer(t)
	const id = "webrtc-handshake@127.0.0.1"
	res := ngDo(t, client, ngAddr, ng.Dict{"command": "offer", "call-id": id, "from-tag": "browser", "sdp": b.MakeOffer(t), "ICE": "remove", "transport-protocol": "RTP/AVP"})
	toPhoneLeg := anchorPort(t, res.Str("sdp"))
	res = ngDo(t, client, ngAddr, ng.Dict{"command": "answer", "call-id": id, "from-tag": "browser", "to-tag": "phone", "sdp": phoneSDP, "ICE": "force"})
	answer := res.Str("sdp")
	proxy := webrtctest.NewCutProxy(t, anchorPort(t, answer), 0)
	b.Answer(t, proxy.ViaProxy(answer))

	// The browser's ClientHello at the anchor, whose answers go nowhere;
	// the leg kept once ICE nominated its path, keys or none.
	webrtctest.WaitClosed(t, "ClientHello from the browser", proxy.BrowserDTLS(1), 15*time.Second)
	waitUntil(t, "the call kept with its ICE path, before any keys", 10*time.Second, func() bool {
		got, _, err := store.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range got {
			for _, l := range c.Legs {
				if w := l.Medias[0].WebRTC; w != nil && w.ICE.Nominated.IsValid() {
					if w.SRTP != nil {
						t.Fatal("the handshake finished with its answers dropped")
					}
					return true
				}
			}
		}
		return false
	})
	if err := anchor.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-anchor.done
	startAnchorProcess(t, bin, logs, args...)
	ngDo(t, client, ngAddr, ng.Dict{"command": "ping"})
	proxy.Open()
	// The browser's retransmitted ClientHello completes it.
	b.WaitConnected(t, 30*time.Second)
	var seq uint16 = 1
	browserSays, phoneSays := []byte("\xfcbrowser after"), []byte("\xfcphone after")
	var gotBrowser, gotPhone bool
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for ; !gotBrowser || !gotPhone; seq++ {
		select {
		case <-tick.C:
		case p := <-fromBrowser:
			gotBrowser = gotBrowser || bytes.Equal(p, browserSays)
			continue
		case p := <-b.Heard():
			gotPhone = gotPhone || bytes.Equal(p, phoneSays)
			continue
		case <-deadline:
			t.Fatalf("after 10 s the phone heard the browser %v, the browser heard the phone %v", gotBrowser, gotPhone)
		}
		if err := b.Say(seq, browserSays); err != nil {
			t.Fatal(err)
		}
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 0x50710003}, Payload: phoneSays}
		plain, _ := pkt.Marshal()
		if _, err := phone.WriteToUDPAddrPort(plain, toPhoneLeg); err != nil {
			t.Fatal(err)
		}
	}
	// Kept at once with the keys of the handshake the restored leg did.
	waitUntil(t, "the call kept with its new keys", 10*time.Second, func() bool {
		got, _, _ := store.Load(context.Background())
		for _, c := range got {
			for _, l := range c.Legs {
				if w := l.Medias[0].WebRTC; w != nil && w.SRTP != nil {
					return true
				}
			}
		}
		return false
	})
	ngDo(t, client, ngAddr, ng.Dict{"command": "delete", "call-id": id, "from-tag": "browser"})
}
