// Package anchorstate keeps sori-anchor's calls in Redis, as rtpengine's
// --redis does, so that an anchor that restarts binds the same ports again
// and the media goes on: per call its legs and tags, per media section the
// anchor's port, the phone's addresses (SDP and latched), its SDES keys
// or, for a WebRTC leg, its ICE and DTLS-SRTP state (WebRTC), and the
// statistics so far.
//
// The anchor (media/anchor) hands a Keeper snapshots of a call when its
// signalling or latching changes and every few seconds, never per packet;
// one goroutine writes them, coalesced, in pipelines. Key layout (PREFIX
// defaults to "sori:", ID names the anchor):
//
//	PREFIX anchor:ID:{CALLID}   string: the call as JSON (Call); expires a little after the media timeout
//	PREFIX anchor:ID:calls      sorted set: Call-ID -> expiry (unix ms), to find the calls at start
//
// The call's key has the {CALLID} hash tag (braces and % percent-encoded).
package anchorstate

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/sori-voice/sori/media/icelite"
	"github.com/sori-voice/sori/media/relay"
	"github.com/sori-voice/sori/media/sdes"
)

// Call is one call as kept.
type Call struct {
	ID         string         `json:"id"`
	Created    time.Time      `json:"created"`
	LastSignal time.Time      `json:"last_signal,omitzero"`
	Answered   time.Time      `json:"answered,omitzero"`
	Control    netip.AddrPort `json:"control,omitzero"` // the ng client that created it
	Legs       []Leg          `json:"legs"`
}

// Leg is one side (SIP tag) of a call.
type Leg struct {
	Tag     string    `json:"tag"`
	Label   string    `json:"label,omitempty"`
	Created time.Time `json:"created"`
	Peer    int       `json:"peer"` // index in Call.Legs; -1: none
	Medias  []Media   `json:"medias"`
	// Branch is the via-branch of the forked offer the leg was made for,
	// Offerer the index+1 in Call.Legs of the leg that offered (0: none).
	Branch  string `json:"branch,omitempty"`
	Offerer int    `json:"offerer,omitempty"`
}

// Media is one m= section of a leg: the anchor's stream for it.
type Media struct {
	Index        int         `json:"index"`
	Type         string      `json:"type"`
	Proto        string      `json:"proto"`
	Mux          bool        `json:"mux,omitempty"`
	Port         int         `json:"port"` // the anchor's RTP port (RTCP: +1)
	StrictSource bool        `json:"strict_source,omitempty"`
	Handover     bool        `json:"handover,omitempty"`
	OpusPT       int         `json:"opus_pt"`
	Stream       relay.State `json:"stream"`
	SDES         *SDES       `json:"sdes,omitempty"`
	WebRTC       *WebRTC     `json:"webrtc,omitempty"`
	Bundle       *Bundle     `json:"bundle,omitempty"` // a WebRTC leg's BUNDLE section; nil: none
}

// Bundle is a section of a BUNDLE group on a WebRTC leg
// (media/anchor/bundle.go): the section whose transport carries it, and
// what tells its packets apart there.
type Bundle struct {
	Via   int      `json:"via"` // the leg's section (0-based) whose transport carries it; its own for the transport
	Mid   string   `json:"mid,omitempty"`
	PTs   []int    `json:"pts,omitempty"`
	SSRCs []uint32 `json:"ssrcs,omitempty"`
	Ext   int      `json:"ext,omitempty"` // the mid header extension's id
}

// SDES is an SRTP leg's keying, the a=crypto values as SDP writes them.
type SDES struct {
	Phone   []string   `json:"phone,omitempty"`   // the phone's offered cryptos
	Offered []string   `json:"offered,omitempty"` // the anchor's, offered to the phone
	Flags   sdes.Flags `json:"flags"`
	In      string     `json:"in,omitempty"`  // negotiated: the phone's key
	Out     string     `json:"out,omitempty"` // the anchor's
}

// WebRTC is a WebRTC leg's (UDP/TLS/RTP/SAVP(F)) transport: the anchor's
// ICE credentials and DTLS certificate for the leg, what the browser's SDP
// said, the ICE agent's state (the addresses the browser's checks
// validated, the nominated one) and, once the DTLS-SRTP handshake has
// finished, the SRTP keys it exported. A restarted anchor answers the
// browser's checks with the same credentials, sends the media to the same
// path and relays its SRTP with the same keys, without a new handshake;
// its re-offers keep the fingerprint and a=setup.
//
// Key and SRTP are secrets, as SDES's keys are: with SRTP the leg's media
// can be decrypted, and with Key the anchor's side of the leg impersonated
// to the browser for the rest of the certificate's life. Whoever can read
// the anchor's Redis keys can read its calls' media.
type WebRTC struct {
	Ufrag string        `json:"ufrag"` // the anchor's a=ice-ufrag and a=ice-pwd for the leg
	Pwd   string        `json:"pwd"`
	Cert  string        `json:"cert"`            // the leg's DTLS certificate, PEM
	Key   string        `json:"key"`             // its private key, PEM (PKCS #8): secret
	Setup string        `json:"setup,omitempty"` // the anchor's a=setup in its latest SDP to the leg
	Role  string        `json:"role,omitempty"`  // the anchor's DTLS role, server or client; "" before the leg's peer was set
	Peer  WebRTCPeer    `json:"peer,omitzero"`
	ICE   icelite.State `json:"ice"`
	SRTP  *DTLSKeys     `json:"srtp,omitempty"` // nil: the handshake had not finished
}

// WebRTCPeer is what the browser's own SDP (offer or answer) said.
type WebRTCPeer struct {
	Ufrag           string `json:"ufrag,omitempty"`
	Pwd             string `json:"pwd,omitempty"`
	FingerprintHash string `json:"fingerprint_hash,omitempty"`
	Fingerprint     string `json:"fingerprint,omitempty"`
	Setup           string `json:"setup,omitempty"`
	Lite            bool   `json:"lite,omitempty"`
	Mux             bool   `json:"mux,omitempty"`
	Mid             string `json:"mid,omitempty"`
	Bundle          string `json:"bundle,omitempty"` // the a=group:BUNDLE the mid is in
}

// DTLSKeys are the SRTP master keys and salts a DTLS-SRTP handshake
// exported (RFC 5764 §4.2) and its protection profile (IANA number):
// Local protects what the anchor sends, Remote what the browser sends.
// Secret.
type DTLSKeys struct {
	Profile    uint16 `json:"profile"`
	LocalKey   []byte `json:"local_key"`
	LocalSalt  []byte `json:"local_salt"`
	RemoteKey  []byte `json:"remote_key"`
	RemoteSalt []byte `json:"remote_salt"`
}

// Encode is the call as stored.
func Encode(c Call) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("anchorstate: encode %s: %w", c.ID, err)
	}
	return b, nil
}

// Decode reads what Encode wrote, checking what a restore relies on.
func Decode(b []byte) (Call, error) {
	var c Call
	if err := json.Unmarshal(b, &c); err != nil {
		return Call{}, fmt.Errorf("anchorstate: decode: %w", err)
	}
	if c.ID == "" {
		return Call{}, fmt.Errorf("anchorstate: decode: no call-id")
	}
	for i, l := range c.Legs {
		if l.Peer < -1 || l.Peer >= len(c.Legs) || l.Peer == i {
			return Call{}, fmt.Errorf("anchorstate: decode %s: leg %d has peer %d of %d legs", c.ID, i, l.Peer, len(c.Legs))
		}
	}
	return c, nil
}

// Ports are the anchor's RTP ports the call holds.
func (c Call) Ports() []int {
	var p []int
	for _, l := range c.Legs {
		for _, m := range l.Medias {
			p = append(p, m.Port)
		}
	}
	return p
}
