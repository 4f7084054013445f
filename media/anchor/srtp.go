package anchor

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/relay"
	"github.com/sori-voice/sori/media/sdes"
	"github.com/sori-voice/sori/media/sdp"
)

// SDES-SRTP (DTLS-SRTP is webrtc.go's). Each leg speaks its own transport protocol: its phone's, as
// its SDP said, or what the ng "transport protocol" key asks the anchor
// to offer it (rtpengine's translation: RTP/AVP one side, RTP/SAVP the
// other). With neither, the offer's protocol goes to the other side: an
// SRTP call stays SRTP, a plain one plain. An SRTP leg is always
// terminated by the anchor with keys of its own (never passed through),
// so it can read the RTP headers and RTCP and send its reports as SRTCP:
//
//   - offer: the offerer's a=crypto lines are its sending keys (one per
//     suite; which one it uses is known from the answer). The other side
//     is offered the anchor's own, fresh keys, one per suite (sdes.Flags).
//   - answer: the answerer's a=crypto names the tag it took, with its own
//     key; the anchor's key of that tag encrypts to it. The offerer is
//     answered with the same suite when it offered it (else its first, or
//     offerer_pref), and a fresh key of the anchor's.

// legSDES is a leg's keying.
type legSDES struct {
	phone   []sdes.Crypto // the phone's offered cryptos (an offering leg)
	offered []sdes.Crypto // the anchor's cryptos offered to the phone
	flags   sdes.Flags    // of the request that carried the phone's offer
	in, out *sdes.Crypto  // negotiated: the phone's key, the anchor's
}

func isSRTP(proto string) bool { return strings.Contains(strings.ToUpper(proto), "SAVP") }

// transportProtocol is the request's "transport protocol" (rtpengine's
// spelling; "transport-protocol" too).
func transportProtocol(req ng.Dict) string {
	if p := req.Str("transport protocol"); p != "" {
		return p
	}
	return req.Str("transport-protocol")
}

var errDTLS = errors.New("DTLS-SRTP is supported only as UDP/TLS/RTP/SAVP(F)")

func keysOf(c *sdes.Crypto) *relay.Keys {
	return &relay.Keys{Profile: c.Suite.Profile, Key: c.Key, Salt: c.Salt, Options: c.Options(), ID: c.String(false)}
}

func formatAll(cs []sdes.Crypto, pad bool) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String(pad)
	}
	return out
}

// pending marks an SRTP leg not keyed yet (nothing relayed to or from it
// in clear); a leg already keyed keeps its keys until the answer.
func pending(s *relay.Stream) error {
	if s.Encrypted() {
		return nil
	}
	return s.SetCrypto(&relay.Crypto{})
}

// keyOffer: the offerer's section md (leg mo, section i of sess) and what
// the other side (leg mp) is offered. A WebRTC leg on either side is
// keyed by DTLS (webrtc.go): the returned Transport, when not nil, is what
// the SDP to mp gets for ICE and DTLS.
func (m *Manager) keyOffer(mo, mp *media, md sdp.Media, sess *sdp.Session, i int, req ng.Dict) (sdp.MediaRewrite, *sdp.Transport, error) {
	flags := sdes.ParseFlags(req.List("SDES"), req.List("flags"))
	var phone []sdes.Crypto
	if sdp.DTLSProto(md.Proto) {
		if err := m.offeredDTLS(mo, sess, i); err != nil {
			return sdp.MediaRewrite{}, nil, err
		}
	} else if isSRTP(md.Proto) {
		m.stopWebRTC(mo)
		var err error
		if phone, err = sdes.ParseAll(md.Crypto); err != nil {
			return sdp.MediaRewrite{}, nil, err
		}
		if len(phone) == 0 {
			if md.DTLS {
				return sdp.MediaRewrite{}, nil, errDTLS
			}
			return sdp.MediaRewrite{}, nil, fmt.Errorf("%s offer with no SDES crypto suite the anchor supports", md.Proto)
		}
		ls := &legSDES{phone: phone, flags: flags}
		if mo.sdes != nil {
			ls.out = mo.sdes.out // kept if the answer picks the same suite
		}
		mo.sdes = ls
		if err := pending(mo.stream); err != nil {
			return sdp.MediaRewrite{}, nil, err
		}
	} else {
		m.stopWebRTC(mo)
		mo.sdes = nil
		if err := mo.stream.SetCrypto(nil); err != nil {
			return sdp.MediaRewrite{}, nil, err
		}
	}
	proto := transportProtocol(req)
	switch {
	case proto != "":
	case mp.proto != "":
		proto = mp.proto // a re-offer: the other side keeps what it speaks
	default:
		proto = md.Proto
	}
	mp.proto = proto
	rw := sdp.MediaRewrite{Proto: proto, SetCrypto: true}
	if sdp.DTLSProto(proto) {
		tr, err := m.offerDTLS(mp, i, req)
		return rw, tr, err
	}
	m.stopWebRTC(mp)
	if req.Str("ICE") == "force" {
		return sdp.MediaRewrite{}, nil, errICEPlain(proto)
	}
	if !isSRTP(proto) {
		mp.sdes = nil
		return rw, nil, mp.stream.SetCrypto(nil)
	}
	var offered []sdes.Crypto
	if mp.sdes != nil && mp.sdes.out != nil {
		offered = []sdes.Crypto{*mp.sdes.out} // a re-offer: the same key
	} else {
		var err error
		if offered, err = flags.Offer(phone); err != nil {
			return sdp.MediaRewrite{}, nil, err
		}
	}
	if len(offered) == 0 {
		return sdp.MediaRewrite{}, nil, fmt.Errorf("no SDES crypto suite left to offer for %s", proto)
	}
	if mp.sdes == nil {
		mp.sdes = &legSDES{}
	}
	mp.sdes.offered = offered
	rw.Crypto = formatAll(offered, flags.Pad)
	return rw, nil, pending(mp.stream)
}

// keyAnswer: the answerer's section md (leg mo, section i of sess) and
// the answer to the offerer (leg mp); the Transport as for keyOffer.
func (m *Manager) keyAnswer(mo, mp *media, md sdp.Media, sess *sdp.Session, i int, req ng.Dict) (sdp.MediaRewrite, *sdp.Transport, error) {
	flags := sdes.ParseFlags(req.List("SDES"), req.List("flags"))
	chosen := ""
	switch {
	case sdp.DTLSProto(md.Proto):
		if err := m.answeredDTLS(mo, sess, i); err != nil {
			return sdp.MediaRewrite{}, nil, err
		}
	case isSRTP(md.Proto) && mo.sdes != nil && len(mo.sdes.offered) > 0:
		m.stopWebRTC(mo)
		cs, err := sdes.ParseAll(md.Crypto)
		if err != nil {
			return sdp.MediaRewrite{}, nil, err
		}
		if len(cs) == 0 {
			return sdp.MediaRewrite{}, nil, fmt.Errorf("%s answer with no SDES crypto suite the anchor supports", md.Proto)
		}
		c := cs[0]
		var ours *sdes.Crypto
		for i, o := range mo.sdes.offered {
			if o.Tag == c.Tag && o.Suite.Name == c.Suite.Name {
				ours = &mo.sdes.offered[i]
			}
		}
		if ours == nil {
			return sdp.MediaRewrite{}, nil, fmt.Errorf("answer's a=crypto tag %d %s was not offered", c.Tag, c.Suite.Name)
		}
		mo.sdes.in, mo.sdes.out = &c, ours
		if err := mo.stream.SetCrypto(&relay.Crypto{In: keysOf(&c), Out: keysOf(ours)}); err != nil {
			return sdp.MediaRewrite{}, nil, err
		}
		chosen = c.Suite.Name
	case isSRTP(md.Proto):
		if md.DTLS {
			return sdp.MediaRewrite{}, nil, errDTLS
		}
		return sdp.MediaRewrite{}, nil, fmt.Errorf("%s answer to an offer without SDES", md.Proto)
	default:
		// A plain answer (to a plain offer, or declining SRTP).
		m.stopWebRTC(mo)
		mo.sdes = nil
		if err := mo.stream.SetCrypto(nil); err != nil {
			return sdp.MediaRewrite{}, nil, err
		}
	}
	mo.proto = md.Proto
	proto := mp.proto // rtpengine answers the offerer in the protocol it offered
	switch p := transportProtocol(req); p {
	case "":
	case "accept":
		proto = md.Proto
	default:
		proto = p
	}
	if proto == "" {
		proto = md.Proto
	}
	rw := sdp.MediaRewrite{Proto: proto, SetCrypto: true}
	if sdp.DTLSProto(proto) {
		tr, err := m.answerDTLS(mp, req)
		return rw, tr, err
	}
	m.stopWebRTC(mp)
	if req.Str("ICE") == "force" {
		return sdp.MediaRewrite{}, nil, errICEPlain(proto)
	}
	if !isSRTP(proto) || mp.sdes == nil || len(mp.sdes.phone) == 0 {
		if isSRTP(proto) {
			return sdp.MediaRewrite{}, nil, fmt.Errorf("the offerer spoke plain RTP: cannot answer it %s", proto)
		}
		mp.sdes = nil
		return rw, nil, mp.stream.SetCrypto(nil)
	}
	pickFlags := mp.sdes.flags
	if len(flags.Pref) > 0 {
		pickFlags = flags
	}
	pick, _ := pickFlags.Pick(mp.sdes.phone, chosen)
	var out sdes.Crypto
	if prev := mp.sdes.out; prev != nil && prev.Tag == pick.Tag && prev.Suite.Name == pick.Suite.Name {
		out = *prev
	} else {
		answerFlags := flags
		if answerFlags.UnencryptedSRTP == nil && answerFlags.UnencryptedSRTCP == nil && answerFlags.UnauthenticatedSRTP == nil {
			answerFlags.UnencryptedSRTP, answerFlags.UnencryptedSRTCP, answerFlags.UnauthenticatedSRTP =
				mp.sdes.flags.UnencryptedSRTP, mp.sdes.flags.UnencryptedSRTCP, mp.sdes.flags.UnauthenticatedSRTP
		}
		var err error
		if out, err = answerFlags.Answer(pick); err != nil {
			return sdp.MediaRewrite{}, nil, err
		}
	}
	mp.sdes.in, mp.sdes.out = &pick, &out
	if err := mp.stream.SetCrypto(&relay.Crypto{In: keysOf(&pick), Out: keysOf(&out)}); err != nil {
		return sdp.MediaRewrite{}, nil, err
	}
	rw.Crypto = []string{out.String(flags.Pad || mp.sdes.flags.Pad)}
	return rw, nil, nil
}

// cryptoDict is a leg's SRTP in query replies (nil: plain RTP).
func (md *media) cryptoDict() ng.Dict {
	if md.rtc != nil {
		return md.rtc.cryptoDict()
	}
	if md.sdes == nil || md.sdes.out == nil {
		return nil
	}
	return ng.Dict{"suite": md.sdes.out.Suite.Name, "tag": strconv.Itoa(md.sdes.out.Tag)}
}
