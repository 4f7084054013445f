// Package call holds everything sori keeps about one call, in one Call
// object with one lifetime: the call record being built, both ends of its
// dialog, the media anchor it uses, the trunk slot it takes, its caller's
// toll count, and a single expiry timer. The proxy reports what happens
// to the call (Answered, Failed, Cancelled, Bye; the anchor a media
// timeout; the timer a dialog timeout) and the Call does the bookkeeping
// once: record written once, media deleted once, slot released once,
// timer stopped, map entry removed.
//
// Files: state.go (the plain value a call is, to save and load), call.go
// (the transitions), table.go (the calls by Call-ID), sides.go (reading
// both ends of a dialog from an INVITE and its 2xx), reanchor.go (moving
// a call off a dead media anchor), cseq.go (the CSeq offsets that follow
// sori's own requests in a dialog), late.go (delayed offers: the offer in
// a 2xx, kept and saved with the call until the ACK's answer), store.go
// (saving, loading and adopting calls across restarts and nodes),
// fence.go (a node cut off from the store leaves its saved calls alone,
// and on its way back drops those another node adopted meanwhile).
package call

import (
	"time"

	"github.com/sori-voice/sori/sip/calls"
)

// Phase is where a call is.
type Phase string

// Phases.
const (
	Ringing  Phase = "ringing"  // INVITE forwarded, no 2xx yet
	Answered Phase = "answered" // a 2xx went to the caller
	Ended    Phase = "ended"    // its record is written
)

// Side is one end of a dialog: what sori needs to send it a request in
// the dialog itself (BYE on a media or dialog timeout).
type Side struct {
	Target    string   `json:"target"`          // its Contact URI
	Route     []string `json:"route,omitempty"` // proxies between sori and it, nearest first
	Dest      string   `json:"dest"`            // ip:port its messages came from (used when Route is empty)
	Transport string   `json:"transport"`       // UDP or TCP
	ID        string   `json:"id"`              // its address-of-record as the dialog names it (From/To URI)
	Tag       string   `json:"tag"`
	CSeq      uint32   `json:"cseq"`           // highest CSeq it has used in the dialog
	PANI      string   `json:"pani,omitempty"` // P-Access-Network-Info it sent (RFC 7315)
	// CSeqOffset is how far the other side's count of this side's CSeq is
	// ahead of this side's own: the requests sori sent in the dialog as
	// this side (re-INVITEs on a failover). Its later requests are sent on
	// with CSeq+CSeqOffset (cseq.go).
	CSeqOffset uint32 `json:"cseq_offset,omitempty"`
	// Shown is its Contact as the other side got it (with sori's NAT
	// alias): the Contact of a request sori sends the other side as it.
	Shown string `json:"shown,omitempty"`
	// SDP is the last SDP it sent (before any anchor rewrote it): what a
	// new anchor is given for it when its anchor dies.
	SDP string `json:"sdp,omitempty"`
}

// State is a call as a plain value: what a Call holds, saved and loaded
// as it is (JSON), so that a later store can keep it elsewhere.
type State struct {
	Record calls.Record `json:"record"` // the record being built
	Phase  Phase        `json:"phase"`
	Caller Side         `json:"caller"`
	Callee Side         `json:"callee"`           // known once answered
	Dialog bool         `json:"dialog"`           // both ends known: sori can end the call itself
	Anchor string       `json:"anchor,omitempty"` // ng address of the anchor holding its media; empty: not anchored
	Trunk  string       `json:"trunk,omitempty"`  // the trunk whose call slot it holds; empty: none
	Toll   bool         `json:"toll,omitempty"`   // counted by its caller's toll caps
	// Encryption is what the callee's side was offered (sip/anchoring's
	// values): a new anchor offers it the same.
	Encryption string    `json:"encryption,omitempty"`
	Expiry     time.Time `json:"expiry"` // when it is let go if no end is seen
	// Late is the delayed offer of the call's last INVITE (initial or
	// re-INVITE) without SDP (late.go): a node that takes its ACK (after
	// a restart, or another node) gives the ACK's answer to the anchor
	// that took the offer. nil: none.
	Late *LateOffer `json:"late,omitempty"`
}

// LateOffer is a delayed offer as a plain value: the SDP offer of a 2xx
// to an INVITE without SDP, which the anchor took, and, once the ACK came,
// the anchor's rewrite of the ACK's answer (a retransmitted ACK gets it
// again). The anchor names the offer's legs by the call's Call-ID and the
// two tags: from-tag the offerer's, to-tag the INVITE's sender's.
type LateOffer struct {
	Tag    string `json:"tag"`              // the offerer's (the 2xx's To tag)
	Sender string `json:"sender"`           // the INVITE's sender's (its From tag)
	CSeq   uint32 `json:"cseq"`             // the INVITE's, as its sender numbered it
	Anchor string `json:"anchor"`           // ng address of the anchor that took the offer
	SDP    string `json:"sdp"`              // the anchor's rewrite of the offer, as the sender got it
	WebRTC bool   `json:"webrtc,omitempty"` // the offerer is a browser: the answer it gets has ICE
	Acked  bool   `json:"acked,omitempty"`  // the ACK's answer went to the anchor
	Ack    string `json:"ack,omitempty"`    // the anchor's rewrite of that answer
	// Reliable: the offer came in a reliable 18x; Prack: its PRACK
	// brought the answer (Acked, Ack), so the ACK brings none.
	Reliable bool `json:"reliable,omitempty"`
	Prack    bool `json:"prack,omitempty"`
}
