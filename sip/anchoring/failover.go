package anchoring

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/sori-voice/sori/media/ng"
)

// An anchor that misses a ping gets no new calls until it answers; one
// that keeps failing (pings, or a call's own commands timing out) for
// Config.FailoverAfter is dead for good: the calls on it cannot get their
// media back there, so the pool tells the calls' owner (sip/call's Table),
// which moves each one to a live anchor with a new offer (Reoffer,
// Reanswer) and re-INVITEs. rtpengine alone can only fail over to a
// standby that takes over the dead one's IP address.

// ErrDead: the call's anchor is dead (failover.go); its media must move.
var ErrDead = errors.New("media anchor is dead")

// Gone reports whether err says the anchor did not answer or is dead (not
// that it refused what it was sent): the call's media must move.
func Gone(err error) bool { return errors.Is(err, ErrDead) || errors.Is(err, ng.ErrTimeout) }

// Failover is told, after every ping round, of each anchor that is dead
// (sip/call's Table, which moves the calls it holds on it).
type Failover interface {
	AnchorDead(anchor netip.AddrPort)
}

// failing records one outcome, up or not, of what was sent at sent; a.mu
// held. died: a has just been failing for after (0: never); back: a dead
// anchor answers again.
func (a *anchor) failing(up bool, sent time.Time, after time.Duration) (died, back bool) {
	if up {
		back = a.dead
		a.downSince, a.dead = time.Time{}, false
		return false, back
	}
	if a.downSince.IsZero() || sent.Before(a.downSince) {
		a.downSince = sent
	}
	if after > 0 && !a.dead && time.Since(a.downSince) >= after {
		a.dead = true
		return true, false
	}
	return false, false
}

// unanswered: a call's command sent to a at sent got no reply. It starts
// (or continues) a's failure, so that with its pings failing too it is
// dead after FailoverAfter; new calls still go to it until a ping fails.
func (p *Pool) unanswered(a *anchor, sent time.Time) {
	a.mu.Lock()
	died, _ := a.failing(false, sent, p.cfg.FailoverAfter)
	a.mu.Unlock()
	p.deathChanged(a, died, false)
}

func (a *anchor) isDead() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dead
}

func (p *Pool) deathChanged(a *anchor, died, back bool) {
	switch {
	case died:
		p.cfg.Log.Error("media anchor dead: its calls move to the other anchors", "anchor", a.addr, "failing_for", p.cfg.FailoverAfter)
	case back:
		p.cfg.Log.Info("dead media anchor answers again: it takes new calls", "anchor", a.addr)
	}
}

// Dead lists the anchors that are dead now.
func (p *Pool) Dead() []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range p.anchors {
		if a.isDead() {
			out = append(out, a.addr)
		}
	}
	return out
}

// reportDead tells to, if it takes failovers, of every dead anchor.
func (p *Pool) reportDead(to Timeouts) {
	f, ok := to.(Failover)
	if !ok {
		return
	}
	for _, a := range p.Dead() {
		f.AnchorDead(a)
	}
}

// Reoffer sends sdp, the SDP of the side fromTag of call callID, as a new
// offer to a live anchor other than avoid (the dead one), toward the side
// toTag ("" when that side has not answered); it returns the anchor and
// the SDP for the other side. from is where the side's signalling comes
// from; encryption is what the other side is offered (as Offer's).
func (p *Pool) Reoffer(ctx context.Context, callID, fromTag, toTag string, sdp []byte, from netip.Addr, encryption string, avoid netip.AddrPort) (netip.AddrPort, []byte, error) {
	d := ng.Dict{"command": "offer", "call-id": callID, "from-tag": fromTag, "sdp": sdp, "replace": replace, "ICE": "remove"}
	if tp := transportFor(sdp, encryption); tp != "" {
		d["transport-protocol"] = tp
	}
	if toTag != "" {
		d["to-tag"] = toTag
	}
	if from.IsValid() {
		d["received-from"] = receivedFrom(from)
	}
	var lastErr error = ErrNoAnchor
	for _, a := range p.candidates(callID) {
		if a.addr == avoid {
			continue
		}
		res, err := p.send(ctx, a, d)
		if err != nil {
			lastErr = err
			continue
		}
		return a.addr, append([]byte(nil), sdpOf(res)...), nil
	}
	return netip.AddrPort{}, nil, lastErr
}

// Reanswer sends sdp, the answer of the side toTag to a Reoffer, to the
// anchor on, and returns the SDP for the side fromTag.
func (p *Pool) Reanswer(ctx context.Context, on netip.AddrPort, callID, fromTag, toTag string, sdp []byte, from netip.Addr) ([]byte, error) {
	d := ng.Dict{"command": "answer", "call-id": callID, "from-tag": fromTag, "to-tag": toTag, "sdp": sdp, "replace": replace, "ICE": "remove"}
	if from.IsValid() {
		d["received-from"] = receivedFrom(from)
	}
	res, err := p.send(ctx, p.anchorAt(on), d)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), sdpOf(res)...), nil
}

// receivedFrom is the ng "received-from" of a signalling address.
func receivedFrom(a netip.Addr) []any {
	a = a.Unmap()
	if a.Is6() {
		return []any{"IP6", a.String()}
	}
	return []any{"IP4", a.String()}
}
