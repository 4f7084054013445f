package transport

import (
	"net"
	"time"

	"github.com/pion/stun/v3"
)

// SIP Outbound keepalives on UDP (RFC 5626 §4.4.2) are STUN binding
// requests (RFC 5389) sent to the SIP port; a phone learns from the answer
// that its NAT binding still holds (and, from XOR-MAPPED-ADDRESS, whether
// its public address changed). Any other STUN message is ignored.

// admitted asks the gate about c's source (a banned one gets no answer).
func (t *Transport) admitted(c Conn) bool {
	return t.opts.Gate == nil || t.opts.Gate.Admit(c.Remote().Addr(), false, time.Now()) == Pass
}

// stunKeepalive answers a STUN binding request from c; false when data is
// not STUN at all (it then goes on as SIP).
func (t *Transport) stunKeepalive(data []byte, c Conn) bool {
	if !stun.IsMessage(data) {
		return false
	}
	req := &stun.Message{Raw: append([]byte(nil), data...)}
	if err := req.Decode(); err != nil || req.Type != stun.BindingRequest {
		return true
	}
	remote := c.Remote()
	res, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IP(remote.Addr().AsSlice()), Port: int(remote.Port())}, stun.Fingerprint)
	if err != nil {
		return true
	}
	_ = c.Write(res.Raw)
	t.keepalives.WithLabelValues(c.Transport(), "stun").Inc()
	return true
}
