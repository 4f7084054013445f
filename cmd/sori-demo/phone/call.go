package phone

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Spec is one call: how each phone's media behaves and how long it talks.
type Spec struct {
	Caller, Callee Leg
	// Packets is how many RTP packets each phone sends, 20 ms apart (250
	// is five seconds).
	Packets int
	// CalleeHangsUp: the callee sends the BYE, else the caller.
	CalleeHangsUp bool
	// RTCPInterval is how often each phone sends RTCP while it talks
	// (default 1 s; RFC 3550's 5 s is longer than a short call). Each also
	// sends a last report once the other's last packets are in.
	RTCPInterval time.Duration
	// Drain is how long the phones wait after the last packet for the
	// anchor's jitter buffer to play out (default 300 ms).
	Drain time.Duration
}

// Result is what a call did.
type Result struct {
	CallID         string
	Caller, Callee Side
	Answered       time.Time
}

// ErrRejected is a final answer other than 2xx to the INVITE.
var ErrRejected = errors.New("call rejected")

// Call has caller call callee through sori, both talk for s.Packets
// packets with their legs' losses, report, and one hangs up. It returns
// when the BYE is answered.
func Call(ctx context.Context, caller, callee *Phone, s Spec) (Result, error) {
	if s.RTCPInterval == 0 {
		s.RTCPInterval = time.Second
	}
	if s.Drain == 0 {
		s.Drain = 300 * time.Millisecond
	}
	if s.Packets < 2 {
		return Result{}, errors.New("a call needs 2 packets at least")
	}
	callID := token() + "@" + caller.cfg.Addr.String()
	res := Result{CallID: callID}

	incoming := make(chan *sip.Request, 1)
	callee.mu.Lock()
	callee.armed[callID] = incoming
	callee.mu.Unlock()
	defer func() {
		callee.mu.Lock()
		delete(callee.armed, callID)
		delete(callee.dialogs, callID)
		callee.mu.Unlock()
		caller.mu.Lock()
		delete(caller.dialogs, callID)
		caller.mu.Unlock()
	}()

	cm, err := openMedia(caller.cfg.Addr, caller.cfg.User)
	if err != nil {
		return res, err
	}
	defer cm.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The callee answers in the background: 180, then 200 with its SDP,
	// resent until the ACK.
	type answered struct {
		inv    *sip.Request
		from   netip.AddrPort
		media  *media
		target netip.AddrPort
		tag    string
		d      *dialog
		err    error
	}
	ans := make(chan answered, 1)
	go func() {
		var a answered
		select {
		case a.inv = <-incoming:
		case <-ctx.Done():
			a.err = ctx.Err()
			ans <- a
			return
		}
		a.from, _ = netip.ParseAddrPort(a.inv.Source())
		if a.target, a.err = mediaTarget(a.inv.Body()); a.err != nil {
			callee.respond(a.inv, a.from, 488, "Not Acceptable Here")
			ans <- a
			return
		}
		if a.media, a.err = openMedia(callee.cfg.Addr, callee.cfg.User); a.err != nil {
			callee.respond(a.inv, a.from, 500, "Server Internal Error")
			ans <- a
			return
		}
		a.tag = token()
		a.d = &dialog{ack: make(chan struct{}), bye: make(chan struct{})}
		callee.mu.Lock()
		callee.dialogs[callID] = a.d
		callee.mu.Unlock()
		contact := "Contact: <sip:" + callee.cfg.User + "@" + callee.local.String() + ">"
		extra := []string{contact}
		if s.Callee.PANI != "" {
			extra = append(extra, "P-Access-Network-Info: "+s.Callee.PANI)
		}
		callee.respondBody(a.inv, a.from, 180, "Ringing", a.tag, "", contact)
		ok := callee.respondBody(a.inv, a.from, 200, "OK", a.tag, a.media.sdp(rand.Int64N(1<<40)), extra...)
		callee.mu.Lock()
		a.d.ok = ok
		callee.mu.Unlock()
		for wait := T1; ; wait = min(2*wait, 4*time.Second) {
			select {
			case <-a.d.ack:
				ans <- a
				return
			case <-time.After(wait):
				callee.write(ok, a.from)
			case <-ctx.Done():
				a.err = ctx.Err()
				ans <- a
				return
			}
		}
	}()
	var a answered
	defer func() {
		if a.media != nil {
			a.media.close()
		}
	}()

	// The INVITE, its 407 and the INVITE again with credentials.
	fromTag := token()
	r := request{method: "INVITE", ruri: callee.AOR(), from: "<" + caller.AOR() + ">;tag=" + fromTag, to: "<" + callee.AOR() + ">",
		callID: callID, cseq: 1, headers: []string{"Contact: <sip:" + caller.cfg.User + "@" + caller.local.String() + ">"},
		body: cm.sdp(rand.Int64N(1 << 40))}
	if s.Caller.PANI != "" {
		r.headers = append(r.headers, "P-Access-Network-Info: "+s.Caller.PANI)
	}
	base := len(r.headers)
	var ok *sip.Response
	for attempt := 0; ok == nil; attempt++ {
		raw, branch := caller.build(r)
		final, err := caller.transact(ctx, raw, branch, true, caller.cfg.Server)
		if err != nil {
			return res, fmt.Errorf("INVITE %s → %s: %w", caller.cfg.User, callee.cfg.User, err)
		}
		if final.StatusCode >= 300 {
			caller.write([]byte(caller.ackFor(r, branch, final)), caller.cfg.Server)
		}
		switch {
		case final.StatusCode < 300:
			ok = final
		case final.StatusCode == 407 && attempt < 2:
			cred, err := caller.answer(final, "Proxy-Authenticate", "INVITE", r.ruri)
			if err != nil {
				return res, err
			}
			r.cseq++
			r.headers = append(r.headers[:base:base], "Proxy-Authorization: "+cred)
		default:
			return res, fmt.Errorf("%w: INVITE %s → %s: %d %s", ErrRejected, caller.cfg.User, callee.cfg.User, final.StatusCode, final.Reason)
		}
	}
	res.Answered = time.Now()
	callerDialog := &dialog{ack: make(chan struct{}), bye: make(chan struct{})}
	caller.mu.Lock()
	caller.dialogs[callID] = callerDialog
	caller.mu.Unlock()
	contact := ok.Contact()
	if contact == nil {
		return res, errors.New("2xx without Contact")
	}
	var routes []string
	rrs := ok.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		routes = append(routes, "Route: "+rrs[i].Value())
	}
	inDialog := request{ruri: contact.Address.String(), from: r.from, to: ok.To().Value(), callID: callID, headers: routes}
	ack := inDialog
	ack.method, ack.cseq = "ACK", r.cseq
	raw, _ := caller.build(ack)
	caller.write([]byte(raw), caller.cfg.Server)
	callerTarget, err := mediaTarget(ok.Body())
	if err != nil {
		return res, err
	}
	select {
	case a = <-ans:
	case <-time.After(10 * time.Second):
		return res, errors.New("the callee did not see the ACK")
	}
	if a.err != nil {
		return res, a.err
	}

	// Both talk.
	cm.start(ctx, callerTarget, s.Caller, s.Packets, s.RTCPInterval)
	a.media.start(ctx, a.target, s.Callee, s.Packets, s.RTCPInterval)
	deadline := time.Now().Add(time.Duration(s.Packets)*ptime + 5*time.Second)
	for !cm.done() || !a.media.done() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return res, errors.New("the media did not end")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(s.Drain)
	cm.report()
	a.media.report()
	time.Sleep(150 * time.Millisecond) // the anchor reads them before the BYE deletes the call

	// One hangs up.
	if s.CalleeHangsUp {
		var inviteRoutes []string
		for _, h := range a.inv.GetHeaders("Record-Route") {
			inviteRoutes = append(inviteRoutes, "Route: "+h.Value())
		}
		invContact := a.inv.Contact()
		if invContact == nil {
			return res, errors.New("INVITE without Contact")
		}
		bye := request{method: "BYE", ruri: invContact.Address.String(), from: a.inv.To().Value() + ";tag=" + a.tag,
			to: a.inv.From().Value(), callID: callID, cseq: 1, headers: inviteRoutes}
		raw, branch := callee.build(bye)
		fin, err := callee.transact(ctx, raw, branch, false, callee.cfg.Server)
		if err != nil {
			return res, fmt.Errorf("BYE: %w", err)
		}
		if fin.StatusCode != 200 {
			return res, fmt.Errorf("BYE: %d %s", fin.StatusCode, fin.Reason)
		}
	} else {
		bye := inDialog
		bye.method, bye.cseq = "BYE", r.cseq+1
		raw, branch := caller.build(bye)
		fin, err := caller.transact(ctx, raw, branch, false, caller.cfg.Server)
		if err != nil {
			return res, fmt.Errorf("BYE: %w", err)
		}
		if fin.StatusCode != 200 {
			return res, fmt.Errorf("BYE: %d %s", fin.StatusCode, fin.Reason)
		}
	}
	res.Caller, res.Callee = cm.side(), a.media.side()
	return res, nil
}

// done tells whether the phone has sent its last packet.
func (m *media) done() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sendDone
}
