package main

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

// A browser registered over WSS on node b is called by alice on node a:
// node a, the call's anchor, knows it for a browser from its binding
// (not from the node link the INVITE goes to b over) and offers it
// WebRTC; node b sends that offer down the WSS flow as it came, anchoring
// nothing again.
func TestNodesBrowserOnAnotherNodeGetsWebRTC(t *testing.T) {
	rs := redistest.Start(t)
	an := startAnchor(t)
	dir := t.TempDir()
	ips := []string{"127.0.0.1", "127.0.0.2"}
	ports := []int{freeSIPPort(t), freeSIPPort(t)}
	wssPort := freeSIPPort(t)
	addrs := nodeAddrs("tcp", ips, ports)
	media := fmt.Sprintf("media:\n  anchors: [%q]\n", an.ng)
	a := nodeSpec{id: "a", ip: ips[0], port: ports[0], nodes: addrs, store: rs.URL(), sections: media}.start(t)
	bs := nodeSpec{id: "b", ip: ips[1], port: ports[1], nodes: addrs, store: rs.URL(), sections: media,
		listen: []string{fmt.Sprintf(`"udp:%[1]s:%[2]d", "tcp:%[1]s:%[2]d", "wss:%[1]s:%[3]d"`, ips[1], ports[1], wssPort)}}
	// Its certificate for the browsers: sori.test, the name they check.
	phones := newTestCA(t, dir, "phones-ca")
	cert, key := sign(t, certSpec{name: "b-for-phones", ips: []string{ips[1]}, dns: []string{"sori.test"}}, phones.cert, phones.key)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	bs.tlsCert, bs.tlsKey = filepath.Join(dir, "b-phones.crt"), filepath.Join(dir, "b-phones.key")
	writePEM(t, bs.tlsCert, "CERTIFICATE", cert.Raw)
	writePEM(t, bs.tlsKey, "PRIVATE KEY", kder)
	bs.start(t)

	browser := registeredWSPhone(t, fmt.Sprintf("wss://%s:%d/", ips[1], wssPort), phones.certFile, "k3v9nodes.invalid", "nodes-ws")
	ma := newMediaSocket(t)
	alice := &ua{sipConn: dialFrom(t, "udp", "127.0.0.10", a.sipAddr()), user: "alice", password: "alice-secret"}
	alice.sdp = ma.sdp(1001)
	alice.authenticated("INVITE", "sip:bob@sori.test")

	var inv *sip.Request
	for inv == nil {
		if r, ok := browser.read().(*sip.Request); ok && r.Method == sip.INVITE {
			inv = r
		}
	}
	if vias := inv.GetHeaders("Via"); len(vias) != 3 || !strings.Contains(vias[1].Value(), a.sipAddr()) {
		t.Fatalf("the INVITE did not come from node a through node b: Via %v", vias)
	}
	s, err := sdp.Parse(inv.Body())
	if err != nil || len(s.Media) != 1 {
		t.Fatalf("the browser's SDP: %v\n%s", err, inv.Body())
	}
	w, err := s.WebRTC(0)
	if err != nil || s.Media[0].Proto != "UDP/TLS/RTP/SAVPF" || w.Ufrag == "" || w.Fingerprint.Value == "" ||
		!an.hasPort(netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port))) {
		t.Fatalf("the browser on node b did not get a WebRTC offer from the anchor (%v):\n%s", err, inv.Body())
	}
	for _, want := range []string{"a=fingerprint:", "a=ice-ufrag:", "a=candidate:"} {
		if !strings.Contains(string(inv.Body()), want) {
			t.Fatalf("the browser's offer has no %q:\n%s", want, inv.Body())
		}
	}

	busy := sip.NewResponseFromRequest(inv, 486, "Busy Here", nil)
	busy.To().Params.Add("tag", "bob-browser")
	busy.SetBody(nil)
	browser.send(busy.String())
	if res := alice.final(); res.StatusCode != 486 {
		t.Fatalf("INVITE: %d %s, want the browser's 486", res.StatusCode, res.Reason)
	}
}
