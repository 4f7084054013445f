package main

// A browser calls a SIP phone and back through sori and sori-anchor:
// headless Chromium runs testdata/webrtc/call.html, whose JsSIP registers
// as alice over WSS; baresip registers as bob over UDP. The browser's leg
// is WebRTC (DTLS-SRTP over ICE, the anchor ICE-lite and the DTLS end),
// baresip's plain RTP/AVP; each must hear the other's tone, and the
// anchor's query must show packets, decrypted and measured, on both legs.

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/sip/calls"
)

func TestBrowserCallsAPhoneAndBack(t *testing.T) {
	if _, err := exec.LookPath("baresip"); err != nil {
		t.Fatalf("baresip is not installed (make test installs it): %v", err)
	}
	// Chromium checks from every interface's candidate; the anchor
	// answers only loopback's, so the call stays on 127.0.0.0/8.
	an := startAnchor(t, "-ice-sources", "127.0.0.0/8")
	cdr := filepath.Join(t.TempDir(), "cdr.jsonl")
	n := startDefaultNode(t, an, [2]string{`file: ""`, fmt.Sprintf("file: %q", cdr)})
	bob := startBaresip(t, n.port, "udp", "bob", "bob-secret", aliceTone, "", withOpus)
	bob.waitRegistered()

	b := startPhoneBrowser(t, n)
	page := openPhonePage(t, b, servePages(t), n, "alice", "alice-secret")

	t.Run("browser calls phone", func(t *testing.T) {
		heard := bob.record()
		page.eval(t, `call("sip:bob@sori.test"), true`, nil)
		bob.waitAnswered("sip:alice@sori.test")
		page.waitFor(t, "phone.state === 'answered' || phone.state === 'failed' || phone.state === 'ended'")
		browserPhone(t, page).mustBe(t, "answered", func(p browserState) bool { return p.State == "answered" })
		bob.checkMediaPath(an)
		browserCall(t, an, page, bob, aliceTone)
		page.eval(t, "hangUp(), true", nil)
		bob.waitEnded("sip:alice@sori.test")
		page.waitFor(t, "phone.state === 'ended'")
		waitNoCalls(t, an, n.node)
		checkTone(t, "bob (called by the browser)", heard(), browserTone)
		r := records(t, cdr, "bob", 1)[0]
		checkWebRTCRecord(t, r, r.CallerMedia, r.CalleeMedia)
	})

	t.Run("phone calls browser", func(t *testing.T) {
		heard := bob.record()
		bob.dial("sip:alice@sori.test")
		page.waitFor(t, "phone.direction === 'incoming' && (phone.state === 'answered' || phone.state === 'failed' || phone.state === 'ended')")
		browserPhone(t, page).mustBe(t, "answered", func(p browserState) bool { return p.State == "answered" })
		bob.waitAnswered("sip:alice@sori.test")
		bob.checkMediaPath(an)
		browserCall(t, an, page, bob, aliceTone)
		bob.hangUp()
		bob.waitEnded("sip:alice@sori.test")
		page.waitFor(t, "phone.state === 'ended'")
		waitNoCalls(t, an, n.node)
		checkTone(t, "bob (calling the browser)", heard(), browserTone)
		r := records(t, cdr, "alice", 1)[0]
		checkWebRTCRecord(t, r, r.CalleeMedia, r.CallerMedia)
	})
	page.checkNoErrors(t)
}

// Two browsers call each other: two tabs of headless Chromium, each a
// JsSIP phone registered over WSS (alice and bob). Both legs are WebRTC
// legs of the anchor, each with its own ICE-lite agent and DTLS-SRTP
// association, the anchor decrypting from one and encrypting for the
// other. The call is answered, each page's getStats shows RTP arriving
// and growing and each plays the other's tone, the anchor's query shows
// both legs keyed, on loopback, with consent and a call's worth of RTP;
// after the hang-up the anchor holds no call.
func TestBrowserCallsABrowser(t *testing.T) {
	an := startAnchor(t, "-ice-sources", "127.0.0.0/8")
	n := startDefaultNode(t, an)
	b := startPhoneBrowser(t, n)
	pages := servePages(t)
	alice := openPhonePage(t, b, pages, n, "alice", "alice-secret")
	bob := openPhonePage(t, b, pages, n, "bob", "bob-secret")

	alice.eval(t, `call("sip:bob@sori.test"), true`, nil)
	bob.waitFor(t, "phone.direction === 'incoming' && (phone.state === 'answered' || phone.state === 'failed' || phone.state === 'ended')")
	browserPhone(t, bob).mustBe(t, "answered (bob)", func(p browserState) bool { return p.State == "answered" })
	alice.waitFor(t, "phone.state === 'answered' || phone.state === 'failed' || phone.state === 'ended'")
	browserPhone(t, alice).mustBe(t, "answered (alice)", func(p browserState) bool { return p.State == "answered" })

	// The anchor: two WebRTC legs, each keyed by its own handshake, each
	// having received (and decrypted: reception reads the RTP headers) a
	// call's worth of RTP.
	want := int64(holdCall / (20 * time.Millisecond))
	legs := waitWebRTCLegs(t, an, want)
	paths := map[string]bool{}
	for tag, l := range legs {
		if l.protocol != "UDP/TLS/RTP/SAVPF" || l.keying != "DTLS" || l.suite == "" || !strings.HasPrefix(l.selected, "127.0.0.1:") ||
			l.consent != "fresh" || l.mos < 30 {
			t.Fatalf("leg %s %+v: want UDP/TLS/RTP/SAVPF keyed by DTLS, ICE on loopback with fresh consent, a MOS of 3.0 or more", tag, l)
		}
		paths[l.selected] = true
	}
	if len(paths) != 2 {
		t.Fatalf("both legs' ICE paths are %v: want one per browser", paths)
	}
	t.Logf("anchor legs: %+v", legs)

	// Each page: its WebRTC stack counts RTP coming in, and more of it a
	// moment later; what it plays is the other's tone.
	first := map[string]browserState{"alice": browserPhone(t, alice), "bob": browserPhone(t, bob)}
	for name, p := range map[string]*cdpPage{"alice": alice, "bob": bob} {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			st := browserPhone(t, p)
			if st.Received > first[name].Received && st.BytesIn > first[name].BytesIn && st.Received >= int(want) && st.Sent >= int(want) {
				t.Logf("%s: received %d RTP packets, %d bytes (was %d, %d), sent %d", name, st.Received, st.BytesIn, first[name].Received, first[name].BytesIn, st.Sent)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: received %d packets, %d bytes (was %d, %d), sent %d: want >= %d each way and growing",
					name, st.Received, st.BytesIn, first[name].Received, first[name].BytesIn, st.Sent, want)
			}
		}
		waitPlays(t, p, name, "the other browser's", browserTone)
	}

	alice.eval(t, "hangUp(), true", nil)
	alice.waitFor(t, "phone.state === 'ended'")
	bob.waitFor(t, "phone.state === 'ended'")
	waitNoCalls(t, an, n.node)
	alice.checkNoErrors(t)
	bob.checkNoErrors(t)
}

// startPhoneBrowser starts headless Chromium with a microphone playing
// browserTone, trusting n's self-signed WSS certificate by its key.
func startPhoneBrowser(t *testing.T, n *defaultNode) *chromium {
	t.Helper()
	wav := filepath.Join(t.TempDir(), "tone.wav")
	writeToneWAV(t, wav, browserTone, 60)
	return startChromium(t, append(chromiumWebRTCFlags(wav), "--ignore-certificate-errors-spki-list="+spkiHash(t, n.ca))...)
}

// openPhonePage opens call.html (served at pages) in a new tab of b and
// waits for its JsSIP to register as user over n's WSS.
func openPhonePage(t *testing.T, b *chromium, pages string, n *defaultNode, user, password string) *cdpPage {
	t.Helper()
	page := b.open(t, pages+"/call.html?"+url.Values{
		"ws": {fmt.Sprintf("wss://127.0.0.1:%d", n.wssPort)}, "user": {user}, "password": {password}, "domain": {"sori.test"},
	}.Encode())
	page.waitFor(t, "window.phone && (phone.registered || phone.errors.length > 0)")
	browserPhone(t, page).mustBe(t, user+" registered", func(p browserState) bool { return p.Registered })
	return page
}

// browserState is call.html's window.phone.
type browserState struct {
	Registered bool     `json:"registered"`
	State      string   `json:"state"`
	Cause      string   `json:"cause"`
	Direction  string   `json:"direction"`
	Errors     []string `json:"errors"`
	Sent       int      `json:"sent"`
	Received   int      `json:"received"`
	BytesIn    int64    `json:"bytesReceived"`
	Energy     float64  `json:"energy"`
	Log        []string `json:"log"`
	// ?video=1 pages (e2e_bundle_test.go): video RTP, frames decoded,
	// the call's transports and the other end's m= ports.
	VideoSent     int      `json:"videoSent"`
	VideoReceived int      `json:"videoReceived"`
	FramesDecoded int      `json:"framesDecoded"`
	Transports    int      `json:"transports"`
	RemotePorts   []string `json:"remotePorts"`
}

func browserPhone(t *testing.T, p *cdpPage) browserState {
	t.Helper()
	var s browserState
	if err := json.Unmarshal([]byte(evalPromise(t, p, "stats().then(JSON.stringify)")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s browserState) mustBe(t *testing.T, what string, ok func(browserState) bool) {
	t.Helper()
	if !ok(s) {
		t.Fatalf("the browser is not %s: state %q cause %q errors %q; its log:\n%s", what, s.State, s.Cause, s.Errors, strings.Join(s.Log, "\n"))
	}
}

// browserCall holds an answered call until the anchor has relayed a
// tone's worth (holdCall) of RTP on both legs, and checks what the
// browser got: RTP counted by its WebRTC stack, and the phone's tone
// (freq) in what it plays.
func browserCall(t *testing.T, an *anchorProc, page *cdpPage, phone *baresip, freq int) {
	t.Helper()
	want := int64(holdCall / (20 * time.Millisecond))
	legs := waitWebRTCLegs(t, an, want)
	browser, sip := browserAndPhone(legs)
	if browser == nil || sip == nil {
		t.Fatalf("the anchor's legs %+v: want one UDP/TLS/RTP/SAVPF (the browser's) and one the phone's", legs)
	}
	if sip.protocol != "RTP/AVP" || sip.suite != "" || sip.port != phone.rtpPort() {
		t.Fatalf("the phone's leg %+v: want plain RTP/AVP from baresip's port %d", *sip, phone.rtpPort())
	}
	if browser.keying != "DTLS" || browser.suite == "" || !strings.HasPrefix(browser.selected, "127.0.0.1:") {
		t.Fatalf("the browser's leg %+v: want DTLS-SRTP keys and ICE on loopback", *browser)
	}
	for name, l := range map[string]*webrtcLeg{"browser": browser, "phone": sip} {
		if l.expected < want || l.mos < 30 {
			t.Fatalf("the %s's leg %+v: want reception statistics of >= %d packets and a MOS of 3.0 or more", name, *l, want)
		}
	}
	t.Logf("anchor legs: browser %+v, phone %+v", *browser, *sip)

	// The browser's own count: the phone's first packets, sent before
	// DTLS keyed the browser's leg, were dropped, so it may lag.
	var st browserState
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st = browserPhone(t, page)
		if st.Received >= int(want) && st.Sent >= int(want) && st.Energy > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the browser sent %d and received %d RTP packets, audio energy %g: want >= %d each, and sound", st.Sent, st.Received, st.Energy, want)
		}
	}
	// What the browser plays is the phone's tone.
	waitPlays(t, page, "the browser", "the phone's", freq)
	var pk struct{ Hz, Db float64 }
	page.eval(t, "peak()", &pk)
	t.Logf("the browser received %d RTP packets (sent %d) and plays %.0f Hz at %.0f dB", st.Received, st.Sent, pk.Hz, pk.Db)
	if math.IsNaN(pk.Hz) {
		t.Fatal("peak() is NaN")
	}
}

// waitWebRTCLegs waits for the anchor's call to have two legs that each
// read (decrypted) want RTP packets; their packets count STUN and DTLS too.
func waitWebRTCLegs(t *testing.T, an *anchorProc, want int64) map[string]webrtcLeg {
	t.Helper()
	for deadline := time.Now().Add(holdCall + 10*time.Second); ; time.Sleep(100 * time.Millisecond) {
		legs := anchorWebRTCLegs(t, an)
		done := len(legs) == 2
		for _, l := range legs {
			done = done && l.expected >= want
		}
		if done {
			return legs
		}
		if time.Now().After(deadline) {
			t.Fatalf("the anchor's legs %+v: want two that each received %d RTP packets", legs, want)
		}
	}
}

// waitPlays waits for page (who) to play mostly freq Hz, whose tone it
// is (WebAudio's FFT, 5.9 Hz bins).
func waitPlays(t *testing.T, page *cdpPage, who, whose string, freq int) {
	t.Helper()
	cond := fmt.Sprintf("Math.abs(peak().hz - %d) < 15 && peak().db > -70", freq)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var ok bool
		page.eval(t, cond, &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var pk struct{ Hz, Db float64 }
			page.eval(t, "peak()", &pk)
			t.Fatalf("%s plays mostly %.0f Hz at %.0f dB, want %s %d Hz", who, pk.Hz, pk.Db, whose, freq)
		}
	}
}

// checkWebRTCRecord requires the call record to measure the browser's
// leg as it does the phone's: packets sent, loss, a MOS, and the DTLS-SRTP
// profile as its suite.
func checkWebRTCRecord(t *testing.T, r calls.Record, browser, phone *calls.MediaQuality) {
	t.Helper()
	want := int64(holdCall / (20 * time.Millisecond))
	if r.Disposition != calls.Answered || browser == nil || phone == nil {
		t.Fatalf("call record %+v", r)
	}
	if browser.SRTP == "" || browser.Sent < want || browser.MOS < 3 || phone.SRTP != "" || phone.Sent < want || phone.MOS < 3 {
		t.Fatalf("call record's media: browser %+v, phone %+v; want >= %d packets and a MOS each, the browser's SRTP suite", *browser, *phone, want)
	}
	t.Logf("call record: browser %+v, phone %+v", *browser, *phone)
}

// webrtcLeg is one leg in the anchor's query.
type webrtcLeg struct {
	protocol, keying, suite, selected, consent string
	port                                       int
	packets, expected, mos                     int64
}

// browserAndPhone picks the browser's leg (UDP/TLS/RTP/SAVPF) and the
// other one out of a call's legs; nil for one that is not there.
func browserAndPhone(legs map[string]webrtcLeg) (browser, phone *webrtcLeg) {
	for tag := range legs {
		l := legs[tag]
		if l.protocol == "UDP/TLS/RTP/SAVPF" {
			browser = &l
		} else {
			phone = &l
		}
	}
	return browser, phone
}

// anchorWebRTCLegs asks the anchor for its one call's legs, by tag.
func anchorWebRTCLegs(t *testing.T, an *anchorProc) map[string]webrtcLeg {
	t.Helper()
	q := anchorCall(t, an)
	out := map[string]webrtcLeg{}
	for tag, v := range q.Dict("tags") {
		medias, _ := ng.Dict(v.(map[string]any))["medias"].([]any)
		if len(medias) != 1 {
			t.Fatalf("leg %s has media %v, want audio only", tag, medias)
		}
		md := ng.Dict(medias[0].(map[string]any))
		streams, _ := md["streams"].([]any)
		if len(streams) == 0 {
			t.Fatalf("leg %s has no streams", tag)
		}
		st := ng.Dict(streams[0].(map[string]any))
		port, _ := st.Dict("endpoint").Int("port")
		packets, _ := st.Dict("stats").Int("packets")
		expected, _ := st.Dict("reception").Int("expected")
		mos, _ := st.Dict("reception").Int("MOS")
		out[tag] = webrtcLeg{protocol: md.Str("protocol"), keying: md.Dict("SRTP").Str("keying"), suite: md.Dict("SRTP").Str("suite"),
			selected: md.Dict("SRTP").Str("ICE selected"), consent: md.Dict("SRTP").Str("ICE consent"), port: int(port), packets: packets, expected: expected, mos: mos}
	}
	return out
}

// waitNoCalls waits for the hang-up to reach the anchor and sori.
func waitNoCalls(t *testing.T, an *anchorProc, n *node) {
	t.Helper()
	answered := `sori_calls_active{state="answered"}`
	for deadline := time.Now().Add(5 * time.Second); an.callCount(t) != 0 || an.legCount(t) != 0 ||
		nodeMetric(t, n, answered) != "0"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after the hang-up the anchor holds %d calls, %d port pairs; sori counts %s answered calls",
				an.callCount(t), an.legCount(t), nodeMetric(t, n, answered))
		}
	}
}

// spkiHash is Chromium's --ignore-certificate-errors-spki-list value for
// the certificate in a PEM file: the base64 SHA-256 of its public key.
func spkiHash(t *testing.T, certFile string) string {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", certFile)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
