package transaction

import (
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// cookie marks a branch chosen by RFC 3261 rules (globally unique).
const cookie = "z9hG4bK"

// serverKey is what matches a request to a server transaction (RFC 3261
// §17.2.3): the top Via's branch and sent-by, and the request's method
// (not its CSeq method), ACK counting as the INVITE it acknowledges. as
// overrides the method (a CANCEL looks for its INVITE).
func serverKey(req *sip.Request, as sip.RequestMethod) (string, bool) {
	via := req.Via()
	if via == nil {
		return "", false
	}
	method := req.Method
	if method == sip.ACK {
		method = sip.INVITE
	}
	if as != "" {
		method = as
	}
	var b strings.Builder
	branch, _ := via.Params.Get("branch")
	if strings.HasPrefix(branch, cookie) && len(branch) > len(cookie) {
		b.Grow(len(branch) + len(via.Host) + len(method) + 10)
		b.WriteString(branch)
		b.WriteByte('|')
		b.WriteString(strings.ToLower(via.Host))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(via.Port))
		b.WriteByte('|')
		b.WriteString(string(method))
		return b.String(), true
	}
	// RFC 2543 peers: the request's identity. The To tag is left out, as
	// an ACK carries the tag of our response and its INVITE had none.
	cseq, callID, from := req.CSeq(), req.CallID(), req.From()
	if cseq == nil || callID == nil || from == nil {
		return "", false
	}
	b.WriteString("2543|")
	b.WriteString(req.Recipient.String())
	b.WriteByte('|')
	b.WriteString(from.Params.GetOr("tag", ""))
	b.WriteByte('|')
	b.WriteString(callID.Value())
	b.WriteByte('|')
	b.WriteString(strconv.FormatUint(uint64(cseq.SeqNo), 10))
	b.WriteByte('|')
	b.WriteString(strings.ToLower(via.Host))
	b.WriteByte(':')
	b.WriteString(strconv.Itoa(via.Port))
	b.WriteByte('|')
	b.WriteString(branch)
	b.WriteByte('|')
	b.WriteString(string(method))
	return b.String(), true
}

// clientKey is what matches a response to the client transaction that sent
// its request (RFC 3261 §17.1.3): our branch and the CSeq method.
func clientKey(m sip.Message) (string, bool) {
	via, cseq := m.Via(), m.CSeq()
	if via == nil || cseq == nil {
		return "", false
	}
	branch, _ := via.Params.Get("branch")
	if branch == "" {
		return "", false
	}
	method := cseq.MethodName
	if method == sip.ACK {
		method = sip.INVITE
	}
	return branch + "|" + string(method), true
}
