package proxy

import "github.com/emiago/sipgo/sip"

// originated describes a request sori sends on its own behalf: a BYE that
// ends a call, an OPTIONS to a gateway, a REGISTER to a carrier.
type originated struct {
	method          sip.RequestMethod
	ruri            sip.Uri
	transport, dest string // UDP or TCP; ip:port the request goes to
	route           []sip.Uri
	from, to        sip.Uri
	fromTag, toTag  string // toTag empty: none
	callID          string
	cseq            uint32
}

// originate builds the request: our Via with a fresh branch and rport,
// the route, From/To, Call-ID, CSeq, Max-Forwards; no body.
func (p *Proxy) originate(o originated) (*sip.Request, error) {
	host, port, err := p.sentBy(o.transport)
	if err != nil {
		return nil, err
	}
	r := sip.NewRequest(o.method, o.ruri)
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: o.transport, Host: host, Port: port, Params: sip.NewParams()}
	via.Params.Add("branch", branchPrefix+"."+randomToken())
	via.Params.Add("rport", "")
	r.AppendHeader(via)
	for _, u := range o.route {
		r.AppendHeader(&sip.RouteHeader{Address: *u.Clone()})
	}
	from := &sip.FromHeader{Address: *o.from.Clone(), Params: sip.NewParams()}
	from.Params.Add("tag", o.fromTag)
	to := &sip.ToHeader{Address: *o.to.Clone(), Params: sip.NewParams()}
	if o.toTag != "" {
		to.Params.Add("tag", o.toTag)
	}
	r.AppendHeader(from)
	r.AppendHeader(to)
	callID := sip.CallIDHeader(o.callID)
	r.AppendHeader(&callID)
	r.AppendHeader(&sip.CSeqHeader{SeqNo: o.cseq, MethodName: o.method})
	mf := sip.MaxForwardsHeader(70)
	r.AppendHeader(&mf)
	r.SetBody(nil)
	r.SetTransport(o.transport)
	r.SetDestination(o.dest)
	return r, nil
}
