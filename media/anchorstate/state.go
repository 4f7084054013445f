// Package anchorstate keeps sori-anchor's calls in Redis, as rtpengine's
// --redis does, so that an anchor that restarts binds the same ports again
// and the media goes on: per call its legs and tags, per media section the
// anchor's port, the phone's addresses (SDP and latched), its SDES keys
// and the statistics so far.
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
}

// SDES is an SRTP leg's keying, the a=crypto values as SDP writes them.
type SDES struct {
	Phone   []string   `json:"phone,omitempty"`   // the phone's offered cryptos
	Offered []string   `json:"offered,omitempty"` // the anchor's, offered to the phone
	Flags   sdes.Flags `json:"flags"`
	In      string     `json:"in,omitempty"`  // negotiated: the phone's key
	Out     string     `json:"out,omitempty"` // the anchor's
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
