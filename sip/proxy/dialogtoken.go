package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// A Record-Route sori writes carries a token bound to the dialog's Call-ID
// (an HMAC with the dialog secret, which every node shares with
// sip.auth_secret). An in-dialog request is forwarded only when the Route
// it reached sori by carries a valid token: only dialogs sori itself set
// up are relayed, and a request that merely names sori in a Route cannot
// make it send to an address of the sender's choosing. The check needs no
// state, so it survives restarts and works on every node.

const tokenParam = "sd"

// dialogToken is the token for a dialog with callID.
func (p *Proxy) dialogToken(callID string) string {
	m := hmac.New(sha256.New, p.secret)
	m.Write([]byte(callID))
	return strings.ToLower(b32.EncodeToString(m.Sum(nil)[:10]))
}

// ourDialog reports whether one of the routes sori was reached by (its
// own Route entries, popped) carries the token of req's Call-ID.
func (p *Proxy) ourDialog(req *sip.Request, popped []sip.Uri) bool {
	if req.CallID() == nil {
		return false
	}
	want := p.dialogToken(req.CallID().Value())
	for _, u := range popped {
		if v, ok := u.UriParams.Get(tokenParam); ok && hmac.Equal([]byte(v), []byte(want)) {
			return true
		}
	}
	return false
}
