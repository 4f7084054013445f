package anchor

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/relay"
	"github.com/sori-voice/sori/media/sdp"
)

// BUNDLE (RFC 8843, RFC 8859) on WebRTC legs, as rtpengine does it. The
// sections of a WebRTC leg in one a=group:BUNDLE share one transport:
// the first section's stream, its port, ICE credentials and DTLS-SRTP
// association. Its other sections start no ICE or DTLS of their own and
// take no datagram on their own ports; in the SDP to the browser they
// carry the transport's port and attributes (RFC 8843 §7: the answer's
// bundled m= lines all have the same port; an offer gives them the same
// address too, as a subsequent offer does, which browsers take).
//
// What the browser sends on the transport is decrypted there and handed
// to its section (relay.Bundle: by the a=mid header extension, else by
// SSRC, else by payload type), whose own stream keeps its statistics and
// relays to the other leg's matching section, on its own port. The other
// leg's sections all have the transport as their peer: what the phone
// sends on any of them goes to the browser from the one port, encrypted
// with the one key.
//
//   - a browser's offer bundling several sections (a=bundle-only ones
//     too): the group's sections go to the phone as separate m= lines on
//     ports of their own; the answer to the browser keeps the group, all
//     of it on the first section's transport, with the mid extension
//     the browser offered (so that it tags its RTP).
//   - an offer to a browser with several sections: one group of all of
//     them, on the first one's transport; the browser's answer must
//     keep them bundled.

// midFor is the mid section i of the SDP to a browser gets: its own, or
// its index.
func midFor(sess *sdp.Session, i int) string {
	if mid := sess.Mid(i); mid != "" {
		return mid
	}
	return strconv.Itoa(i)
}

// planBundles decides, before apply keys the sections, which of the
// WebRTC leg's sections ride another's transport (media.bundle), and
// keeps what the browser's SDP says for demultiplexing (media.demux).
// own's SDP is sess; peer gets its rewrite.
func (m *Manager) planBundles(own, peer *leg, sess *sdp.Session, req ng.Dict, answer bool) error {
	n := len(sess.Media)
	// own speaks WebRTC: its SDP's groups (an offer, or an answer to the
	// anchor's offer).
	var ownPlan []int
	for i, md := range sess.Media {
		if !sdp.DTLSProto(md.Proto) || !md.Enabled() {
			continue
		}
		if ownPlan == nil {
			ownPlan = make([]int, n)
			for k := range ownPlan {
				ownPlan[k] = -1
			}
		}
		ownPlan[i] = i
		g := sess.BundleOf(i)
		if len(g) < 2 {
			continue
		}
		for k := 0; k < i; k++ {
			if ownPlan[k] == k && sdp.DTLSProto(sess.Media[k].Proto) && sess.Media[k].Enabled() && inGroup(g, sess.Mid(k)) {
				ownPlan[i] = k // the group's first section carries it
				break
			}
		}
	}
	if ownPlan == nil {
		for _, md := range own.medias {
			md.bundle = nil
		}
	} else {
		for i := range ownPlan {
			if i >= len(own.medias) {
				break
			}
			md := own.medias[i]
			md.demux = demuxInfo{mid: sess.Mid(i), pts: sess.PayloadTypes(i), ssrcs: sess.SSRCs(i), ext: sess.MidExtension(i)}
			var want *media
			if t := ownPlan[i]; t >= 0 && t != i {
				want = own.medias[t]
			}
			if answer && md.bundle != want && sess.Media[i].Enabled() { // a section refused (port 0) leaves any group
				if md.bundle != nil {
					return fmt.Errorf("the answer takes media section %d off the BUNDLE transport the anchor offered it on", i+1)
				}
				return fmt.Errorf("the answer bundles media section %d the anchor offered on a transport of its own", i+1)
			}
			md.bundle = want
		}
	}
	if answer {
		return nil // the answer to a browser keeps what its offer bundled
	}
	// peer is offered WebRTC: its sections are one group on the first
	// one's transport.
	first := -1
	for i, md := range sess.Media {
		if i >= len(peer.medias) {
			break
		}
		mp := peer.medias[i]
		proto := transportProtocol(req)
		switch {
		case proto != "":
		case mp.proto != "":
			proto = mp.proto
		default:
			proto = md.Proto
		}
		mp.bundle = nil
		if !sdp.DTLSProto(proto) || !md.Enabled() {
			continue
		}
		mp.demux = demuxInfo{mid: midFor(sess, i), pts: sess.PayloadTypes(i), ssrcs: nil, ext: sess.MidExtension(i)}
		if first < 0 {
			first = i
		} else {
			mp.bundle = peer.medias[first]
		}
	}
	return nil
}

func inGroup(g []string, mid string) bool {
	for _, x := range g {
		if mid != "" && x == mid {
			return true
		}
	}
	return false
}

// demuxInfo is what a bundled section is told apart by (relay.Bundle).
type demuxInfo struct {
	mid   string
	pts   []uint8
	ssrcs []uint32
	ext   int // the mid extension's id; 0: none
}

// bundled: md shares a transport with another section of its leg.
func (md *media) bundled() bool {
	if md.bundle != nil {
		return true
	}
	for _, o := range md.owner.medias {
		if o.bundle == md {
			return true
		}
	}
	return false
}

// via is the media that carries l's section i on the wire: its
// transport's when it is bundled.
func via(l *leg, i int) *media {
	if md := l.medias[i]; md.bundle != nil {
		return md.bundle
	}
	return l.medias[i]
}

// linkBundles points each of the first n sections of a and b at the
// stream the other's media goes out of (its transport when bundled), and
// gives each transport the demultiplexer of its sections.
func linkBundles(a, b *leg, n int) {
	for i := 0; i < n; i++ {
		a.medias[i].stream.SetPeer(via(b, i).stream)
		b.medias[i].stream.SetPeer(via(a, i).stream)
	}
	setDemux(a)
	setDemux(b)
}

// setDemux gives l's transports their sections' relay.Bundle (nil: a
// stream carrying its own section only).
func setDemux(l *leg) {
	for _, t := range l.medias {
		riders := 0
		for _, md := range l.medias {
			if md.bundle == t {
				riders++
			}
		}
		if t.bundle != nil || riders == 0 {
			if t.demuxSet {
				t.stream.SetBundle(nil)
				t.demuxSet = false
			}
			continue
		}
		secs := make([]relay.BundleSection, 0, riders+1)
		ext := 0
		for j, md := range l.medias {
			if md != t && md.bundle != t {
				continue
			}
			sec := relay.BundleSection{Stream: md.stream, Mid: md.demux.mid, PTs: md.demux.pts, SSRCs: md.demux.ssrcs}
			if l.peer != nil && j < len(l.peer.medias) {
				sec.From = l.peer.medias[j].stream // what it sends on the section: the browser's reports are about that
			}
			secs = append(secs, sec)
			if ext == 0 {
				ext = md.demux.ext
			}
		}
		t.stream.SetBundle(relay.NewBundle(ext, secs))
		t.demuxSet = true
	}
}

// rideBundle makes md a section carried by another's transport: no ICE
// or DTLS of its own, and nothing taken on its own port (keyed with
// nothing, it drops what comes there).
func (m *Manager) rideBundle(md *media) error {
	if md.bundle == nil || md.bundle.rtc == nil {
		return errors.New("a bundled section whose transport is not WebRTC")
	}
	m.stopWebRTC(md)
	md.sdes = nil
	md.mux = true
	md.stream.SetMux(true)
	return md.stream.SetCrypto(&relay.Crypto{})
}

// keptBundle is md's part in a BUNDLE group as kept (keep.go); nil: none.
func (md *media) keptBundle() *anchorstate.Bundle {
	if md.bundle == nil && !md.demuxSet {
		return nil
	}
	kb := &anchorstate.Bundle{Mid: md.demux.mid, SSRCs: md.demux.ssrcs, Ext: md.demux.ext}
	for _, pt := range md.demux.pts {
		kb.PTs = append(kb.PTs, int(pt))
	}
	t := md
	if md.bundle != nil {
		t = md.bundle
	}
	for i, o := range md.owner.medias {
		if o == t {
			kb.Via = i
		}
	}
	return kb
}

// restoreBundle is keptBundle's reverse for md, section j of its leg.
func (md *media) restoreBundle(kb *anchorstate.Bundle, j int) {
	md.demux = demuxInfo{mid: kb.Mid, ssrcs: kb.SSRCs, ext: kb.Ext}
	for _, pt := range kb.PTs {
		md.demux.pts = append(md.demux.pts, uint8(pt))
	}
	if kb.Via != j {
		md.bundle = md.owner.medias[kb.Via]
	}
}
