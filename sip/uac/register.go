package uac

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/trunks"
)

// Registration is sori registering itself to a carrier (trunks: register:
// true): REGISTER to the trunk's first gateway with the trunk's digest
// credentials, refreshed before it expires, retried after failures.
type Registration struct {
	Trunk              string
	Gateway            trunks.Gateway
	Username, Password string
	Expires            int // seconds asked for
}

// Register keeps reg registered until ctx ends. onResult is told each
// outcome (for logs and tests).
func (u *UAC) Register(ctx context.Context, reg Registration, onResult func(granted time.Duration, err error)) {
	callID := "reg-" + Token()
	var cseq uint32
	for {
		granted, err := u.registerOnce(ctx, reg, callID, &cseq)
		if onResult != nil {
			onResult(granted, err)
		}
		wait := 30 * time.Second // retry after a failure
		if err == nil {
			wait = granted * 8 / 10 // refresh before it runs out
			if granted-wait > 60*time.Second {
				wait = granted - 60*time.Second
			}
			wait = max(wait, 500*time.Millisecond)
		} else {
			u.log.Warn("registration to carrier failed", "trunk", reg.Trunk, "gateway", reg.Gateway.Addr, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// registerOnce sends REGISTER, answers one digest challenge (sipgo's
// DoDigestAuth), and returns the registration time the carrier granted.
func (u *UAC) registerOnce(ctx context.Context, reg Registration, callID string, cseq *uint32) (time.Duration, error) {
	*cseq++
	req, err := u.registerRequest(reg, callID, *cseq)
	if err != nil {
		return 0, err
	}
	c, err := u.client(reg.Gateway.Transport)
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := final(c.Do(rctx, req, built))
	if err != nil {
		return 0, err
	}
	if res.StatusCode == 401 || res.StatusCode == 407 {
		res, err = final(c.DoDigestAuth(rctx, req, res, sipgo.DigestAuth{Username: reg.Username, Password: reg.Password}))
		*cseq = req.CSeq().SeqNo // DoDigestAuth sent it with the next CSeq
		if err != nil {
			return 0, fmt.Errorf("digest: %w", err)
		}
		if res.StatusCode == 401 || res.StatusCode == 407 {
			return 0, errors.New("credentials refused")
		}
	}
	if res.StatusCode < 200 || res.StatusCode >= 300 {
		return 0, fmt.Errorf("carrier answered %d %s", res.StatusCode, res.Reason)
	}
	return grantedExpires(res, reg.Expires), nil
}

func (u *UAC) registerRequest(reg Registration, callID string, cseq uint32) (*sip.Request, error) {
	g := reg.Gateway
	host, port, err := u.sender.SentBy(g.Transport)
	if err != nil {
		return nil, err
	}
	ruri := sip.Uri{Scheme: "sip", Host: g.Addr.Addr().String(), Port: int(g.Addr.Port())}
	aor := sip.Uri{Scheme: "sip", User: reg.Username, Host: ruri.Host, Port: ruri.Port}
	req, err := u.Build(Request{Method: sip.REGISTER, URI: ruri, Transport: g.Transport, Dest: g.Addr.String(),
		From: aor, FromTag: callID, To: aor, CallID: callID, CSeq: cseq})
	if err != nil {
		return nil, err
	}
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: reg.Username, Host: host, Port: port}})
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(reg.Expires)))
	return req, nil
}

// PingContact sends a phone's contact an OPTIONS at dest (UDP, the
// address its REGISTER came from: the NAT's mapping) and returns once any
// final response came: a phone that answers at all is there (sip/natping).
func (u *UAC) PingContact(ctx context.Context, contact, dest string) error {
	var to sip.Uri
	if err := sip.ParseUri(contact, &to); err != nil {
		return fmt.Errorf("contact %q: %w", contact, err)
	}
	return u.options(ctx, to, "UDP", dest, "natping-")
}

// Ping sends a carrier gateway an OPTIONS and waits for any final
// response: a gateway that answers at all is up (as Kamailio's dispatcher
// with its default reply codes). It is the trunks' health check.
func (u *UAC) Ping(ctx context.Context, g trunks.Gateway) error {
	to := sip.Uri{Scheme: "sip", Host: g.Addr.Addr().String(), Port: int(g.Addr.Port())}
	return u.options(ctx, to, g.Transport, g.Addr.String(), "ping-")
}

// options sends an OPTIONS from sori to to at dest and waits for any
// final response.
func (u *UAC) options(ctx context.Context, to sip.Uri, transport, dest, callIDPrefix string) error {
	req, err := u.Build(Request{Method: sip.OPTIONS, URI: to, Transport: transport, Dest: dest,
		From: sip.Uri{Scheme: "sip", User: "sori", Host: u.domain}, FromTag: Token(), To: to,
		CallID: callIDPrefix + Token(), CSeq: 1})
	if err != nil {
		return err
	}
	_, err = u.Do(ctx, req)
	return err
}

// grantedExpires reads how long the carrier registered us for: the
// Contact's expires, else Expires, else what was asked.
func grantedExpires(res *sip.Response, asked int) time.Duration {
	if c := res.Contact(); c != nil {
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	return time.Duration(asked) * time.Second
}
