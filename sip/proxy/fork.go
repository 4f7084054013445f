package proxy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/anchoring"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/push"
	"github.com/sori-voice/sori/sip/pushwake"
	"github.com/sori-voice/sori/sip/reply"
	"github.com/sori-voice/sori/sip/timers"
	"github.com/sori-voice/sori/sip/transport"
	"github.com/sori-voice/sori/sip/trunks"
)

// cancelWait is how long a cancelled branch may take to answer its CANCEL
// before its transaction is abandoned (64*T1, RFC 3261 §9.1).
const cancelWait = 32 * time.Second

// dialTimeout bounds opening a TCP connection or resolving a name for a branch.
const dialTimeout = 5 * time.Second

// fork is one proxied server transaction: its branches, grouped by q, and
// the choice of the response the caller gets (RFC 3261 §16.7).
type fork struct {
	p      *Proxy
	in     *sip.Request
	w      chain.ResponseWriter
	call   *call.Call // nil unless an initial INVITE
	dialog *call.Call // the call an in-dialog request belongs to; nil: none held
	// holder: the request goes on to the node holding its call
	// (holder.go); that node not answering at all is the service
	// failing, not the far end: 503 with Retry-After.
	holder bool
	caller chain.Caller // who sent it
	invite bool
	rr     bool
	// anchored: the request's SDP offer went through a media anchor, so
	// SDP answers coming back must too, on the same anchor.
	anchored bool
	anchor   netip.AddrPort
	// offerSDP is a new call's SDP offer as it came, offerEnc what the
	// call's offer gave the callee, offerBranch the via-branch that offer
	// named (the caller's): a branch whose target wants another encryption
	// gets an offer of its own from offerSDP (branchOffer).
	offerSDP    []byte
	offerEnc    string
	offerBranch string
	// mediaBranches are the via-branches of the anchor's legs made for
	// the branches so far, offerBranch's included once one uses it; f.mu.
	mediaBranches []string
	// late: an INVITE without SDP, whose 2xx brings the offer (late.go);
	// lateEnc is what its sender is offered.
	late    bool
	lateEnc string
	// cseq is the CSeq an in-dialog request goes on with (its own plus the
	// dialog's offset after sori's re-INVITEs, sip/call cseq.go); its
	// responses go back with its own. 0: unchanged.
	cseq uint32
	// trunk: the groups are carrier gateways, tried one after another only
	// when one fails in a way another gateway may not (no answer, 408, 5xx);
	// a callee's own answer (404, 486, other 4xx) ends the search.
	trunk     bool
	groupCode int // best real final response of the current group; 0: none
	loop      string
	groups    [][]target

	mu        sync.Mutex
	gi        int       // current group
	branches  []*branch // of the current group
	pending   int       // branches of the current group with no final response
	started   int
	best      *sip.Response // best final response from a branch so far
	bestCode  int           // best synthetic code (timeout, unreachable) when no response
	challenge []sip.Header  // every 401/407 challenge, aggregated (§16.7 step 7)
	rang      bool
	timedOut  bool
	cancelled bool
	stop      bool // a 6xx ended the search
	sent      int  // final status sent to the caller; 0: none yet
	final     chan struct{}
	timerC    *timers.Timer // stopped at the final response, so a call does not keep its fork for timer C
	// refs: the caller's wait plus each branch still watched; the fork is
	// over (sori_forks_active) when it drops to zero.
	refs int
}

type branch struct {
	trunk       string          // the carrier trunk of its target, if any
	gateway     *trunks.Gateway // and the gateway
	req         *sip.Request
	tx          sip.ClientTransaction
	provisional bool
	done        bool // has (or is given) its final outcome
	cancel      bool // CANCEL wanted
	cancelSent  bool
	giveUp      chan struct{}
	giveUpOnce  sync.Once
	giveUpTimer *timers.Timer // the wait for a cancelled branch to finish
	// wait: the branch is held for an app woken by push (no request sent
	// yet); woken: the woken app's binding got it.
	wait  *pushwake.Wait
	woken bool
	// media is the via-branch of the offer its target got (its answers
	// name it): the call's (fork.offerBranch) or its own (branchOffer);
	// enc that offer's encryption.
	media string
	enc   string
	// browser: its target is a browser (target browser, or reached over
	// WebSocket): a 2xx offer from it is a WebRTC peer's (late.go).
	browser bool
}

func newFork(p *Proxy, in *sip.Request, w chain.ResponseWriter, c *call.Call, caller chain.Caller, groups [][]target, rr bool) *fork {
	return &fork{p: p, in: in, w: w, call: c, caller: caller, invite: in.IsInvite(), rr: rr, loop: loopHash(in), groups: groups, final: make(chan struct{})}
}

// run forwards the request and returns once the caller has its final
// response; branches still finishing (CANCELs, late 2xx) go on in the background.
func (f *fork) run(ctx context.Context) {
	f.p.forks.Inc()
	f.refs = 1
	defer f.release()
	if f.call != nil {
		// The call ends (its trunk slot and toll count given back) before
		// the 487 goes up, not when run sees the cancelled context below.
		// The hook runs inside the transaction's state machine, which a
		// Respond under f.mu waits for: it must not take f.mu.
		c := f.call
		chain.OnCancel(f.w, func() { c.Cancelled(0) })
	}
	f.startGroup()
	select {
	case <-f.final:
	case <-ctx.Done():
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, chain.ErrCanceled):
			f.callerCancelled()
		case errors.Is(cause, chain.ErrShutdown):
			f.shutdown()
		}
		<-f.final
	}
}

// release drops one reference; the last one ends the fork.
func (f *fork) release() {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	f.mu.Unlock()
	if last {
		f.p.forks.Dec()
	}
}

// startGroup forwards to every target of the current group at once.
func (f *fork) startGroup() {
	f.mu.Lock()
	gi := f.gi
	targets := f.groups[gi]
	f.branches = make([]*branch, len(targets))
	f.pending = len(targets)
	f.timedOut = false
	f.groupCode = 0
	for i := range targets {
		f.branches[i] = &branch{giveUp: make(chan struct{})}
	}
	bs := f.branches
	f.started += len(targets)
	if f.call != nil {
		f.call.SetBranches(f.started)
	}
	f.mu.Unlock()

	for i, t := range targets {
		if t.push != nil {
			f.wake(bs[i], t)
			continue
		}
		f.send(bs[i], t)
	}
	if f.invite {
		t := f.p.timers.AfterFunc(f.p.cfg.TimerC, func() { f.onTimerC(gi) })
		f.mu.Lock()
		if f.timerC != nil {
			f.timerC.Stop() // the previous group's
		}
		f.timerC = t
		f.mu.Unlock()
	}
}

// send forwards the request to one target as branch b.
func (f *fork) send(b *branch, t target) {
	req, err := f.p.prepare(f.in, t, f.rr, f.loop)
	b.browser = t.browser || anchoring.WebSocket(t.transport)
	var tx sip.ClientTransaction
	if err == nil {
		err = f.branchOffer(b, req, t)
	}
	if err == nil {
		f.sending(req)
		// Over UDP nothing is dialled: no context with a timer to bound it
		// (as Server.Write; 4 allocations and a runtime timer per branch).
		ctx, cancel := context.Background(), func() {}
		if !strings.EqualFold(req.Transport(), "UDP") {
			ctx, cancel = context.WithTimeout(ctx, dialTimeout)
		}
		if t.flow {
			ctx = transport.ExistingOnly(ctx) // a phone's connection is never dialled again
		}
		tx, err = f.p.cfg.Sender.Request(ctx, req)
		cancel()
	}
	if err != nil {
		f.p.log.Info("branch not sent", "call_id", f.in.CallID().Value(), "target", t.uri.String(), "dest", t.dest, "error", err)
		f.mu.Lock()
		f.settle(b, 480)
		f.mu.Unlock()
		return
	}
	f.p.branches.Inc()
	if t.gateway != nil && f.call != nil {
		f.call.SetRoute("", "", t.trunk, t.gateway.Transport+":"+t.gateway.Addr.String())
	}
	f.mu.Lock()
	b.req, b.tx, b.trunk, b.gateway = req, tx, t.trunk, t.gateway
	f.refs++
	if late := b.cancel && b.wait != nil; late {
		// Cancelled while the woken app's request was on its way.
		b.cancel = false
		f.cancelBranch(b)
	}
	f.mu.Unlock()
	if f.invite {
		tx.OnRetransmission(func(res *sip.Response) { f.onRetransmission(b, res) })
	}
	f.p.cfg.Pool.Go(func() { f.watch(b) })
}

// wake holds branch b for a sleeping app (RFC 8599): a push goes to its
// device, and the request goes to the binding the woken app registers,
// if it does within push.wait; otherwise the branch ends in 480.
func (f *fork) wake(b *branch, t target) {
	n := push.Notification{CallID: f.in.CallID().Value(), From: f.in.From().Address.String(),
		To: f.in.To().Address.String(), Method: string(f.in.Method)}
	f.mu.Lock()
	if b.done { // cancelled or answered elsewhere already
		f.mu.Unlock()
		return
	}
	b.wait = f.p.cfg.Push.Wake(t.aor, *t.push, n)
	f.refs++
	f.mu.Unlock()
	if f.call != nil {
		f.call.Pushed()
	}
	go func() {
		defer f.release()
		nb, ok := <-b.wait.C()
		f.mu.Lock()
		if !ok || b.done || f.sent != 0 {
			f.settle(b, 480) // nobody woke (or it is too late: no effect)
			f.mu.Unlock()
			return
		}
		b.woken = true
		f.mu.Unlock()
		if f.call != nil {
			f.call.Woken(time.Since(b.wait.Sent()))
		}
		woken, skip, err := f.p.reach(context.Background(), nb)
		if err != nil || skip {
			f.mu.Lock()
			f.settle(b, 480)
			f.mu.Unlock()
			return
		}
		f.send(b, woken)
	}()
}

// watch passes a branch's responses to the fork until its final one.
func (f *fork) watch(b *branch) {
	defer func() {
		f.mu.Lock()
		b.giveUpTimer.Stop() // answered in time: no wait left pending
		f.mu.Unlock()
		f.release()
	}()
	for {
		select {
		case res := <-b.tx.Responses():
			if err := f.answer(b, res); err != nil {
				f.endLateOffer(b, res, err)
				if res.StatusCode >= 200 {
					return
				}
				continue // a cancelled 18x's branch: its final response still comes
			}
			f.onResponse(b, res)
			if res.StatusCode >= 200 {
				return
			}
		case <-b.tx.Done():
			code := 408
			if errors.Is(b.tx.Err(), sip.ErrTransactionTransport) {
				code = 480 // the contact cannot be reached
			}
			f.mu.Lock()
			f.settle(b, code)
			f.mu.Unlock()
			return
		case <-b.giveUp:
			b.tx.Terminate()
			f.mu.Lock()
			f.settle(b, 408)
			f.mu.Unlock()
			return
		}
	}
}

func (f *fork) onResponse(b *branch, res *sip.Response) {
	f.mu.Lock()
	defer f.mu.Unlock()
	code := res.StatusCode
	if code < 200 {
		b.provisional = true
		if b.cancel && !b.cancelSent {
			f.sendCancel(b)
		}
		if code > 100 && f.sent == 0 {
			if code >= 180 {
				f.rang = true
			}
			f.relay(res)
		}
		return
	}
	if code < 300 {
		f.settleDone(b)
		switch {
		case f.sent == 0:
			// The call is answered before the caller hears of it: its
			// ACK and BYE may come back at once, on other goroutines.
			if f.call != nil {
				// A trunk call takes one of the trunk's call slots until
				// the call ends, whichever way (sip/call).
				trunk := f.caller.Trunk
				if trunk == "" {
					trunk = b.trunk
				}
				if b.woken {
					f.p.cfg.Push.Answered()
				}
				caller, callee, ok := call.Sides(f.in, b.req, res, f.p.ours)
				callee.Shown = f.p.shownContact(res)
				f.call.Answered(call.Answer{Code: code, Reason: res.Reason, Contact: b.req.Recipient.String(),
					Trunk: trunk, Caller: caller, Callee: callee, Dialog: ok})
			}
			f.relay(res)
			f.sent = code
			f.done()
			f.cancelPending()
			f.dropLostBranches(b)
			f.dropLostEarly(res) // prack_fork.go
		case f.invite && f.sent < 300:
			f.relay(res) // every 2xx to an INVITE goes up (§16.7 step 5)
		case f.invite:
			// The caller already has a failure (timer C, CANCEL): this
			// answer cannot become a call. End it as a UAC would.
			if caller, callee, ok := call.Sides(f.in, b.req, res, f.p.ours); ok {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), cancelWait)
					defer cancel()
					f.p.cfg.UAC.EndLate(ctx, f.in.CallID().Value(), caller, callee, b.req.CSeq().SeqNo)
				}()
			}
		}
		return
	}
	if b.done {
		return // answer to our CANCEL after timer C: the outcome is already set
	}
	if code == 503 && b.gateway != nil {
		// A gateway out of service for a while: no new calls to it until then.
		if h := res.GetHeader("Retry-After"); h != nil {
			if d, ok := trunks.RetryAfter(h.Value()); ok {
				f.p.cfg.Trunks.Unavailable(*b.gateway, d, time.Now())
			}
		}
	}
	f.consider(res)
	if code >= 600 {
		f.stop = true
		f.cancelPending()
	}
	f.settleDone(b)
	f.maybeFinish()
}

// settle gives a branch a synthetic final outcome (timeout, unreachable).
func (f *fork) settle(b *branch, code int) {
	if b.done {
		return
	}
	f.note(code)
	f.settleDone(b)
	f.maybeFinish()
}

// note keeps the best synthetic outcome.
func (f *fork) note(code int) {
	if f.bestCode == 0 || rank(code) < rank(f.bestCode) {
		f.bestCode = code
	}
}

func (f *fork) settleDone(b *branch) {
	if b.done {
		return
	}
	b.done = true
	for _, x := range f.branches {
		if x == b {
			f.pending--
		}
	}
}

// consider keeps the best final response so far.
func (f *fork) consider(res *sip.Response) {
	code := res.StatusCode
	if code == 401 || code == 407 {
		for _, h := range res.Headers() {
			if strings.EqualFold(h.Name(), "WWW-Authenticate") || strings.EqualFold(h.Name(), "Proxy-Authenticate") {
				f.challenge = append(f.challenge, sip.HeaderClone(h))
			}
		}
	}
	if f.best == nil || rank(code) < rank(f.best.StatusCode) {
		f.best = res
	}
	if f.groupCode == 0 || rank(code) < rank(f.groupCode) {
		f.groupCode = code
	}
}

// maybeFinish moves to the next group, or answers the caller, once every
// branch of the current group is done.
func (f *fork) maybeFinish() {
	if f.sent != 0 || f.pending > 0 {
		return
	}
	if !f.stop && !f.cancelled && f.gi+1 < len(f.groups) && (!f.trunk && !f.groups[f.gi+1][0].fallback || failover(f.groupCode)) {
		f.gi++
		go f.startGroup()
		return
	}
	var res *sip.Response
	if f.best != nil && (f.bestCode == 0 || rank(f.best.StatusCode) <= rank(f.bestCode)) {
		res = f.best.Clone()
		res.RemoveHeader("Via")
		switch res.StatusCode {
		case 503:
			// §16.7 step 6: a 503 would tell the caller that this proxy is
			// overloaded; what failed is downstream.
			res.StatusCode, res.Reason = 500, "Server Internal Error"
		case 430:
			// A flow on another node is gone (RFC 5626 §5.3): for the
			// caller, the callee is not reachable now.
			res.StatusCode, res.Reason = 480, "Temporarily Unavailable"
		}
		if res.StatusCode == 401 || res.StatusCode == 407 {
			for _, h := range chain.Headers(res, "WWW-Authenticate") {
				res.RemoveHeader(h.Name())
			}
			for _, h := range chain.Headers(res, "Proxy-Authenticate") {
				res.RemoveHeader(h.Name())
			}
			for _, h := range f.challenge {
				res.AppendHeader(h)
			}
		}
	} else {
		if f.holder {
			f.unavailable("Service Unavailable: The Call's Node Is Unreachable", holderRetryAfter)
			return
		}
		code, reason := f.bestCode, "Request Timeout"
		switch {
		case code == 408 && f.rang && f.timedOut:
			code, reason = 480, "No Answer" // it rang, nobody answered
		case code == 0 || code == 480:
			code, reason = 480, "Temporarily Unavailable"
		}
		res = reply.New(f.in, code, reason)
	}
	f.sent = res.StatusCode
	f.done()
	_ = f.w.Respond(res)
	if f.call != nil {
		f.call.Failed(res.StatusCode, res.Reason, f.timedOut, f.started)
	}
}

// done closes final once the caller has its final response; f.mu held.
func (f *fork) done() {
	close(f.final)
	if f.timerC != nil {
		f.timerC.Stop()
	}
}

// failover: an outcome another gateway, or another flow of the same
// device, may do better than: none (timeout, unreachable), 408, 430 Flow
// Failed (RFC 5626 §5.3), 5xx.
func failover(code int) bool {
	return code == 0 || code == 408 || code == 430 || code >= 500 && code < 600
}

// relay sends a branch's response to the caller without our Via; a dialog
// Contact gets the NAT alias of where the response came from.
func (f *fork) relay(res *sip.Response) {
	up := relayCopy(res)
	up.RemoveHeader("Via")
	if f.cseq != 0 && f.cseq != f.in.CSeq().SeqNo {
		setCSeq(up, f.in.CSeq().SeqNo) // the CSeq its sender used
	}
	for up.RemoveHeader("P-Access-Network-Info") { // RFC 7315 §4.4, as for requests
	}
	refresh := targetRefresh(f.in)
	if (f.rr || refresh) && res.StatusCode > 100 && res.StatusCode < 300 {
		if c := up.Contact(); c != nil {
			if refresh && f.dialog != nil && res.StatusCode >= 200 {
				// The answering side's own target refresh.
				f.dialog.Moved(f.in.To().Params.GetOr("tag", ""), c.Address.String(), res.Source(), res.Transport())
			}
			f.p.markContact(c, res, f.in.CallID().Value())
			if refresh && f.dialog != nil && res.StatusCode >= 200 {
				f.dialog.Shown(f.in.To().Params.GetOr("tag", ""), c.Address.String())
			}
		}
	}
	if f.dialog != nil && res.StatusCode >= 200 && res.StatusCode < 300 {
		// What the in-dialog request and its 2xx changed (a target
		// refresh, the SDP, a delayed offer) is in the store before the
		// 2xx goes on (call.AwaitSaved): a node that dies then leaves
		// the dialog as the phones have it to the next one.
		f.dialog.AwaitSaved()
	}
	_ = f.w.Respond(up)
}

// answer anchors an SDP answer (a 18x or 2xx) before it is relayed; on
// failure the answer goes up as it is and media flows end to end. For an
// INVITE without SDP it anchors the 2xx's offer instead (late.go); an
// error: that 2xx must not go up.
func (f *fork) answer(b *branch, res *sip.Response) error {
	if f.late {
		return f.lateOffer(b, res)
	}
	if !f.anchored || res.StatusCode <= 100 || res.StatusCode >= 300 {
		return nil
	}
	f.mu.Lock()
	stale := res.StatusCode < 200 && f.sent != 0
	f.mu.Unlock()
	if stale {
		// A 18x of a branch that lost goes nowhere: its answer would take
		// the anchor's leg of the branch that won (or was deleted with
		// its branch, dropLostBranches).
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	body := f.noteAnswer(res) // before the anchor rewrites it
	if err := f.p.cfg.Media.Answer(ctx, f.currentAnchor(), f.in, res, b.media); err != nil {
		if f.reoffer(ctx, res, body, err) {
			return nil
		}
		f.p.log.Warn("SDP answer not anchored", "call_id", res.CallID().Value(), "error", err)
	}
	return nil
}

func (f *fork) onRetransmission(b *branch, res *sip.Response) {
	if f.answer(b, res) != nil {
		return // a 2xx sori ended (late.go)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sent >= 200 && f.sent < 300 {
		f.relay(res)
	}
}

// onTimerC ends the ringing of group gi: no answer in time.
func (f *fork) onTimerC(gi int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sent != 0 || f.gi != gi || f.pending == 0 {
		return
	}
	f.timedOut = true
	for _, b := range f.branches {
		if !b.done {
			f.cancelBranch(b)
			f.settleDone(b)
		}
	}
	f.note(408)
	f.maybeFinish()
}

// callerCancelled: the caller's CANCEL matched; the transaction layer
// answered it 200 and its INVITE 487 (right after this, from the CANCEL
// hook), so only the branches are left to cancel.
func (f *fork) callerCancelled() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sent != 0 {
		return
	}
	f.cancelled = true
	f.sent = 487
	f.done()
	f.cancelPending()
	if f.call != nil {
		f.call.Cancelled(f.started)
	}
}

// shutdown ends a fork still waiting when sori stops: its branches are
// cancelled (held push waits end) and the caller gets 503 with
// Retry-After, so it can try another node at once.
func (f *fork) shutdown() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sent != 0 {
		return
	}
	f.unavailable("Service Unavailable", "5")
}

// unavailable answers the caller 503 reason with Retry-After (seconds),
// cancels the branches still pending and records the call as failed;
// with f.mu held and nothing sent yet.
func (f *fork) unavailable(reason, retryAfter string) {
	f.stop = true
	res := reply.New(f.in, 503, reason)
	res.AppendHeader(sip.NewHeader("Retry-After", retryAfter))
	f.sent = 503
	f.done()
	_ = f.w.Respond(res)
	f.cancelPending()
	if f.call != nil {
		f.call.Failed(503, reason, false, f.started)
	}
}

// cancelPending cancels every branch still waiting for a final response.
func (f *fork) cancelPending() {
	for _, b := range f.branches {
		if !b.done {
			f.cancelBranch(b)
		}
	}
}

func (f *fork) cancelBranch(b *branch) {
	if b.wait != nil && b.tx == nil {
		if !b.woken {
			b.wait.Stop() // its app will not get the request; the branch ends
		} else {
			b.cancel = true // its request is on its way: cancelled once out (send)
		}
		return
	}
	if !f.invite || b.tx == nil || b.cancel {
		return
	}
	b.cancel = true
	if b.provisional {
		f.sendCancel(b)
	}
	// RFC 3261 §9.1: CANCEL only after a provisional response; either way
	// the branch gets 64*T1 to finish before it is abandoned.
	b.giveUpTimer = f.p.timers.AfterFunc(cancelWait, func() { b.giveUpOnce.Do(func() { close(b.giveUp) }) })
}

// sendCancel sends CANCEL for a branch (sip/uac builds it from the INVITE).
func (f *fork) sendCancel(b *branch) {
	b.cancelSent = true
	invite := b.req
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), cancelWait)
		defer cancel()
		f.p.cfg.UAC.Cancel(ctx, invite)
	}()
}
