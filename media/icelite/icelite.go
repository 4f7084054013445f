// Package icelite answers a WebRTC peer's ICE connectivity checks as an
// ICE-lite agent (RFC 8445 §2.5): the anchor has one host candidate per
// leg, never sends checks of its own and is always the controlled agent.
// It answers STUN Binding requests authenticated with the short-term
// credentials of its SDP (RFC 8445 §7.3, RFC 8489), and remembers which
// addresses passed a check, which one the peer nominated and when the
// peer last checked that path: its consent to receive (RFC 7675). It holds
// no socket and no clock: the caller hands it each STUN datagram with its
// arrival time and sends the response.
package icelite

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pion/stun/v3"
)

// Credentials are one side's a=ice-ufrag and a=ice-pwd (RFC 8839 §5.4).
type Credentials struct {
	Ufrag, Pwd string
}

// iceChars is RFC 8839's ice-char: ALPHA / DIGIT / "+" / "/".
const iceChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// NewCredentials draws a fresh ufrag (8 characters, at least 24 bits of
// randomness as RFC 8839 asks) and password (24 characters, 128 bits).
func NewCredentials() (Credentials, error) {
	u, err := randomICEChars(8)
	if err != nil {
		return Credentials{}, err
	}
	p, err := randomICEChars(24)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{Ufrag: u, Pwd: p}, nil
}

func randomICEChars(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("icelite: random credentials: %w", err)
	}
	for i := range b {
		b[i] = iceChars[int(b[i])%len(iceChars)] // 256 is a multiple of 64: no bias
	}
	return string(b), nil
}

// Validate checks the lengths and characters RFC 8839 §5.4 allows.
func (c Credentials) Validate() error {
	if len(c.Ufrag) < 4 || len(c.Ufrag) > 256 {
		return fmt.Errorf("icelite: ufrag of %d characters (4 to 256)", len(c.Ufrag))
	}
	if len(c.Pwd) < 22 || len(c.Pwd) > 256 {
		return fmt.Errorf("icelite: password of %d characters (22 to 256)", len(c.Pwd))
	}
	for _, s := range []string{c.Ufrag, c.Pwd} {
		if strings.Trim(s, iceChars) != "" {
			return errors.New("icelite: credentials hold characters other than ALPHA, DIGIT, + and /")
		}
	}
	return nil
}

// maxValid bounds the addresses remembered as having passed a check: a
// browser checks from each of its candidates (IPv4, IPv6, server-reflexive),
// a handful.
const maxValid = 8

// Agent is the ICE-lite side of one leg.
type Agent struct {
	local Credentials

	mu          sync.Mutex
	remoteUfrag string           // empty: not known yet, any is accepted
	valid       []netip.AddrPort // passed a check, oldest first
	nominated   netip.AddrPort
	consentAt   time.Time // the last valid check on the selected path
}

// New returns an agent answering checks made with local's credentials.
func New(local Credentials) (*Agent, error) {
	if err := local.Validate(); err != nil {
		return nil, err
	}
	return &Agent{local: local}, nil
}

// Local is the agent's credentials, for its SDP.
func (a *Agent) Local() Credentials { return a.local }

// SetRemoteUfrag records the peer's a=ice-ufrag once its SDP is known:
// from then on a check must name it. Until then only the local part of
// USERNAME is checked, because a browser may start its checks before its
// answer has travelled through SIP to the anchor.
func (a *Agent) SetRemoteUfrag(ufrag string) {
	a.mu.Lock()
	a.remoteUfrag = ufrag
	a.mu.Unlock()
}

// Result is what one STUN message established.
type Result struct {
	// Response is the datagram to send back to the request's source;
	// nil: nothing is sent (an indication, a response, garbage).
	Response []byte
	// Valid: an authenticated Binding request; its source is a working
	// path to the peer.
	Valid bool
	// Nominated: it carried USE-CANDIDATE; the peer chose its source as
	// the path for media.
	Nominated bool
}

// Errors of Handle; a Response may come with them (an error response).
var (
	ErrNotSTUN      = errors.New("icelite: not a STUN message")
	ErrUnauthorized = errors.New("icelite: check with wrong credentials")
	ErrBadRequest   = errors.New("icelite: malformed check")
	ErrRoleConflict = errors.New("icelite: peer claims the controlled role")
)

// Handle answers one STUN datagram received from from now. It does not
// keep pkt.
func (a *Agent) Handle(pkt []byte, from netip.AddrPort) (Result, error) {
	return a.HandleAt(pkt, from, time.Now())
}

// HandleAt is Handle for a datagram that arrived at now.
func (a *Agent) HandleAt(pkt []byte, from netip.AddrPort, now time.Time) (Result, error) {
	if !stun.IsMessage(pkt) {
		return Result{}, ErrNotSTUN
	}
	m := &stun.Message{Raw: append([]byte(nil), pkt...)}
	if err := m.Decode(); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrNotSTUN, err)
	}
	if m.Type.Class != stun.ClassRequest {
		// Binding indications are keepalives (RFC 8445 §11); responses
		// cannot be ours: a lite agent sends no requests.
		return Result{}, nil
	}
	if m.Type.Method != stun.MethodBinding {
		return a.reject(m, from, stun.CodeBadRequest, ErrBadRequest, false)
	}
	if err := stun.Fingerprint.Check(m); err != nil && m.Contains(stun.AttrFingerprint) {
		return Result{}, fmt.Errorf("%w: FINGERPRINT: %v", ErrBadRequest, err) // RFC 8489 §7.3: silently discarded
	}
	var user stun.Username
	if err := user.GetFrom(m); err != nil || !m.Contains(stun.AttrMessageIntegrity) {
		return a.reject(m, from, stun.CodeBadRequest, ErrBadRequest, false)
	}
	localPart, remotePart, ok := strings.Cut(user.String(), ":")
	a.mu.Lock()
	remote := a.remoteUfrag
	a.mu.Unlock()
	if !ok || localPart != a.local.Ufrag || (remote != "" && remotePart != remote) {
		return a.reject(m, from, stun.CodeUnauthorized, ErrUnauthorized, false)
	}
	if err := stun.NewShortTermIntegrity(a.local.Pwd).Check(m); err != nil {
		return a.reject(m, from, stun.CodeUnauthorized, ErrUnauthorized, false)
	}
	if m.Contains(stun.AttrICEControlled) {
		// Both sides think they are controlled: a lite agent cannot take
		// the controlling role, so the full agent must (RFC 8445 §7.3.1.1).
		return a.reject(m, from, stun.CodeRoleConflict, ErrRoleConflict, true)
	}
	nominated := m.Contains(stun.AttrUseCandidate)
	a.mu.Lock()
	a.remember(from)
	if nominated {
		a.nominated = from
	}
	if sel, _ := a.selectedLocked(); sel == from {
		// Only the media path's own checks renew consent: a check on
		// another candidate says nothing about the address media goes to.
		a.consentAt = now
	}
	a.mu.Unlock()
	resp, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IP(from.Addr().Unmap().AsSlice()), Port: int(from.Port())},
		stun.NewShortTermIntegrity(a.local.Pwd), stun.Fingerprint)
	if err != nil {
		return Result{}, fmt.Errorf("icelite: build response: %w", err)
	}
	return Result{Response: resp.Raw, Valid: true, Nominated: nominated}, nil
}

// reject builds an error response. Only an authenticated request's error
// carries MESSAGE-INTEGRITY (RFC 8489 §9.1.3).
func (a *Agent) reject(m *stun.Message, from netip.AddrPort, code stun.ErrorCode, why error, authenticated bool) (Result, error) {
	setters := []stun.Setter{stun.NewTransactionIDSetter(m.TransactionID), stun.NewType(m.Type.Method, stun.ClassErrorResponse), code}
	if authenticated {
		setters = append(setters, stun.NewShortTermIntegrity(a.local.Pwd))
	}
	setters = append(setters, stun.Fingerprint)
	resp, err := stun.Build(setters...)
	if err != nil {
		return Result{}, fmt.Errorf("icelite: build error response: %w", err)
	}
	return Result{Response: resp.Raw}, fmt.Errorf("%w (from %s)", why, from)
}

// remember adds from to the valid addresses; a.mu held.
func (a *Agent) remember(from netip.AddrPort) {
	for i, v := range a.valid {
		if v == from {
			copy(a.valid[i:], a.valid[i+1:])
			a.valid[len(a.valid)-1] = from // most recent last
			return
		}
	}
	if len(a.valid) == maxValid {
		a.valid = append(a.valid[:0], a.valid[1:]...)
	}
	a.valid = append(a.valid, from)
}

// Validated reports whether addr passed a check: only then may DTLS and
// media from it be trusted as the peer's (RFC 8445 §7.3: consent).
func (a *Agent) Validated(addr netip.AddrPort) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, v := range a.valid {
		if v == addr {
			return true
		}
	}
	return false
}

// Selected is the address media goes to: the nominated one, else the
// last that passed a check; false before any check passed.
func (a *Agent) Selected() (netip.AddrPort, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.selectedLocked()
}

// selectedLocked is Selected; a.mu held.
func (a *Agent) selectedLocked() (netip.AddrPort, bool) {
	if a.nominated.IsValid() {
		return a.nominated, true
	}
	if n := len(a.valid); n > 0 {
		return a.valid[n-1], true
	}
	return netip.AddrPort{}, false
}

// ConsentTimeout is how long consent lasts after the last valid check on
// the media path (RFC 7675 §5.1: 30 s).
const ConsentTimeout = 30 * time.Second

// Consent is the peer's consent to receive media on the selected path.
type Consent struct {
	Path  netip.AddrPort // the selected path; invalid: no check passed yet
	Last  time.Time      // the last valid check on Path
	Fresh bool           // Last is less than the timeout before now
}

// Consent reports, at now, whether the peer still consents to receive on
// the selected path: a valid check on it came less than timeout ago (0:
// ConsentTimeout). A lite agent sends no checks of its own (RFC 8445
// §2.5), so the peer's checks, a browser's every 5 s or so (RFC 7675
// §5.1), are the only sign that it still wants the media.
func (a *Agent) Consent(now time.Time, timeout time.Duration) Consent {
	if timeout <= 0 {
		timeout = ConsentTimeout
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	path, ok := a.selectedLocked()
	if !ok {
		return Consent{}
	}
	return Consent{Path: path, Last: a.consentAt, Fresh: now.Sub(a.consentAt) < timeout}
}

// State is what the agent learned from the peer's checks, for an anchor
// that keeps its WebRTC legs across a restart (media/anchorstate): with
// the same local credentials, an agent restored from it answers the
// peer's next checks, takes media from the same addresses and sends it to
// the same path as before.
type State struct {
	RemoteUfrag string           `json:"remote_ufrag,omitempty"`
	Valid       []netip.AddrPort `json:"valid,omitempty"` // oldest first
	Nominated   netip.AddrPort   `json:"nominated,omitzero"`
	Consent     time.Time        `json:"consent,omitzero"` // the last valid check on the selected path
}

// State is the agent's state now.
func (a *Agent) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return State{RemoteUfrag: a.remoteUfrag, Valid: append([]netip.AddrPort(nil), a.valid...), Nominated: a.nominated, Consent: a.consentAt}
}

// Restore puts back what State returned (at most maxValid addresses, the
// newest), before the agent handles a check.
func (a *Agent) Restore(st State) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.remoteUfrag = st.RemoteUfrag
	a.valid = a.valid[:0]
	for _, v := range st.Valid {
		if v.IsValid() {
			a.remember(v)
		}
	}
	a.nominated = st.Nominated
	a.consentAt = st.Consent
}
