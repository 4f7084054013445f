package anchor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/srtp/v3"

	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/media/icelite"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/relay"
	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/media/webrtc"
)

// WebRTC legs. A leg whose SDP says UDP/TLS/RTP/SAVP(F), or that the ng
// "transport-protocol" key makes so, is terminated by the anchor as a
// browser's peer: an ICE-lite agent with one host candidate per anchor
// address (RFC 8445 §2.5), the DTLS-SRTP endpoint (RFC 5763, 5764) with the
// anchor's certificate, RTCP multiplexed on the RTP port (RFC 8829). The
// other leg speaks its own protocol (RTP/AVP, SDES or WebRTC too); the
// relay decrypts and re-encrypts between them as for SDES (srtp.go).
//
//   - offer from a WebRTC leg: its ufrag, fingerprint and a=setup are kept
//     for the answer, which carries the anchor's ICE and DTLS attributes
//     and a=setup:passive to an actpass offer (DTLS=active: active).
//   - offer to a WebRTC leg: the anchor's attributes with a=setup:actpass
//     (DTLS=passive or DTLS=active: that); its answer's a=setup gives the
//     anchor's DTLS role.
//   - several sections in one a=group:BUNDLE share the first one's
//     transport, its port, ICE and DTLS (bundle.go).
//
// The leg's media is taken only from addresses that passed an ICE check,
// and goes to the one the browser nominated (relay.Stream.SetICE, Latch);
// the SDP's c= and port of a WebRTC leg are ignored.
//
// Consent (RFC 7675): the browser's checks on the nominated path are its
// consent to receive. ConsentTimeout after the last one, nothing more is
// sent to the leg (relay.Stream.SetConsent) until a check comes again; a
// leg without consent that has sent nothing for MediaTimeout either is
// dead, and its call ends as a media timeout (timeout.go).

// legWebRTC is a WebRTC leg's transport; its fields but profile and
// failure are the Manager's (m.mu).
type legWebRTC struct {
	leg   *webrtc.Leg
	creds icelite.Credentials
	cert  *dtlssrtp.Certificate // the anchor's for this leg, until it ends
	fp    sdp.Fingerprint       // cert's
	setup string                // the anchor's a=setup in its latest SDP to the leg; "" none yet
	role  string                // the anchor's DTLS role once the leg's peer is set: server, client
	peer  sdp.WebRTC            // what the leg's own SDP said (offer or answer)
	pem   *[2]string            // cert and its key as PEM, once a snapshot needed them (keep.go)

	profile atomic.Uint32          // the SRTP profile once the handshake ended; 0 before
	failure atomic.Pointer[string] // why the handshake failed
	keyings atomic.Uint32          // handshakes that keyed the stream in this process (keep.go)

	log       *slog.Logger
	consentMu sync.Mutex // applyConsent runs on the relay's goroutine and the consent ticker's
	lostAt    time.Time  // when consent was found expired; zero: the leg has it (or no path yet)
	stopped   bool       // stopWebRTC ran: the stream is no longer this leg's to gate
}

// DTLS certificates. The anchor has one certificate for new WebRTC legs,
// renewed once half of its life (Config.CertLifetime) has passed, as
// rtpengine renews its own (a 30-day certificate, a new one when 15 days
// are left): a leg's certificate is then valid for at least half the
// lifetime after the leg was set up, which covers its handshake (done
// within dtlssrtp's 30 s timeout) many times over. A leg keeps the
// certificate it was set up with, and so the fingerprint of its SDP, on
// every re-offer until it ends; the media sections of one leg share one.
// An older certificate lives on only in the legs that hold it.

// now is the certificates' clock.
func (m *Manager) now() time.Time {
	if m.cfg.Clock != nil {
		return m.cfg.Clock()
	}
	return time.Now()
}

// certificate is the certificate for a new WebRTC leg: the current one,
// or a new one when the current is due for renewal.
func (m *Manager) certificate() (*dtlssrtp.Certificate, error) {
	m.certMu.Lock()
	defer m.certMu.Unlock()
	if m.cert == nil && m.cfg.Certificate != nil {
		m.cert = m.cfg.Certificate
	}
	now := m.now()
	old := m.cert
	if old != nil && now.Before(renewal(old)) {
		return old, nil
	}
	lifetime := m.cfg.CertLifetime
	if lifetime <= 0 {
		lifetime = dtlssrtp.DefaultLifetime
	}
	c, err := dtlssrtp.NewCertificateAt(now, lifetime)
	if err != nil {
		if old != nil && now.Add(certMargin).Before(old.NotAfter()) {
			// Still valid for a handshake: the next leg tries again.
			m.cfg.Log.Warn("DTLS certificate not renewed, the current one is used", "error", err, "not_after", old.NotAfter())
			return old, nil
		}
		return nil, fmt.Errorf("anchor: DTLS certificate: %w", err)
	}
	m.cert = c
	if m.cfg.CertRenewed != nil {
		m.cfg.CertRenewed(c)
	}
	if old != nil {
		m.cfg.Log.Info("DTLS certificate renewed: new WebRTC legs get it, legs set up keep theirs",
			"fingerprint", c.Fingerprint().String(), "not_after", c.NotAfter(), "previous", old.Fingerprint().String(), "previous_not_after", old.NotAfter())
	}
	return c, nil
}

// certMargin is the least validity left that lets a certificate whose
// renewal failed still serve a new leg: its handshake's timeout, twice.
const certMargin = time.Minute

// renewal is when new legs stop getting c: half way through its life.
func renewal(c *dtlssrtp.Certificate) time.Time {
	return c.Issued().Add(c.NotAfter().Sub(c.Issued()) / 2)
}

// legCertificate is the certificate for a new WebRTC media section of
// l: the one its other WebRTC sections have while it is valid for a
// handshake, else certificate's (a section added to a leg older than its
// certificate's life has a new one: its own association).
func (m *Manager) legCertificate(l *leg) (*dtlssrtp.Certificate, error) {
	if l != nil {
		for _, md := range l.medias {
			if md.rtc != nil && m.now().Add(certMargin).Before(md.rtc.cert.NotAfter()) {
				return md.rtc.cert, nil
			}
		}
	}
	return m.certificate()
}

// iceSource: a from which ICE checks are answered (Config.ICESources).
func (m *Manager) iceSource(a netip.Addr) bool {
	if len(m.cfg.ICESources) == 0 {
		return true
	}
	a = a.Unmap()
	for _, p := range m.cfg.ICESources {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// startWebRTC makes md a WebRTC leg (once): its ICE credentials and DTLS
// endpoint, the relay's hooks for STUN and DTLS, and no media until the
// handshake's keys.
func (m *Manager) startWebRTC(md *media) error {
	if md.rtc != nil {
		return nil
	}
	cert, err := m.legCertificate(md.owner)
	if err != nil {
		return err
	}
	creds, err := icelite.NewCredentials()
	if err != nil {
		return err
	}
	return m.newWebRTC(md, cert, creds, nil)
}

// newWebRTC makes md a WebRTC leg with cert and creds: a new one, or with
// kept the one a previous process had (keep.go), keyed with its keys when
// its handshake had finished.
func (m *Manager) newWebRTC(md *media, cert *dtlssrtp.Certificate, creds icelite.Credentials, kept *webrtc.State) error {
	s := md.stream
	log := m.cfg.Log.With("port", s.Port())
	rtc := &legWebRTC{creds: creds, cert: cert, fp: sdp.Fingerprint(cert.Fingerprint()), log: log}
	cfg := webrtc.Config{
		ICE: creds, Certificate: cert, Send: s.SendOther, Logger: log, ConsentTimeout: m.cfg.ConsentTimeout,
		Keys: func(k dtlssrtp.Keys, err error) {
			if err == nil {
				err = s.SetCrypto(dtlsCrypto(k))
			}
			if err != nil {
				why := err.Error()
				rtc.failure.Store(&why)
				log.Warn("WebRTC leg: DTLS-SRTP failed, its media is dropped", "error", err)
				return
			}
			rtc.profile.Store(uint32(k.Profile))
			rtc.failure.Store(nil) // a new handshake after a failed one
			rtc.keyings.Add(1)
			m.keyedNow() // kept at once (keep.go)
			log.Debug("WebRTC leg keyed", "profile", k.Profile, "unkeyed_drops", s.Unkeyed())
		},
	}
	var leg *webrtc.Leg
	var err error
	if kept != nil {
		leg, err = webrtc.Restore(m.ctx, cfg, *kept)
	} else {
		leg, err = webrtc.New(m.ctx, cfg)
	}
	if err != nil {
		return err
	}
	// Keys pending before anything else: from now on what is relayed to
	// the leg is held back (dropped and counted, as rtpengine does) until
	// the handshake's keys, never sent in clear (relay.Stream.Unkeyed).
	// A leg that was SDES keeps none of its keys: only DTLS's key it. A
	// restored leg whose handshake had finished has its keys at once.
	crypto := &relay.Crypto{}
	if kept != nil && kept.Keys != nil {
		crypto = dtlsCrypto(*kept.Keys)
		rtc.profile.Store(uint32(kept.Keys.Profile))
	}
	if err := s.SetCrypto(crypto); err != nil {
		_ = leg.Close()
		return err
	}
	rtc.leg = leg
	md.rtc, md.sdes = rtc, nil
	md.mux = true
	s.SetMux(true)
	s.SetICE(leg)
	s.SetOther(func(b []byte, from netip.AddrPort) {
		if !m.iceSource(from.Addr()) {
			return // not a candidate this anchor pairs with: no answer at all
		}
		if err := leg.Handle(b, from); err != nil {
			log.Debug("WebRTC leg: datagram refused", "from", from, "error", err)
		}
		if sel, ok := leg.Selected(); ok {
			s.Latch(sel)
		}
		rtc.applyConsent(s, time.Now()) // a check gives consent back at once
	})
	return nil
}

// dtlsCrypto is a stream's SRTP keyed by DTLS-SRTP's k.
func dtlsCrypto(k dtlssrtp.Keys) *relay.Crypto {
	p := srtp.ProtectionProfile(k.Profile)
	return &relay.Crypto{
		In:  &relay.Keys{Profile: p, Key: k.RemoteKey, Salt: k.RemoteSalt, ID: "dtls"},
		Out: &relay.Keys{Profile: p, Key: k.LocalKey, Salt: k.LocalSalt, ID: "dtls"},
	}
}

// applyConsent stops or resumes what s sends the browser as its consent
// says at now.
func (rtc *legWebRTC) applyConsent(s *relay.Stream, now time.Time) {
	c := rtc.leg.Consent(now)
	if !c.Path.IsValid() {
		return // no path yet: nothing is sent anyway
	}
	rtc.consentMu.Lock()
	defer rtc.consentMu.Unlock()
	if lost := !rtc.lostAt.IsZero(); rtc.stopped || lost != c.Fresh {
		return
	}
	if c.Fresh {
		rtc.lostAt = time.Time{}
		rtc.log.Info("WebRTC leg: ICE consent given again, media resumes", "path", c.Path)
	} else {
		rtc.lostAt = now
		rtc.log.Info("WebRTC leg: ICE consent expired, no more media sent to it", "path", c.Path, "last_check", c.Last)
	}
	s.SetConsent(c.Fresh)
}

// consentLost is when the leg lost its consent; zero: it has it.
func (rtc *legWebRTC) consentLost() time.Time {
	rtc.consentMu.Lock()
	defer rtc.consentMu.Unlock()
	return rtc.lostAt
}

// RunConsent expires the WebRTC legs' consent (RFC 7675) until ctx ends:
// a check renews it as it arrives, but its absence shows only in time.
func (m *Manager) RunConsent(ctx context.Context) {
	timeout := m.cfg.ConsentTimeout
	if timeout <= 0 {
		timeout = icelite.ConsentTimeout
	}
	every(ctx, min(time.Second, timeout/4), m.consent)
}

func (m *Manager) consent(now time.Time) {
	type target struct {
		rtc *legWebRTC
		s   *relay.Stream
	}
	var legs []target
	m.mu.Lock()
	for _, c := range m.calls {
		for _, l := range c.legs {
			for _, md := range l.medias {
				if md.rtc != nil {
					legs = append(legs, target{md.rtc, md.stream})
				}
			}
		}
	}
	m.mu.Unlock()
	for _, t := range legs {
		t.rtc.applyConsent(t.s, now)
	}
}

// stopWebRTC makes md an ordinary leg again (its SDP stopped saying
// UDP/TLS), or readies it for release.
func (m *Manager) stopWebRTC(md *media) {
	if md.rtc == nil {
		return
	}
	md.stream.SetOther(nil)
	md.stream.SetICE(nil)
	md.rtc.consentMu.Lock()
	md.rtc.stopped = true      // the ticker may still hold md.rtc
	md.stream.SetConsent(true) // consent is ICE's: a plain leg needs none
	md.rtc.consentMu.Unlock()
	if err := md.rtc.leg.Close(); err != nil {
		m.cfg.Log.Debug("WebRTC leg: DTLS close", "port", md.stream.Port(), "error", err)
	}
	md.rtc = nil
	_ = md.stream.SetCrypto(nil) // the caller keys it again, or it is released
}

// abandonWebRTC ends c's WebRTC legs without a close_notify to their
// browsers (webrtc.Leg.Abandon): a process that keeps its calls stops,
// and the next one restores them.
func abandonWebRTC(c *call) {
	for _, l := range c.legs {
		for _, md := range l.medias {
			if md.rtc != nil {
				_ = md.rtc.leg.Abandon()
			}
		}
	}
}

// peerOf reads a WebRTC leg's own SDP section i.
func peerOf(sess *sdp.Session, i int) (sdp.WebRTC, error) {
	w, err := sess.WebRTC(i)
	if err != nil {
		return w, err
	}
	switch {
	case w.Fingerprint.Value == "":
		return w, errors.New("UDP/TLS media without a=fingerprint")
	case w.Ufrag == "" || w.Pwd == "":
		return w, errors.New("UDP/TLS media without a=ice-ufrag and a=ice-pwd: the anchor takes WebRTC media only over ICE")
	case w.Setup == "holdconn":
		return w, sdp.ErrHoldconn
	}
	return w, nil
}

// offeredDTLS: the offerer's leg mo speaks WebRTC (its section i).
func (m *Manager) offeredDTLS(mo *media, sess *sdp.Session, i int) error {
	if mo.bundle != nil {
		// On the group's transport (bundle.go): its ICE and DTLS
		// attributes, if it repeats them, are the transport's.
		return m.rideBundle(mo)
	}
	w, err := peerOf(sess, i)
	if err != nil {
		return err
	}
	if err := m.startWebRTC(mo); err != nil {
		return err
	}
	mo.rtc.peer = w
	if mo.rtc.role != "" {
		// A re-offer (hold, ICE restart): the association stays; a new
		// ufrag restarts ICE now, the answer confirms the rest.
		return m.setPeer(mo.rtc, mo.rtc.role)
	}
	return nil
}

// offerDTLS: the SDP going to leg mp (its section i) is a WebRTC offer.
func (m *Manager) offerDTLS(mp *media, i int, req ng.Dict) (*sdp.Transport, error) {
	if err := dtlsAllowed(req); err != nil {
		return nil, err
	}
	if mp.bundle != nil {
		// One group of all the sections, on the first one's transport
		// (bundle.go), which apply keyed first.
		if err := m.rideBundle(mp); err != nil {
			return nil, err
		}
		t := mp.bundle.rtc.transport(mp.demux.mid)
		t.Bundle = "bundle"
		return t, nil
	}
	if err := m.startWebRTC(mp); err != nil {
		return nil, err
	}
	rtc := mp.rtc
	switch d := req.Str("DTLS"); {
	case rtc.role == "server":
		rtc.setup = "passive" // a re-offer keeps the association's roles
	case rtc.role == "client":
		rtc.setup = "active"
	case d == "passive" || d == "active":
		rtc.setup = d
	default:
		rtc.setup = "actpass"
	}
	// A section is always in a group (RFC 8843), which stacks that
	// answer only bundled sections (pion) or insist on max-bundle take:
	// alone, a group of one; with others, the group of all of them on
	// this first one's transport (bundle.go).
	t := rtc.transport(strconv.Itoa(i))
	t.Bundle = strconv.Itoa(i)
	if mp.bundled() {
		t.Bundle = "bundle" // the group's transport
	}
	return t, nil
}

// answeredDTLS: the answerer's leg mo (section i) answered the anchor's
// WebRTC offer; its a=setup settles who is the DTLS client.
func (m *Manager) answeredDTLS(mo *media, sess *sdp.Session, i int) error {
	if mo.bundle != nil {
		return nil // on the transport the group's first section keyed
	}
	if mo.rtc == nil || mo.rtc.setup == "" {
		return errors.New("UDP/TLS answer to an offer that was not UDP/TLS")
	}
	w, err := peerOf(sess, i)
	if err != nil {
		return err
	}
	role := ""
	switch ours, theirs := mo.rtc.setup, w.Setup; {
	case (theirs == "active" || theirs == "" || theirs == "actpass") && ours != "active":
		// Absent means active (RFC 4145 §4); an answer may not say
		// actpass, and taking it as active still lets the handshake run.
		role = "server"
	case theirs == "passive" && ours != "passive":
		role = "client"
	default:
		return fmt.Errorf("answer's a=setup:%s does not fit the anchor's a=setup:%s", theirs, ours)
	}
	mo.rtc.peer = w
	return m.setPeer(mo.rtc, role)
}

// answerDTLS: the SDP going to leg mp, which offered WebRTC, is the
// anchor's answer.
func (m *Manager) answerDTLS(mp *media, req ng.Dict) (*sdp.Transport, error) {
	if err := dtlsAllowed(req); err != nil {
		return nil, err
	}
	if t := mp.bundle; t != nil {
		if t.rtc == nil {
			return nil, errors.New("UDP/TLS answer to an offerer that did not speak UDP/TLS")
		}
		// The browser's group, all of it on the first section's
		// transport (keyed before this section), tagged with the mid
		// extension it offered.
		tr := t.rtc.transport(mp.demux.mid)
		tr.Bundle, tr.MidExtension = t.rtc.peer.Bundle, mp.demux.ext
		return tr, nil
	}
	rtc := mp.rtc
	if rtc == nil {
		return nil, errors.New("UDP/TLS answer to an offerer that did not speak UDP/TLS")
	}
	setup, client, err := sdp.AnswerSetup(rtc.peer.Setup)
	if err != nil {
		return nil, err
	}
	if d := req.Str("DTLS"); rtc.peer.Setup == "actpass" && (d == "active" || d == "passive") {
		setup, client = d, d == "active"
	}
	role := "server"
	if client {
		role = "client"
	}
	if rtc.role != "" {
		role = rtc.role // a re-offer's answer: the association keeps its roles
		setup = map[string]string{"server": "passive", "client": "active"}[role]
	}
	rtc.setup = setup
	if err := m.setPeer(rtc, role); err != nil {
		return nil, err
	}
	// The browser's BUNDLE group stays in the answer, with the mids the
	// anchor accepts (RFC 8843 §7.3); none if it offered none.
	t := rtc.transport(rtc.peer.Mid)
	t.Bundle = rtc.peer.Bundle
	if mp.bundled() {
		t.MidExtension = mp.demux.ext
	}
	return t, nil
}

// setPeer hands the leg its peer's ufrag and fingerprint and the
// anchor's role: ICE checks must name the ufrag from now on, and the
// handshake starts (as server: when the browser's ClientHello comes).
func (m *Manager) setPeer(rtc *legWebRTC, role string) error {
	r := dtlssrtp.Server
	if role == "client" {
		r = dtlssrtp.Client
	}
	if err := rtc.leg.SetPeer(webrtc.Peer{Ufrag: rtc.peer.Ufrag, Fingerprint: dtlssrtp.Fingerprint(rtc.peer.Fingerprint), Role: r}); err != nil {
		return err
	}
	rtc.role = role
	return nil
}

// dtlsAllowed refuses what the anchor cannot do toward a WebRTC leg.
func dtlsAllowed(req ng.Dict) error {
	switch d := req.Str("DTLS"); d {
	case "", "passive", "active":
	case "off", "no", "disable":
		return errors.New("DTLS=" + d + " toward a UDP/TLS leg: WebRTC media has no other keying")
	default:
		return fmt.Errorf("DTLS=%s is not passive, active or off", d)
	}
	return nil
}

func errICEPlain(proto string) error {
	return fmt.Errorf("ICE=force toward %s: the anchor does ICE only on UDP/TLS/RTP/SAVP(F) legs", proto)
}

// transport is the anchor's ICE and DTLS for the leg's SDP, but for its
// candidates (apply knows the address and port).
func (rtc *legWebRTC) transport(mid string) *sdp.Transport {
	return &sdp.Transport{Ufrag: rtc.creds.Ufrag, Pwd: rtc.creds.Pwd, Fingerprint: rtc.fp, Setup: rtc.setup, Mid: mid}
}

// cryptoDict is a WebRTC leg's keying in query replies: rtpengine's
// "SRTP" with the DTLS profile's suite, and the ICE path.
func (rtc *legWebRTC) cryptoDict() ng.Dict {
	d := ng.Dict{"keying": "DTLS", "DTLS fingerprint": rtc.fp.Hash + " " + rtc.fp.Value, "DTLS certificate expires": rtc.cert.NotAfter().Unix()}
	if rtc.role != "" {
		d["DTLS role"] = rtc.role
	}
	if p := rtc.profile.Load(); p != 0 {
		d["suite"] = dtlssrtp.Profile(p).Suite()
	}
	if f := rtc.failure.Load(); f != nil {
		d["DTLS failure"] = *f
	}
	if sel, ok := rtc.leg.Selected(); ok {
		d["ICE selected"] = sel.String()
		d["ICE consent"] = "fresh"
		if lost := rtc.consentLost(); !lost.IsZero() {
			d["ICE consent"] = "expired"
			d["ICE consent lost"] = lost.Unix()
		}
		if last := rtc.leg.Consent(time.Now()).Last; !last.IsZero() {
			d["ICE last check"] = last.Unix()
		}
	}
	return d
}
