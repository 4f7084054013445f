package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	client "github.com/icholy/digest"

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

// RegisterTrunk keeps reg registered until ctx ends. onResult is told each
// outcome (for logs and tests).
func (p *Proxy) RegisterTrunk(ctx context.Context, reg Registration, onResult func(granted time.Duration, err error)) {
	callID := "reg-" + randomToken()
	var cseq uint32
	for {
		granted, err := p.registerOnce(ctx, reg, callID, &cseq)
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
			p.log.Warn("registration to carrier failed", "trunk", reg.Trunk, "gateway", reg.Gateway.Addr, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// registerOnce sends REGISTER, answers one digest challenge, and returns
// the registration time the carrier granted.
func (p *Proxy) registerOnce(ctx context.Context, reg Registration, callID string, cseq *uint32) (time.Duration, error) {
	var auth string
	for attempt := 0; attempt < 2; attempt++ {
		*cseq++
		req, err := p.registerRequest(reg, callID, *cseq, auth)
		if err != nil {
			return 0, err
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := p.final(rctx, req)
		cancel()
		if err != nil {
			return 0, err
		}
		switch {
		case res.StatusCode >= 200 && res.StatusCode < 300:
			return grantedExpires(res, reg.Expires), nil
		case (res.StatusCode == 401 || res.StatusCode == 407) && attempt == 0:
			hdr := "WWW-Authenticate"
			cred := "Authorization"
			if res.StatusCode == 407 {
				hdr, cred = "Proxy-Authenticate", "Proxy-Authorization"
			}
			h := res.GetHeader(hdr)
			if h == nil {
				return 0, fmt.Errorf("%d without %s", res.StatusCode, hdr)
			}
			ch, err := client.ParseChallenge(h.Value())
			if err != nil {
				return 0, fmt.Errorf("challenge: %w", err)
			}
			c, err := client.Digest(ch, client.Options{Method: "REGISTER", URI: req.Recipient.String(), Username: reg.Username, Password: reg.Password, Count: 1})
			if err != nil {
				return 0, fmt.Errorf("digest: %w", err)
			}
			auth = cred + ": " + c.String()
		default:
			return 0, fmt.Errorf("carrier answered %d %s", res.StatusCode, res.Reason)
		}
	}
	return 0, errors.New("credentials refused")
}

func (p *Proxy) registerRequest(reg Registration, callID string, cseq uint32, auth string) (*sip.Request, error) {
	g := reg.Gateway
	host, port, err := p.sentBy(g.Transport)
	if err != nil {
		return nil, err
	}
	ruri := sip.Uri{Scheme: "sip", Host: g.Addr.Addr().String(), Port: int(g.Addr.Port())}
	aor := sip.Uri{Scheme: "sip", User: reg.Username, Host: ruri.Host, Port: ruri.Port}
	req, err := p.originate(originated{method: sip.REGISTER, ruri: ruri, transport: g.Transport, dest: g.Addr.String(),
		from: aor, fromTag: callID, to: aor, callID: callID, cseq: cseq})
	if err != nil {
		return nil, err
	}
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: reg.Username, Host: host, Port: port}})
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(reg.Expires)))
	if auth != "" {
		name, value, _ := strings.Cut(auth, ": ")
		req.AppendHeader(sip.NewHeader(name, value))
	}
	return req, nil
}

// final sends a request sori originates and returns its final response.
func (p *Proxy) final(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := p.sender.Request(ctx, req)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode >= 200 {
				return res, nil
			}
		case <-tx.Done():
			if err := tx.Err(); err != nil {
				return nil, err
			}
			return nil, errors.New("no answer")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
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
