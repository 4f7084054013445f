package anchor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/media/icelite"
	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/relay"
	"github.com/sori-voice/sori/media/sdes"
	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/media/webrtc"
)

// Keeping calls across a restart (sori-anchor -redis): the Manager hands
// its Keeper a snapshot of a call after each offer and answer, when a
// stream latches a new address (within a second: RunKeep) or a WebRTC
// leg's handshake keys it (at once: keyedNow), and every KeepEvery, never from the packet path; a
// delete or a media timeout removes it. At start Restore binds the kept
// calls' ports again.
//
// A WebRTC leg is kept too (legWebRTC.snapshot, restoreWebRTC): once its
// DTLS-SRTP handshake has finished, its media needs only the keys both
// ends derived, not the association, so the snapshot has the exported SRTP
// keys and profile, the anchor's ICE credentials and the browser's ufrag,
// the ICE agent's validated and nominated addresses and last consent
// check, and the leg's certificate with its private key and DTLS role. The
// restored leg answers the browser's consent checks with the same
// credentials, relays its SRTP with the same keys (rollover counters kept
// as for SDES, in relay.State), offers the same fingerprint and a=setup
// again, and answers a new handshake the browser may start with the same
// certificate. A leg whose handshake had not finished is restored as a new
// WebRTC leg with the same credentials, certificate and peer: its
// handshake starts again (the browser retransmits its ClientHello to an
// anchor that is the server; as client the anchor sends its own to the
// selected path at once). A handshake caught half way (the browser past
// its ClientHello: it got the anchor's flight and waits for the last one)
// cannot complete with the old association's retransmissions, since the
// new process has none of its handshake state; but the restored leg is
// not dead: a new ClientHello the browser starts (it reconnects, with the
// certificate its SDP names) replaces the stuck handshake (webrtc.Leg);
// as client, the browser's re-offer with new ICE credentials has the leg
// send a new ClientHello.
// The window is short: the anchor as DTLS server answers the ClientHello
// without a cookie exchange (ICE proved the address), so the browser is
// past it one round trip before the keys, and a leg keyed is kept at once
// (keyedNow), not within a second. A Manager
// with a Keeper that closes (a SIGTERM) leaves its WebRTC legs'
// associations to the next process: no close_notify, which would end the
// browser's (webrtc.Leg.Abandon). The certificate's private key is kept
// beside the SRTP keys, as secret as they are (anchorstate.WebRTC).
//
// The anchor's own certificate for new legs is kept too (sori-anchor:
// anchorstate.Cert, written at start and at each renewal through
// Config.CertRenewed): a restarted anchor reads it back as
// Config.Certificate, so new calls get the fingerprint they would have
// had without the restart until it is due for renewal, and a restored leg
// keeps the certificate its own snapshot names, renewed or not.

// Certificate is the DTLS certificate new WebRTC legs get now: the one
// Config.Certificate gave (a restarted anchor's, read back from Redis)
// while it is not due for renewal, else a new one (Config.CertRenewed).
func (m *Manager) Certificate() (*dtlssrtp.Certificate, error) { return m.certificate() }

// Keeper keeps calls (media/anchorstate's Keeper).
type Keeper interface {
	Save(anchorstate.Call)
	// Delete removes a call; wait returns once that is written.
	Delete(callID string) (wait func(context.Context) error)
}

// keptMark is what the last snapshot of a call had.
type keptMark struct {
	at      time.Time
	latched []netip.AddrPort // RTP and RTCP, per stream in order
	keyed   int              // WebRTC legs keyed by their handshake
}

// keep saves c's snapshot (m.mu held).
func (m *Manager) keep(c *call, now time.Time) {
	if m.cfg.Keep == nil {
		return
	}
	keyed := c.keyed() // before the snapshot: a leg keyed meanwhile is saved again
	snap, err := c.snapshot()
	if err != nil {
		m.cfg.Log.Warn("call not kept", "call-id", c.id, "error", err) // the last snapshot stays
		return
	}
	c.kept = keptMark{at: now, latched: c.latched(c.kept.latched[:0]), keyed: keyed}
	m.cfg.Keep.Save(snap)
}

// forget removes c from the Keeper (m.mu held); wait for the write.
func (m *Manager) forget(c *call) func(context.Context) error {
	if m.cfg.Keep == nil {
		return func(context.Context) error { return nil }
	}
	return m.cfg.Keep.Delete(c.id)
}

// latched appends the addresses every stream of c latched.
func (c *call) latched(dst []netip.AddrPort) []netip.AddrPort {
	for _, l := range c.legs {
		for _, md := range l.medias {
			rtp, rtcp := md.stream.Latched()
			dst = append(dst, rtp, rtcp)
		}
	}
	return dst
}

// keyed counts the handshakes that keyed c's WebRTC legs: a leg kept
// before its keys would, restored, wait for a handshake its browser,
// whose association is up, never starts again; one kept with the keys of
// a handshake before its latest would decrypt nothing.
func (c *call) keyed() int {
	n := 0
	for _, l := range c.legs {
		for _, md := range l.medias {
			if md.rtc != nil {
				n += int(md.rtc.keyings.Load())
			}
		}
	}
	return n
}

// keyedNow has RunKeep save the calls whose WebRTC legs were keyed at
// once, not within its second: the browser's association is up from the
// handshake's last flight, and until the keys are kept a restart loses
// them.
func (m *Manager) keyedNow() {
	select {
	case m.keyed <- struct{}{}:
	default:
	}
}

// RunKeep saves, each second, the calls whose streams latched a new
// address or whose WebRTC legs' handshake ended, and every KeepEvery all
// of them (their statistics, and their keys' TTL), until ctx ends.
func (m *Manager) RunKeep(ctx context.Context) {
	if m.cfg.Keep == nil {
		return
	}
	period := m.cfg.KeepEvery
	if period <= 0 {
		period = 5 * time.Second
	}
	t := time.NewTicker(min(time.Second, period))
	defer t.Stop()
	var all time.Time // the last write of every call
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.keyed:
			m.keepChanged(time.Now())
		case now := <-t.C:
			if now.Sub(all) >= period {
				m.keepAll(now)
				all = now
			} else {
				m.keepChanged(now)
			}
		}
	}
}

// keepChanged saves the calls whose streams latched a new address or
// whose WebRTC legs got their keys.
func (m *Manager) keepChanged(now time.Time) {
	m.eachHeld(func(c *call) {
		m.scratch = c.latched(m.scratch[:0])
		if !slices.Equal(m.scratch, c.kept.latched) || c.keyed() != c.kept.keyed {
			m.keep(c, now)
		}
	})
}

// keepAll saves every call.
func (m *Manager) keepAll(now time.Time) {
	m.eachHeld(func(c *call) { m.keep(c, now) })
}

// eachHeld runs f on every call with m.mu held for that call only, so
// that ng commands wait for one snapshot at most, never for all; a call
// deleted meanwhile is skipped (a save after its delete would bring it
// back into Redis).
func (m *Manager) eachHeld(f func(c *call)) {
	m.mu.Lock()
	calls := make([]*call, 0, len(m.calls))
	for _, c := range m.calls {
		calls = append(calls, c)
	}
	m.mu.Unlock()
	for _, c := range calls {
		m.mu.Lock()
		if m.calls[c.id] == c {
			f(c)
		}
		m.mu.Unlock()
	}
}

// snapshot is c as kept.
func (c *call) snapshot() (anchorstate.Call, error) {
	s := anchorstate.Call{ID: c.id, Created: c.created, LastSignal: c.lastSignal, Answered: c.answered, Control: c.control}
	for _, l := range c.legs {
		kl := anchorstate.Leg{Tag: l.tag, Label: l.label, Created: l.created, Peer: -1, Branch: l.branch}
		for i, o := range c.legs {
			if o == l.peer {
				kl.Peer = i
			}
			if o == l.offerer {
				kl.Offerer = i + 1
			}
		}
		for _, md := range l.medias {
			o := md.stream.Options()
			km := anchorstate.Media{Index: md.index, Type: md.typ, Proto: md.proto, Mux: md.mux, Port: md.stream.Port(),
				StrictSource: o.StrictSource, Handover: o.Handover, OpusPT: o.OpusPT, Stream: md.stream.State()}
			if sd := md.sdes; sd != nil {
				ks := &anchorstate.SDES{Phone: formatAll(sd.phone, false), Offered: formatAll(sd.offered, false), Flags: sd.flags}
				if sd.in != nil {
					ks.In = sd.in.String(false)
				}
				if sd.out != nil {
					ks.Out = sd.out.String(false)
				}
				km.SDES = ks
			}
			km.Bundle = md.keptBundle()
			if md.rtc != nil {
				kw, err := md.rtc.snapshot()
				if err != nil {
					return anchorstate.Call{}, err
				}
				km.WebRTC = kw
			}
			kl.Medias = append(kl.Medias, km)
		}
		s.Legs = append(s.Legs, kl)
	}
	return s, nil
}

// snapshot is a WebRTC leg as kept (m.mu held).
func (rtc *legWebRTC) snapshot() (*anchorstate.WebRTC, error) {
	if rtc.pem == nil {
		cert, key, err := rtc.cert.PEM()
		if err != nil {
			return nil, err
		}
		rtc.pem = &[2]string{string(cert), string(key)}
	}
	st := rtc.leg.State()
	p := rtc.peer
	k := &anchorstate.WebRTC{Ufrag: rtc.creds.Ufrag, Pwd: rtc.creds.Pwd, Cert: rtc.pem[0], Key: rtc.pem[1], Setup: rtc.setup, Role: rtc.role,
		Peer: anchorstate.WebRTCPeer{Ufrag: p.Ufrag, Pwd: p.Pwd, FingerprintHash: p.Fingerprint.Hash, Fingerprint: p.Fingerprint.Value,
			Setup: p.Setup, Lite: p.Lite, Mux: p.Mux, Mid: p.Mid, Bundle: p.Bundle},
		ICE: st.ICE}
	if ks := st.Keys; ks != nil && rtc.profile.Load() != 0 { // finished, and the stream keyed with them
		k.SRTP = &anchorstate.DTLSKeys{Profile: uint16(ks.Profile), LocalKey: ks.LocalKey, LocalSalt: ks.LocalSalt, RemoteKey: ks.RemoteKey, RemoteSalt: ks.RemoteSalt}
	}
	return k, nil
}

// restoreWebRTC makes md the WebRTC leg k kept, on its stream (before
// the stream's Restore: its rollover counters need the keys).
func (m *Manager) restoreWebRTC(md *media, k *anchorstate.WebRTC) error {
	cert, err := dtlssrtp.ParseCertificatePEM([]byte(k.Cert), []byte(k.Key))
	if err != nil {
		return err
	}
	peer := sdp.WebRTC{Ufrag: k.Peer.Ufrag, Pwd: k.Peer.Pwd, Fingerprint: sdp.Fingerprint{Hash: k.Peer.FingerprintHash, Value: k.Peer.Fingerprint},
		Setup: k.Peer.Setup, Lite: k.Peer.Lite, Mux: k.Peer.Mux, Mid: k.Peer.Mid, Bundle: k.Peer.Bundle}
	st := webrtc.State{ICE: k.ICE}
	switch k.Role {
	case "":
	case "server", "client":
		r := dtlssrtp.Server
		if k.Role == "client" {
			r = dtlssrtp.Client
		}
		// The ufrag the agent checks against: the browser's latest.
		st.Peer = &webrtc.Peer{Ufrag: k.ICE.RemoteUfrag, Fingerprint: dtlssrtp.Fingerprint(peer.Fingerprint), Role: r}
	default:
		return fmt.Errorf("WebRTC leg with DTLS role %q", k.Role)
	}
	if ks := k.SRTP; ks != nil {
		p := dtlssrtp.Profile(ks.Profile)
		if len(ks.LocalKey) != p.KeyLen() || len(ks.RemoteKey) != p.KeyLen() || len(ks.LocalSalt) != p.SaltLen() || len(ks.RemoteSalt) != p.SaltLen() {
			return fmt.Errorf("WebRTC leg: DTLS-SRTP keys do not fit %s", p)
		}
		if st.Peer == nil {
			return errors.New("WebRTC leg keyed without a DTLS role")
		}
		st.Keys = &dtlssrtp.Keys{Profile: p, LocalKey: ks.LocalKey, LocalSalt: ks.LocalSalt, RemoteKey: ks.RemoteKey, RemoteSalt: ks.RemoteSalt}
	}
	if err := m.newWebRTC(md, cert, icelite.Credentials{Ufrag: k.Ufrag, Pwd: k.Pwd}, &st); err != nil {
		return fmt.Errorf("WebRTC leg: %w", err)
	}
	md.rtc.peer, md.rtc.setup, md.rtc.role = peer, k.Setup, k.Role
	md.rtc.pem = &[2]string{k.Cert, k.Key}
	if st.Keys == nil && st.Peer != nil {
		md.rtc.log.Info("WebRTC leg restored before its DTLS handshake had finished: the handshake starts again", "role", k.Role)
	}
	return nil
}

var errKept = errors.New("call held already")

// Restore binds the kept calls' ports again and relays their media from
// where it was: the latched addresses, the counters, the SRTP keys. A call
// that cannot be restored whole (a port taken, a bad key) is left out and
// named in dropped, with why; what it had bound is released.
func (m *Manager) Restore(kept []anchorstate.Call) (restored int, dropped map[string]error) {
	dropped = map[string]error{}
	now := time.Now()
	for _, k := range kept {
		m.mu.Lock()
		_, held := m.calls[k.ID]
		m.mu.Unlock()
		if held {
			dropped[k.ID] = errKept
			continue
		}
		c, err := m.rebuild(k)
		if err != nil {
			dropped[k.ID] = err
			continue
		}
		for _, l := range c.legs {
			for _, md := range l.medias {
				md.stream.Start()
			}
		}
		m.mu.Lock()
		m.calls[c.id] = c
		c.kept = keptMark{at: now, latched: c.latched(nil), keyed: c.keyed()}
		m.mu.Unlock()
		restored++
	}
	return restored, dropped
}

// rebuild makes a call from its snapshot, its streams bound and linked
// but not started.
func (m *Manager) rebuild(k anchorstate.Call) (*call, error) {
	c := &call{id: k.ID, created: k.Created, lastSignal: k.LastSignal, answered: k.Answered, control: k.Control}
	fail := func(err error) (*call, error) {
		m.release(c)
		return nil, fmt.Errorf("restore %s: %w", k.ID, err)
	}
	for _, kl := range k.Legs {
		l := &leg{tag: kl.Tag, label: kl.Label, created: kl.Created, branch: kl.Branch}
		c.legs = append(c.legs, l)
		for _, km := range kl.Medias {
			pair, err := m.cfg.Ports.Claim(km.Port)
			if err != nil {
				return fail(err)
			}
			o := relay.Options{StrictSource: km.StrictSource, Handover: km.Handover, OpusPT: km.OpusPT}
			if m.cfg.Jitter.Mode != jitter.Off {
				jb := m.cfg.Jitter
				o.Jitter = &jb
			}
			s, err := relay.NewStream(pair, o)
			if err != nil {
				m.cfg.Ports.Release(pair)
				return fail(err)
			}
			md := &media{owner: l, index: km.Index, typ: km.Type, proto: km.Proto, mux: km.Mux, stream: s}
			l.medias = append(l.medias, md)
			if km.WebRTC != nil {
				if err := m.restoreWebRTC(md, km.WebRTC); err != nil {
					return fail(err)
				}
			} else if km.Bundle != nil && km.Bundle.Via != len(l.medias)-1 {
				// Rides another section's transport: nothing on its own port.
				md.mux = true
				s.SetMux(true)
				if err := s.SetCrypto(&relay.Crypto{}); err != nil {
					return fail(err)
				}
			} else if km.SDES != nil {
				if md.sdes, err = restoreSDES(km.SDES); err != nil {
					return fail(err)
				}
				crypto := &relay.Crypto{} // an SRTP leg not keyed yet: nothing in clear
				if md.sdes.in != nil && md.sdes.out != nil {
					crypto = &relay.Crypto{In: keysOf(md.sdes.in), Out: keysOf(md.sdes.out)}
				}
				if err := s.SetCrypto(crypto); err != nil {
					return fail(err)
				}
			}
			s.Restore(km.Stream) // after its keys: their rollover counters
		}
	}
	for i, kl := range k.Legs {
		if kl.Offerer > 0 && kl.Offerer <= len(c.legs) {
			c.legs[i].offerer = c.legs[kl.Offerer-1]
		}
		if kl.Peer < 0 || kl.Peer >= len(c.legs) {
			continue
		}
		a, b := c.legs[i], c.legs[kl.Peer]
		a.peer = b
		for j, md := range a.medias {
			if j < len(b.medias) {
				md.stream.SetPeer(b.medias[j].stream)
			}
		}
	}
	// BUNDLE groups (bundle.go) once every leg's sections are there.
	for i, kl := range k.Legs {
		l := c.legs[i]
		for j, km := range kl.Medias {
			if kb := km.Bundle; kb != nil {
				if kb.Via < 0 || kb.Via >= len(l.medias) || (kb.Via != j && l.medias[kb.Via].rtc == nil) {
					return fail(fmt.Errorf("bundled section %d on section %d, not a WebRTC transport", j+1, kb.Via+1))
				}
				l.medias[j].restoreBundle(kb, j)
			}
		}
	}
	for _, a := range c.legs {
		if b := a.peer; b != nil {
			for j, md := range a.medias {
				if j < len(b.medias) {
					md.stream.SetPeer(via(b, j).stream)
				}
			}
		}
		setDemux(a)
	}
	return c, nil
}

func restoreSDES(k *anchorstate.SDES) (*legSDES, error) {
	ls := &legSDES{flags: k.Flags}
	var err error
	if ls.phone, err = parseEach(k.Phone); err != nil {
		return nil, err
	}
	if ls.offered, err = parseEach(k.Offered); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		v   string
		dst **sdes.Crypto
	}{{k.In, &ls.in}, {k.Out, &ls.out}} {
		if p.v == "" {
			continue
		}
		cr, err := sdes.Parse(p.v)
		if err != nil {
			return nil, fmt.Errorf("SDES key: %w", err)
		}
		*p.dst = &cr
	}
	return ls, nil
}

// parseEach reads kept a=crypto values, none skipped.
func parseEach(vs []string) ([]sdes.Crypto, error) {
	var out []sdes.Crypto
	for _, v := range vs {
		cr, err := sdes.Parse(v)
		if err != nil {
			return nil, fmt.Errorf("SDES crypto: %w", err)
		}
		out = append(out, cr)
	}
	return out, nil
}
