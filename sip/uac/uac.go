// Package uac sends the requests sori originates itself, as a user agent
// client: BYE to end a call (media or dialog timeout), ACK and BYE for a
// 2xx that came too late, CANCEL for a fork's branch, OPTIONS to carrier
// gateways, REGISTER to carriers. Requests go out through sori's own
// transport and transaction layers (sip/server) by way of sipgo's Client,
// whose Do and DoDigestAuth wait for the final response and answer a
// digest challenge.
package uac

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/alias"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/nexthop"
)

// Sender puts requests on the wire through sori's own sockets (sip/server).
type Sender interface {
	// Request sends req in a new client transaction.
	Request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error)
	// Write sends req without a transaction (ACK for a 2xx).
	Write(req *sip.Request) error
	// SentBy is the host and port sori writes in Via for transport.
	SentBy(transport string) (string, int, error)
}

// BranchPrefix starts the Via branch of every request sori sends: the
// magic cookie and "sR" (sip/proxy tells its own Vias by it).
const BranchPrefix = sip.RFC3261BranchMagicCookie + "sR"

// sendTimeout bounds opening a connection for a request.
const sendTimeout = 5 * time.Second

// UAC originates requests.
type UAC struct {
	sender Sender
	domain string // sori's SIP domain, in the From of OPTIONS pings
	ua     *sipgo.UserAgent
	log    *slog.Logger
}

// New returns a UAC sending with s.
func New(s Sender, domain string, log *slog.Logger) (*UAC, error) {
	// The UserAgent's own transport and transaction layers are never used:
	// every Client here sends through s (TxRequester).
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("sori"), sipgo.WithUserAgentHostname(domain))
	if err != nil {
		return nil, fmt.Errorf("uac: %w", err)
	}
	return &UAC{sender: s, domain: domain, ua: ua, log: log}, nil
}

// client is a sipgo Client that sends through sori's transaction layer,
// writing host:port in the Via of the requests it re-sends (digest).
func (u *UAC) client(transport string) (*sipgo.Client, error) {
	host, port, err := u.sender.SentBy(transport)
	if err != nil {
		return nil, err
	}
	c, err := sipgo.NewClient(u.ua, sipgo.WithClientHostname(host), sipgo.WithClientPort(port), sipgo.WithClientNAT())
	if err != nil {
		return nil, err
	}
	c.TxRequester = requester{u.sender}
	return c, nil
}

// requester bounds how long opening the connection may take.
type requester struct{ s Sender }

func (r requester) Request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	dctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	return r.s.Request(dctx, req)
}

// built tells sipgo's Client the request is complete as it is.
func built(*sipgo.Client, *sip.Request) error { return nil }

// Do sends req (complete, with its Via) and returns its final response.
func (u *UAC) Do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	c, err := u.client(req.Transport())
	if err != nil {
		return nil, err
	}
	return final(c.Do(ctx, req, built))
}

// errNoFinal: the transaction ended without a final response and
// without an error. sipgo's ClientTx.Terminate closes Done before it
// sets Err, so Client.Do can return (nil, nil) when a transaction is
// terminated as it waits (sori's shutdown cancels them): a BYE sent
// then dereferenced the nil response and crashed sori
// (e2e_mutate_test.go found it).
var errNoFinal = errors.New("transaction ended without a final response")

// final is sipgo's Client.Do result, never (nil, nil).
func final(res *sip.Response, err error) (*sip.Response, error) {
	if res == nil && err == nil {
		return nil, errNoFinal
	}
	return res, err
}

// Request describes a request sori sends on its own behalf.
type Request struct {
	Method          sip.RequestMethod
	URI             sip.Uri
	Transport, Dest string // UDP or TCP; ip:port the request goes to
	Route           []sip.Uri
	From, To        sip.Uri
	FromTag, ToTag  string // ToTag empty: none
	CallID          string
	CSeq            uint32
}

// Build makes the request: our Via with a fresh branch and rport, the
// route, From/To, Call-ID, CSeq, Max-Forwards; no body.
func (u *UAC) Build(o Request) (*sip.Request, error) {
	host, port, err := u.sender.SentBy(o.Transport)
	if err != nil {
		return nil, err
	}
	r := sip.NewRequest(o.Method, o.URI)
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: o.Transport, Host: host, Port: port, Params: sip.NewParams()}
	via.Params.Add("branch", BranchPrefix+"."+Token())
	via.Params.Add("rport", "")
	r.AppendHeader(via)
	for _, rt := range o.Route {
		r.AppendHeader(&sip.RouteHeader{Address: *rt.Clone()})
	}
	from := &sip.FromHeader{Address: *o.From.Clone(), Params: sip.NewParams()}
	from.Params.Add("tag", o.FromTag)
	to := &sip.ToHeader{Address: *o.To.Clone(), Params: sip.NewParams()}
	if o.ToTag != "" {
		to.Params.Add("tag", o.ToTag)
	}
	r.AppendHeader(from)
	r.AppendHeader(to)
	callID := sip.CallIDHeader(o.CallID)
	r.AppendHeader(&callID)
	r.AppendHeader(&sip.CSeqHeader{SeqNo: o.CSeq, MethodName: o.Method})
	mf := sip.MaxForwardsHeader(70)
	r.AppendHeader(&mf)
	r.SetBody(nil)
	r.SetTransport(o.Transport)
	r.SetDestination(o.Dest)
	return r, nil
}

// InDialog builds a request sori sends in a dialog to one side, as the
// other side (from): to's Contact, reached through its route set, or where
// its messages came from (the NAT alias in its Contact first).
func (u *UAC) InDialog(method sip.RequestMethod, callID string, to, from call.Side, cseq uint32) (*sip.Request, error) {
	var target, toID, fromID sip.Uri
	if err := sip.ParseUri(to.Target, &target); err != nil {
		return nil, fmt.Errorf("contact %q: %w", to.Target, err)
	}
	if err := sip.ParseUri(to.ID, &toID); err != nil {
		return nil, fmt.Errorf("to %q: %w", to.ID, err)
	}
	if err := sip.ParseUri(from.ID, &fromID); err != nil {
		return nil, fmt.Errorf("from %q: %w", from.ID, err)
	}
	route := make([]sip.Uri, 0, len(to.Route))
	for _, r := range to.Route {
		var ru sip.Uri
		if err := sip.ParseUri(r, &ru); err != nil {
			return nil, fmt.Errorf("route %q: %w", r, err)
		}
		route = append(route, ru)
	}
	dest, transport := to.Dest, strings.ToUpper(to.Transport)
	if a, ok := alias.Take(&target); ok {
		dest, transport = a.Addr, a.Transport
	}
	if len(route) > 0 {
		transport = nexthop.Transport(route[0])
		dest = nexthop.Dest(route[0], transport)
	}
	if transport == "" {
		transport = "UDP"
	}
	return u.Build(Request{Method: method, URI: target, Transport: transport, Dest: dest, Route: route,
		From: fromID, FromTag: from.Tag, To: toID, ToTag: to.Tag, CallID: callID, CSeq: cseq})
}

// Bye ends the dialog callID toward to, as from: the CSeq follows the
// highest one from has used. It returns when to has answered.
func (u *UAC) Bye(ctx context.Context, callID string, to, from call.Side) error {
	// Above what to has seen from from, sori's own re-INVITEs included.
	bye, err := u.InDialog(sip.BYE, callID, to, from, from.CSeq+from.CSeqOffset+1)
	if err != nil {
		return err
	}
	res, err := u.Do(ctx, bye)
	if err != nil {
		return err
	}
	if res.StatusCode >= 300 && res.StatusCode != 481 {
		return fmt.Errorf("BYE answered %d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// EndLate ends a dialog a callee set up with a 2xx after the caller got
// a failure: ACK the 2xx, then BYE, as the UAC the callee thinks it talks
// to. inviteCSeq is the INVITE's.
func (u *UAC) EndLate(ctx context.Context, callID string, caller, callee call.Side, inviteCSeq uint32) {
	ack, err := u.InDialog(sip.ACK, callID, callee, caller, inviteCSeq)
	if err == nil {
		err = u.sender.Write(ack)
	}
	if err != nil {
		u.log.Debug("ACK for late 2xx not sent", "call_id", callID, "error", err)
	}
	caller.CSeq = inviteCSeq
	if err := u.Bye(ctx, callID, callee, caller); err != nil {
		u.log.Debug("BYE for late 2xx", "call_id", callID, "error", err)
	}
}

// Cancel cancels a forwarded INVITE (RFC 3261 §9.1: same Request-URI,
// Call-ID, From, To, CSeq number and top Via as the INVITE, and its
// Route) and waits for the CANCEL's own answer.
func (u *UAC) Cancel(ctx context.Context, invite *sip.Request) {
	r := invite
	c := sip.NewRequest(sip.CANCEL, *r.Recipient.Clone())
	c.AppendHeader(r.Via().Clone())
	for _, h := range r.Headers() {
		if rt, ok := h.(*sip.RouteHeader); ok {
			c.AppendHeader(rt.Clone())
		}
	}
	c.AppendHeader(sip.HeaderClone(r.From()))
	c.AppendHeader(sip.HeaderClone(r.To()))
	c.AppendHeader(sip.HeaderClone(r.CallID()))
	c.AppendHeader(&sip.CSeqHeader{SeqNo: r.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.SetBody(nil)
	c.SetTransport(r.Transport())
	c.SetDestination(r.Destination())
	if _, err := u.Do(ctx, c); err != nil {
		u.log.Debug("CANCEL", "call_id", r.CallID().Value(), "error", err)
	}
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Token is a random token for branches, tags and Call-IDs.
func Token() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(b32.EncodeToString(b[:]))
}
