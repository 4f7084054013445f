package main

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Two browsers call each other with audio and video, bundlePolicy
// max-bundle (as SIP.js and JsSIP apps set it): each browser's leg on the
// anchor is one BUNDLE transport for both sections (one port, one ICE
// and DTLS association), which Chromium takes; each page has one
// transport, sees one port in the anchor's SDP, and receives and decodes
// the other's video (Chromium's fake camera) and audio.
func TestBrowsersVideoCallOnOneBundledTransport(t *testing.T) {
	an := startAnchor(t, "-ice-sources", "127.0.0.0/8")
	n := startDefaultNode(t, an)
	b := startPhoneBrowser(t, n)
	pages := servePages(t)
	open := func(user, password string) *cdpPage {
		page := b.open(t, pages+"/call.html?"+url.Values{
			"ws": {fmt.Sprintf("wss://127.0.0.1:%d", n.wssPort)}, "user": {user}, "password": {password}, "domain": {"sori.test"}, "video": {"1"},
		}.Encode())
		page.waitFor(t, "window.phone && (phone.registered || phone.errors.length > 0)")
		browserPhone(t, page).mustBe(t, user+" registered", func(p browserState) bool { return p.Registered })
		return page
	}
	alice, bob := open("alice", "alice-secret"), open("bob", "bob-secret")

	alice.eval(t, `call("sip:bob@sori.test"), true`, nil)
	bob.waitFor(t, "phone.direction === 'incoming' && (phone.state === 'answered' || phone.state === 'failed' || phone.state === 'ended')")
	browserPhone(t, bob).mustBe(t, "answered (bob)", func(p browserState) bool { return p.State == "answered" })
	alice.waitFor(t, "phone.state === 'answered' || phone.state === 'failed' || phone.state === 'ended'")
	browserPhone(t, alice).mustBe(t, "answered (alice)", func(p browserState) bool { return p.State == "answered" })

	for name, p := range map[string]*cdpPage{"alice": alice, "bob": bob} {
		var st browserState
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			st = browserPhone(t, p)
			if st.VideoReceived >= 50 && st.FramesDecoded > 0 && st.Received >= 50 && st.VideoSent > 0 && st.Sent > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: audio %d received %d sent, video %d received %d sent %d frames decoded; log:\n%s",
					name, st.Received, st.Sent, st.VideoReceived, st.VideoSent, st.FramesDecoded, strings.Join(st.Log, "\n"))
			}
		}
		if st.Transports != 1 || len(st.RemotePorts) != 1 || st.RemotePorts[0] == "0" {
			t.Fatalf("%s: %d transports, the anchor's m= ports %q: want one of each", name, st.Transports, st.RemotePorts)
		}
		t.Logf("%s: audio %d packets, video %d packets and %d frames, on one transport (port %s)", name, st.Received, st.VideoReceived, st.FramesDecoded, st.RemotePorts[0])
		waitPlays(t, p, name, "the other browser's", browserTone)
	}

	alice.eval(t, "hangUp(), true", nil)
	alice.waitFor(t, "phone.state === 'ended'")
	bob.waitFor(t, "phone.state === 'ended'")
	waitNoCalls(t, an, n.node)
	alice.checkNoErrors(t)
	bob.checkNoErrors(t)
}
