// Package reply builds the responses sori writes itself and their bytes on
// the wire. New is sipgo's NewResponseFromRequest without the deep copies:
// per REGISTER sori answers twice (401, then 200), and sipgo's constructor
// and serialiser were about a fifth of sori's CPU at 20 000 REGISTER/s
// (BenchmarkNew, BenchmarkBytes: the figures are in reply_test.go).
package reply

import (
	"bytes"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// New is the response code/reason to req (RFC 3261 §8.2.6): the request's
// Via headers (the top one with received/rport filled in, RFC 3581), From,
// To (with a tag, except on 100), Call-ID and CSeq, and Record-Route where
// §12.1.1 wants it. From, Call-ID and CSeq are the request's own header
// values, shared, not copied: nothing changes them once parsed. Via and To
// are copies, as the response's are changed.
func New(req *sip.Request, code int, reason string) *sip.Response {
	res := sip.NewResponse(code, reason)
	res.SipVersion = req.SipVersion
	// RFC 3261 §20 Table 3, §12.1.1: Record-Route in 18x/2xx to dialog-making requests.
	dialogResponse := code >= 180 && code < 190 || code >= 200 && code < 300 || req.IsInvite() && code > 100 && code < 200
	if req.Method != sip.REGISTER && !req.IsAck() && dialogResponse {
		for _, h := range req.Headers() {
			if strings.EqualFold(h.Name(), "Record-Route") {
				res.AppendHeader(sip.HeaderClone(h))
			}
		}
	}
	top := true
	for _, h := range req.Headers() {
		via, ok := h.(*sip.ViaHeader)
		if !ok {
			continue
		}
		if top {
			top = false
			if v, ok := via.Params.Get("rport"); ok && v == "" {
				if host, port, err := net.SplitHostPort(req.Source()); err == nil {
					// Via.Clone with room for received: its params
					// slice grew on the Add. With the To below,
					// 2026-12-04: BenchmarkNew 10 → 9 allocs/op, 1111 →
					// 919 B/op; BenchmarkRegisterMemory 75 → 74 (README
					// "Performance").
					p := make(sip.HeaderParams, len(via.Params), len(via.Params)+1)
					copy(p, via.Params)
					p.Add("rport", port)
					p.Add("received", host)
					c := &sip.ViaHeader{ProtocolName: via.ProtocolName, ProtocolVersion: via.ProtocolVersion,
						Transport: via.Transport, Host: via.Host, Params: p}
					if via.Port > 0 {
						c.Port = via.Port
					}
					res.AppendHeader(c)
					continue
				}
			}
		}
		res.AppendHeader(via.Clone())
	}
	if h := req.From(); h != nil {
		res.AppendHeader(h)
	}
	if h := req.To(); h != nil {
		if code != 100 && !h.Params.Has("tag") {
			// HeaderClone, then the tag, in one params slice of the
			// right size (it was a clone, then NewParams or a growth;
			// the figures are at the top Via above).
			p := make(sip.HeaderParams, len(h.Params), len(h.Params)+1)
			copy(p, h.Params)
			p.Add("tag", Tag())
			res.AppendHeader(&sip.ToHeader{DisplayName: h.DisplayName, Address: *h.Address.Clone(), Params: p})
		} else {
			res.AppendHeader(sip.HeaderClone(h))
		}
	}
	if h := req.CallID(); h != nil {
		res.AppendHeader(h)
	}
	if h := req.CSeq(); h != nil {
		res.AppendHeader(h)
	}
	if code == 100 {
		if h := req.GetHeader("Timestamp"); h != nil {
			res.AppendHeader(sip.HeaderClone(h))
		}
	}
	res.SetBody(nil) // Content-Length: 0
	res.SetTransport(req.Transport())
	res.SetDestination(req.Source())
	return res
}

// Tag is a new To tag: 64 random bits (RFC 3261 §19.3 asks for at least
// 32), from the runtime's ChaCha8 generator instead of a UUID from
// crypto/rand, which cost a system call's worth of time per response.
func Tag() string {
	var b [16]byte
	return string(strconv.AppendUint(b[:0], rand.Uint64(), 36))
}

var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Bytes is res as sent: written into a reused buffer and copied out at its
// exact size (sipgo's String grows a builder from empty, then the caller
// copies it again into a []byte).
func Bytes(res *sip.Response) []byte {
	b := buffers.Get().(*bytes.Buffer)
	b.Reset()
	res.StringWrite(b)
	out := bytes.Clone(b.Bytes())
	if b.Cap() <= 64<<10 {
		buffers.Put(b)
	}
	return out
}
