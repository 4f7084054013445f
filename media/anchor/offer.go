package anchor

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unsafe"

	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/relay"
	"github.com/sori-voice/sori/media/sdp"
)

// offer: the SDP of the from-tag's side, to be sent to the other side.
// A repeated offer (retransmission, re-INVITE, either direction) finds the
// same legs and keeps their ports; one on another via-branch is a fork's
// and gets a peer leg of its own (branch.go), and one from another
// callee to the same to-tag an early dialog of its own (dialogs.go).
func (m *Manager) offer(req ng.Dict, from netip.AddrPort) ng.Dict {
	callID, fromTag := req.Str("call-id"), req.Str("from-tag")
	if res := required(req, "call-id", "from-tag", "sdp"); res != nil {
		return res
	}
	sess, res := parseSDP(req)
	if res != nil {
		return res
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	c, existed := m.calls[callID]
	if !existed {
		c = &call{id: callID, created: now, control: from}
		m.calls[callID] = c
	}
	toTag := req.Str("to-tag")
	a := c.legOf(fromTag, toTag) // of its dialog, when early dialogs share its tag (dialogs.go)
	if a == nil {
		a = c.newLeg(fromTag, now)
	}
	var b *leg
	if toTag != "" {
		b = c.dialogPeer(a, toTag, now) // dialogs.go
	} else {
		b = c.offerPeer(a, req.Str("via-branch"), now) // branch.go
	}
	a.peer, b.peer = b, a
	if l := req.Str("label"); l != "" {
		a.label = l
	}
	out, err := m.apply(a, b, sess, req, false)
	if err != nil {
		if !existed {
			delete(m.calls, callID)
			m.release(c)
		}
		return failure(err)
	}
	c.lastSignal = now
	m.keep(c, now)
	return ng.Dict{"result": "ok", "sdp": sdpString(out)} // ng.OK, without its copy
}

var errNoPorts = errors.New("ran out of ports")

// failure is the ng error for err, in rtpengine's words where it has them.
func failure(err error) ng.Dict {
	if errors.Is(err, errNoPorts) {
		return ng.Error("Ran out of ports")
	}
	return ng.Error(err.Error())
}

// apply takes own's addresses from its SDP and rewrites that SDP to point
// the other side at peer's ports.
func (m *Manager) apply(own, peer *leg, sess *sdp.Session, req ng.Dict, answer bool) ([]byte, error) {
	opts := relay.Options{StrictSource: has(req, "flags", "strict-source"), Handover: has(req, "flags", "media-handover")}
	if m.cfg.Jitter.Mode != jitter.Off {
		jb := m.cfg.Jitter
		opts.Jitter = &jb
	}
	received := receivedFrom(req)
	useSource := has(req, "flags", "SIP-source-address") && received.IsValid()
	trustAddress := has(req, "flags", "trust-address")
	var family netip.Addr // of the SDP being rewritten
	for _, md := range sess.Media {
		if md.Addr.IsValid() {
			family = md.Addr
			break
		}
	}
	// ICE lines of the SDP's own side always go: the anchor is the ICE
	// peer of a WebRTC leg (WithTransport writes its own) and plain legs
	// have none.
	adv := m.advertise(family, req.Str("address family"))
	if a := req.Str("media-address"); a != "" {
		if ip, err := netip.ParseAddr(a); err == nil {
			adv = ip
		}
	}
	// Two sections' worth on the stack (audio, or audio and video): with
	// adv never read back from rw, escape analysis keeps them there, 6
	// allocations per call fewer (BenchmarkCallLifecycle, 2026-12-04).
	var (
		mediaBuf [2]sdp.MediaRewrite
		portsBuf [2]sdp.Ports
		trBuf    [2]sdp.Transport
	)
	rw := sdp.Rewrite{
		Addr:          adv,
		RemoveICE:     true,
		ReplaceOrigin: has(req, "replace", "origin"),
		Media:         mediaBuf[:0],
		Ports:         portsBuf[:0],
	}
	transports := trBuf[:0] // toward a WebRTC peer, by section
	dtlsIn := false
	// Every section first, then which ride another's BUNDLE transport
	// (bundle.go): that one is keyed before them.
	for i, md := range sess.Media {
		opts.OpusPT = md.OpusPT
		if _, err := m.ensure(own, i, md, opts); err != nil {
			return nil, err
		}
		if _, err := m.ensure(peer, i, md, opts); err != nil {
			return nil, err
		}
	}
	if err := m.planBundles(own, peer, sess, req, answer); err != nil {
		return nil, err
	}
	for i, md := range sess.Media {
		dtlsIn = dtlsIn || md.DTLS
		opts.OpusPT = md.OpusPT
		mo, err := m.ensure(own, i, md, opts)
		if err != nil {
			return nil, err
		}
		mp, err := m.ensure(peer, i, md, opts)
		if err != nil {
			return nil, err
		}
		mo.stream.SetPeer(mp.stream)
		mp.stream.SetPeer(mo.stream)
		mo.mux = md.Mux
		mo.stream.SetMux(md.Mux)
		var mrw sdp.MediaRewrite
		var tr *sdp.Transport
		switch {
		case !md.Enabled(): // disabled: nothing to key
		case answer:
			mrw, tr, err = m.keyAnswer(mo, mp, md, sess, i, req)
		default:
			mo.proto = md.Proto
			mrw, tr, err = m.keyOffer(mo, mp, md, sess, i, req)
		}
		if err != nil {
			return nil, err
		}
		rw.Media = append(rw.Media, mrw)
		for len(transports) <= i {
			transports = append(transports, sdp.Transport{})
		}
		wire := via(peer, i) // mp, or the transport it rides
		if tr != nil && mp.bundle == nil {
			// Candidates in the group's first section only (RFC 8843
			// §7.1.3: the others share its transport).
			tr.Candidate = netip.AddrPortFrom(adv, uint16(wire.stream.Port()))
			for _, a := range m.cfg.Advertise {
				if a != adv {
					tr.Candidates = append(tr.Candidates, netip.AddrPortFrom(a, uint16(wire.stream.Port())))
				}
			}
		}
		if tr != nil {
			transports[i] = *tr
		}
		// A WebRTC leg's media address is the one ICE validates, never
		// its SDP's (a browser's c= is a candidate it may not use).
		if md.Enabled() && mo.rtc == nil && mo.bundle == nil {
			addr := md.Addr
			// A private address in the SDP of a phone whose signalling came
			// from a public one is behind NAT: send to the public address
			// until latching learns the port (rtpengine's trust-address
			// keeps the SDP's).
			behindNAT := unroutable(addr) && received.IsValid() && !unroutable(received) && !trustAddress
			if useSource || !addr.IsValid() || behindNAT {
				addr = received
			}
			rtp := netip.AddrPortFrom(addr, uint16(md.Port))
			rtcp := netip.AddrPortFrom(addr, uint16(md.Port+1))
			switch {
			case md.Mux:
				rtcp = rtp
			case md.RTCPPort != 0:
				rtcp = netip.AddrPortFrom(addr, uint16(md.RTCPPort))
			}
			mo.stream.SetEndpoint(rtp, rtcp)
		}
		mo.stream.Start()
		mp.stream.Start()
		p := sdp.Ports{RTP: wire.stream.Port(), RTCP: wire.stream.Port() + 1}
		if md.Mux || wire.rtc != nil {
			p.RTCP = p.RTP
		}
		rw.Ports = append(rw.Ports, p)
	}
	linkBundles(own, peer, len(sess.Media))
	out := sess.Rewrite(rw)
	for _, tr := range transports {
		if tr.Ufrag != "" {
			return sdp.WithTransport(out, transports)
		}
	}
	if dtlsIn {
		out = sdp.WithoutDTLS(out)
	}
	return out, nil
}

// ensure returns the leg's media section i, allocating its ports once.
func (m *Manager) ensure(l *leg, i int, md sdp.Media, o relay.Options) (*media, error) {
	for len(l.medias) <= i {
		pair, err := m.cfg.Ports.Allocate()
		if err != nil {
			if errors.Is(err, ports.ErrExhausted) {
				return nil, errNoPorts
			}
			return nil, err
		}
		s, err := relay.NewStream(pair, o)
		if err != nil {
			m.cfg.Ports.Release(pair)
			return nil, err
		}
		var nm *media
		if !l.inlineUsed && len(l.medias) == 0 {
			nm, l.inlineUsed = &l.inline, true // allocated with the leg (newLeg)
			l.medias = l.mediasArr[:0]
		} else {
			nm = new(media)
		}
		*nm = media{owner: l, index: len(l.medias) + 1, typ: md.Type, proto: md.Proto, stream: s}
		l.medias = append(l.medias, nm)
	}
	return l.medias[i], nil
}

func required(req ng.Dict, keys ...string) ng.Dict {
	for _, k := range keys {
		if req.Str(k) == "" {
			if k == "sdp" {
				return ng.Error("No SDP body in message")
			}
			return ng.Error("No " + k + " in message")
		}
	}
	return nil
}

// parseSDP reads the request's SDP and refuses what the anchor cannot relay.
func parseSDP(req ng.Dict) (*sdp.Session, ng.Dict) {
	sess, err := sdp.ParseString(req.Str("sdp")) // not copied twice, as Parse([]byte(...)) did
	if err != nil {
		return nil, ng.Error("Failed to parse SDP: " + err.Error())
	}
	if ice := req.Str("ICE"); ice == "force-relay" {
		return nil, ng.Error("ICE=force-relay is not supported: the anchor is ICE-lite with host candidates")
	}
	if p := transportProtocol(req); p != "" && !(p == "accept" && req.Str("command") == "answer") && !relayable(p) {
		return nil, ng.Error("Transport protocol " + printable(p) + " is not supported")
	}
	for _, md := range sess.Media {
		if md.Port != 0 && !relayable(md.Proto) {
			return nil, ng.Error("Transport protocol " + printable(md.Proto) + " is not supported")
		}
	}
	return sess, nil
}

// printable is s for an error reason: quoted when it holds control
// characters (a reason is one line).
func printable(s string) string {
	if strings.ContainsFunc(s, unicode.IsControl) {
		return strconv.Quote(s)
	}
	return s
}

// relayable: RTP, with or without SRTP (SDES or DTLS) and feedback.
func relayable(proto string) bool {
	switch strings.ToUpper(proto) {
	case "RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF":
		return true
	}
	return sdp.DTLSProto(proto)
}

// sdpString is the rewritten SDP out as the reply's string, without a
// copy: out is the rewrite's own buffer, never written again (2
// allocations and ~380 B per call fewer, BenchmarkCallLifecycle
// 2026-12-04).
func sdpString(out []byte) string { return unsafe.String(unsafe.SliceData(out), len(out)) }

// has is req.Has(key, s) without the list ng.Dict.List copies out: four
// of them per offer and answer.
func has(req ng.Dict, key, s string) bool {
	switch v := req[key].(type) {
	case string:
		return v == s
	case []any:
		for _, e := range v {
			if e, ok := e.(string); ok && e == s {
				return true
			}
		}
	}
	return false
}

// receivedFrom reads "received-from": ["IP4", "192.0.2.1"].
func receivedFrom(req ng.Dict) netip.Addr {
	var ip string
	switch l := req["received-from"].(type) { // as req.List, without its copy
	case []any:
		n := 0
		for _, e := range l {
			if e, ok := e.(string); ok {
				if n == 1 {
					ip = e
				}
				n++
			}
		}
		if n != 2 {
			return netip.Addr{}
		}
	default:
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

var sharedSpace = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598 carrier-grade NAT

// unroutable: an address nobody outside its own network can reach.
func unroutable(ip netip.Addr) bool {
	return ip.IsPrivate() || ip.IsLinkLocalUnicast() || sharedSpace.Contains(ip) || ip.IsUnspecified()
}
