// Package calls is the call record: what one record holds, the sinks it
// is written to (a JSON lines file, a Redis stream), and the Recorder that
// writes it and counts it. The call in progress lives in sip/call, which
// hands its record here once, when the call has ended.
package calls

import (
	"context"
	"net/netip"
	"time"
)

// Record is one call (documented field by field in README.md, "Call records").
type Record struct {
	CallID       string     `json:"call_id"`
	From         string     `json:"from"`                    // caller's From URI
	To           string     `json:"to"`                      // callee's To URI
	RequestURI   string     `json:"request_uri"`             // as received
	Caller       string     `json:"caller"`                  // authenticated user, empty when not authenticated
	Source       string     `json:"source"`                  // caller's transport:ip:port
	Callee       string     `json:"callee"`                  // contact that answered, empty when none did
	Start        time.Time  `json:"start"`                   // INVITE received
	Answer       *time.Time `json:"answer"`                  // 2xx forwarded; null when unanswered
	End          time.Time  `json:"end"`                     // BYE or final response
	Duration     float64    `json:"duration"`                // seconds from answer to end; 0 when unanswered
	Code         int        `json:"code"`                    // final response to the INVITE
	Reason       string     `json:"reason"`                  // its reason phrase
	HangupBy     string     `json:"hangup_by"`               // caller, callee, timeout, or empty
	Disposition  string     `json:"disposition"`             // see Disposition
	Branches     int        `json:"branches"`                // contacts (or carrier gateways) the call was tried at
	Number       string     `json:"number,omitempty"`        // the dialled number, E.164, when a number was called
	CallerNumber string     `json:"caller_number,omitempty"` // the caller's number, E.164: its own (out), the carrier's From (in)
	Trunk        string     `json:"trunk,omitempty"`         // the carrier trunk: the one it came from, or the last one tried
	Gateway      string     `json:"gateway,omitempty"`       // the carrier gateway last tried (the one that answered, if any)
	// Media quality, when the media was anchored: each phone's uplink as
	// the anchor measured it, and its downlink as the phone reported it.
	CallerMedia *MediaQuality `json:"caller_media,omitempty"`
	CalleeMedia *MediaQuality `json:"callee_media,omitempty"`
	MOS         float64       `json:"mos,omitempty"` // the lower of the two sides' MOS
	// Push: the callee's app was asleep and pushed (RFC 8599).
	Push *PushRecord `json:"push,omitempty"`
	// Reanchored: the call's media anchor died and sori moved the call to
	// another one, in order (sip/call's failover).
	Reanchored []Reanchor `json:"reanchored,omitempty"`
}

// Reanchor is one move of a call's media to another anchor.
type Reanchor struct {
	From string    `json:"from"` // ng address of the anchor that died
	To   string    `json:"to"`   // the one that took the call
	At   time.Time `json:"at"`   // both phones had the new SDP (or the move failed)
	// Answered: the call was answered on the dead anchor and both phones
	// got a re-INVITE; false: it was ringing and its next SDP answer went
	// to the new anchor (the callee then got the re-INVITE).
	Answered bool   `json:"answered"`
	Error    string `json:"error,omitempty"` // why the move failed (the call was then ended)
}

// PushRecord is the push wake-up of a call's callee.
type PushRecord struct {
	Sent   int   `json:"sent"`              // pushes sent (one per sleeping device)
	WakeMS int64 `json:"wake_ms,omitempty"` // push to the first woken app's REGISTER; 0: none woke
}

// MediaQuality is one phone's media in a call.
type MediaQuality struct {
	Network      string     `json:"network,omitempty"`        // the configured network the phone is on (networks:)
	Address      netip.Addr `json:"-"`                        // where its media came from (latched)
	Sent         int64      `json:"sent"`                     // packets the phone sent (by sequence numbers)
	Lost         int64      `json:"lost"`                     // of them, lost before the anchor
	LossPct      float64    `json:"loss_pct"`                 // Lost / Sent, in %
	JitterMS     int64      `json:"jitter_ms"`                // RFC 3550 interarrival jitter at the anchor
	MOS          float64    `json:"mos"`                      // E-model score of the uplink
	DownLossPct  float64    `json:"down_loss_pct,omitempty"`  // anchor → phone, the phone's last report (fraction lost)
	DownJitterMS int64      `json:"down_jitter_ms,omitempty"` // its jitter, as the phone reported it
	RTTMS        int64      `json:"rtt_ms,omitempty"`         // anchor ↔ phone, from its RTCP (LSR/DLSR)
	// SRTP is the crypto suite of the phone's leg when it spoke SRTP (the
	// figures above are measured on it all the same: RTP headers are not
	// encrypted, and the anchor decrypts the phone's SRTCP).
	SRTP string `json:"srtp,omitempty"`
	// Access is the phone's access type from its P-Access-Network-Info
	// (weather.AccessType: lte, nr, 3g, 2g, wifi, unknown).
	Access string `json:"access,omitempty"`
	// Tags are the user's configured tags (users[].tags: plan=lte-62,
	// device=android), so quality can be compared by them.
	Tags map[string]string `json:"tags,omitempty"`
}

// Dispositions.
const (
	Answered     = "answered"
	Busy         = "busy"          // 486, 600
	NoAnswer     = "no-answer"     // no final response within timer C
	Cancelled    = "cancelled"     // the caller sent CANCEL
	NotFound     = "not-found"     // 404, 484, 604
	Unavailable  = "unavailable"   // 480: not registered
	Rejected     = "rejected"      // other 4xx and 6xx
	Failed       = "failed"        // 5xx, transport errors
	Expired      = "expired"       // answered, no BYE within sip.dialog_timeout
	MediaTimeout = "media-timeout" // answered, its media stopped for the anchor's media timeout: sori sent BYE to both sides
	// ReanchorFailed: answered, its anchor died and the move to another
	// failed (a phone refused the re-INVITE): sori sent BYE to both sides.
	ReanchorFailed = "reanchor-failed"
	// NoSDPAnswer: answered by a 2xx carrying the SDP offer of an INVITE
	// without one, whose ACK brought no answer: sori sent BYE to both sides.
	NoSDPAnswer = "no-sdp-answer"
)

// Disposition names the outcome of an unanswered call.
func Disposition(code int, cancelled, timedOut bool) string {
	switch {
	case cancelled:
		return Cancelled
	case timedOut:
		return NoAnswer
	case code >= 200 && code < 300:
		return Answered
	case code == 486 || code == 600:
		return Busy
	case code == 404 || code == 484 || code == 604:
		return NotFound
	case code == 408:
		return NoAnswer
	case code == 480:
		return Unavailable
	case code == 487:
		return Cancelled
	case code >= 500 && code < 600:
		return Failed
	default:
		return Rejected
	}
}

// Sink stores call records.
type Sink interface {
	Write(ctx context.Context, r Record) error
}

// WithMedia returns r with each side's media quality, by SIP tag (the
// caller's is callerTag), and the lower MOS of the two.
func (r Record) WithMedia(callerTag string, byTag map[string]MediaQuality) Record {
	for tag, q := range byTag {
		q := q
		if tag == callerTag {
			r.CallerMedia = &q
		} else {
			r.CalleeMedia = &q
		}
	}
	r.MOS = 0
	for _, q := range []*MediaQuality{r.CallerMedia, r.CalleeMedia} {
		if q != nil && q.Sent > 0 && (r.MOS == 0 || q.MOS < r.MOS) {
			r.MOS = q.MOS
		}
	}
	return r
}
