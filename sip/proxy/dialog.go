package proxy

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/calls"
)

// A dialog is what sori must know to end an answered call itself, as
// Kamailio's dialog module does for dlg_end_dlg: when the anchor reports
// that the media stopped, both phones get a BYE from sori.

// end is how sori reaches one side of a dialog.
type end struct {
	target    sip.Uri   // its Contact
	route     []sip.Uri // proxies between sori and it, nearest first
	dest      string    // ip:port used when route is empty
	transport string
	id        sip.Uri // its address-of-record as the dialog names it
	tag       string
	cseq      uint32 // highest CSeq it has used in the dialog
	pani      string // P-Access-Network-Info it sent (RFC 7315)
}

type dialog struct {
	callID         string
	caller, callee end
	expiry         *time.Timer // stopped when the dialog is taken
}

// dialogs are the answered, anchored calls, by Call-ID.
type dialogs struct {
	mu sync.Mutex
	m  map[string]*dialog
}

// add keeps dl for ttl at most; expired is called if it is still there
// then (a call whose end sori never saw: lost BYE, no media timeout).
func (d *dialogs) add(dl *dialog, ttl time.Duration, expired func(callID string)) {
	d.mu.Lock()
	if d.m == nil {
		d.m = map[string]*dialog{}
	}
	d.m[dl.callID] = dl
	dl.expiry = time.AfterFunc(ttl, func() {
		if d.take(dl.callID) == dl {
			expired(dl.callID)
		}
	})
	d.mu.Unlock()
}

func (d *dialogs) take(callID string) *dialog {
	d.mu.Lock()
	defer d.mu.Unlock()
	dl := d.m[callID]
	delete(d.m, callID)
	if dl != nil && dl.expiry != nil {
		dl.expiry.Stop() // a call that ended holds no timer for hours
	}
	return dl
}

// seen notes the CSeq of an in-dialog request.
func (d *dialogs) seen(req *sip.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dl := d.m[req.CallID().Value()]
	if dl == nil || req.CSeq() == nil {
		return
	}
	n := req.CSeq().SeqNo
	side := &dl.callee
	if req.From().Params.GetOr("tag", "") == dl.caller.tag {
		side = &dl.caller
	}
	side.cseq = max(side.cseq, n)
}

// newDialog reads both ends of an answered INVITE: in is the caller's
// request as it reached sori, out the copy sent to the callee, res its 2xx.
func (p *Proxy) newDialog(in, out *sip.Request, res *sip.Response) *dialog {
	contact := res.Contact()
	callerContact := in.Contact()
	if contact == nil || callerContact == nil {
		return nil
	}
	// Record-Route in the 2xx: the callee's side first, then ours, then
	// the caller's side.
	var rrs []sip.Uri
	for _, h := range res.Headers() {
		if rr, ok := h.(*sip.RecordRouteHeader); ok {
			rrs = append(rrs, rr.Address)
		}
	}
	first, last := -1, -1
	for i, u := range rrs {
		if p.ours(u) {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	dl := &dialog{callID: in.CallID().Value()}
	dl.callee = end{target: *contact.Address.Clone(), dest: res.Source(), transport: out.Transport(),
		id: *res.To().Address.Clone(), tag: res.To().Params.GetOr("tag", ""), pani: pani(res)}
	dl.caller = end{target: *callerContact.Address.Clone(), dest: in.Source(), transport: in.Transport(),
		id: *in.From().Address.Clone(), tag: in.From().Params.GetOr("tag", ""), cseq: in.CSeq().SeqNo, pani: pani(in)}
	if first >= 0 {
		for i := first - 1; i >= 0; i-- {
			dl.callee.route = append(dl.callee.route, *rrs[i].Clone())
		}
		for i := last + 1; i < len(rrs); i++ {
			dl.caller.route = append(dl.caller.route, *rrs[i].Clone())
		}
	}
	return dl
}

// request builds a request sori originates in the dialog towards to, from
// the other end's identity.
func (p *Proxy) request(method sip.RequestMethod, dl *dialog, to, from *end, cseq uint32) (*sip.Request, error) {
	target := *to.target.Clone()
	dest, transport := to.dest, strings.ToUpper(to.transport)
	if a, ok := takeAlias(&target); ok {
		dest, transport = a.addr, a.transport
	}
	if len(to.route) > 0 {
		next := to.route[0]
		port := next.Port
		if port == 0 {
			port = 5060
		}
		host := next.Host
		if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
			host = ip.String()
		}
		dest, transport = net.JoinHostPort(host, strconv.Itoa(port)), "UDP"
		if t, ok := next.UriParams.Get("transport"); ok && t != "" {
			transport = strings.ToUpper(t)
		}
	}
	if transport == "" {
		transport = "UDP"
	}
	return p.originate(originated{method: method, ruri: target, transport: transport, dest: dest, route: to.route,
		from: from.id, fromTag: from.tag, to: to.id, toTag: to.tag, callID: dl.callID, cseq: cseq})
}

func pani(m sip.Message) string {
	if hs := m.GetHeaders("P-Access-Network-Info"); len(hs) > 0 {
		return hs[0].Value()
	}
	return ""
}

// classify names each side's network and hands the media quality to the
// call record.
func (p *Proxy) recordMedia(dl *dialog, media map[string]calls.MediaQuality) {
	if len(media) == 0 {
		return
	}
	for tag, q := range media {
		pani := ""
		if dl != nil {
			switch tag {
			case dl.caller.tag:
				pani = dl.caller.pani
			case dl.callee.tag:
				pani = dl.callee.pani
			}
		}
		q.Network = p.cfg.Networks.Classify(q.Address, pani)
		media[tag] = q
	}
	p.cfg.Calls.Media(dl.callID, media)
}

// MediaTimeout ends a call whose media stopped: BYE to both phones, and
// the call record says why, with the media quality the anchor reported.
func (p *Proxy) MediaTimeout(callID string, media map[string]calls.MediaQuality) {
	dl := p.dialogs.take(callID)
	if dl == nil {
		return
	}
	p.log.Info("media stopped: ending the call", "call_id", callID)
	p.recordMedia(dl, media)
	p.cfg.Calls.End(callID, calls.MediaTimeout, "media-timeout")
	p.callEnded(callID)
	for _, side := range [][2]*end{{&dl.callee, &dl.caller}, {&dl.caller, &dl.callee}} {
		bye, err := p.request(sip.BYE, dl, side[0], side[1], side[1].cseq+1)
		if err != nil {
			p.log.Warn("BYE not sent", "call_id", callID, "error", err)
			continue
		}
		go p.transact(bye)
	}
}
