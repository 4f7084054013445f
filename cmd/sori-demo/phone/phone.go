// Package phone is a small SIP phone over UDP for sori's demo traffic and
// end-to-end tests: it registers with digest authentication, calls and
// answers through sori, and sends Opus-sized RTP at 50 packets/s with RTCP
// sender and receiver reports, as a softphone does. Its access network is
// simulated in the phone itself: on its uplink it leaves out a share of the
// packets it would send (lost before the anchor) and delays the rest a
// little; on its downlink it drops a share of what reaches it and reports
// that in its RTCP receiver reports, as a phone on a lossy radio link would.
// The losses come from a seeded random source, so a test knows them.
package phone

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	digest "github.com/icholy/digest"
)

// Config describes one phone.
type Config struct {
	Server         netip.AddrPort // sori's UDP listener
	Domain         string         // sip.domain
	User, Password string
	// Addr is the phone's own address: its SIP and media sockets bind it,
	// so sori sees its media come from there (networks: prefixes).
	Addr      netip.Addr
	UserAgent string       // default "sori-demo"
	Log       *slog.Logger // default: discard
}

// Phone is one registered user agent with one SIP socket.
type Phone struct {
	cfg   Config
	conn  *net.UDPConn
	local netip.AddrPort

	mu      sync.Mutex
	waiters map[string]chan *sip.Response // client transactions by Via branch
	armed   map[string]chan *sip.Request  // INVITEs expected, by Call-ID
	dialogs map[string]*dialog            // calls up, by Call-ID
	closed  chan struct{}
	done    chan struct{}
}

// dialog is what an incoming in-dialog request needs to reach.
type dialog struct {
	ack chan struct{} // closed by the ACK of our 2xx
	bye chan struct{} // closed by the other side's BYE
	// last 2xx to the INVITE, resent for a retransmitted INVITE
	ok []byte
}

// ErrClosed is returned by a phone that was closed.
var ErrClosed = errors.New("phone closed")

// New opens the phone's SIP socket on cfg.Addr (any port).
func New(cfg Config) (*Phone, error) {
	if cfg.UserAgent == "" {
		cfg.UserAgent = "sori-demo"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(cfg.Addr, 0)))
	if err != nil {
		return nil, err
	}
	p := &Phone{cfg: cfg, conn: conn, local: conn.LocalAddr().(*net.UDPAddr).AddrPort(),
		waiters: map[string]chan *sip.Response{}, armed: map[string]chan *sip.Request{}, dialogs: map[string]*dialog{},
		closed: make(chan struct{}), done: make(chan struct{})}
	go p.read()
	return p, nil
}

// User is the phone's user name.
func (p *Phone) User() string { return p.cfg.User }

// AOR is the phone's address of record.
func (p *Phone) AOR() string { return "sip:" + p.cfg.User + "@" + p.cfg.Domain }

// Local is the address of its SIP socket.
func (p *Phone) Local() netip.AddrPort { return p.local }

// Close closes the SIP socket (without unregistering).
func (p *Phone) Close() {
	select {
	case <-p.closed:
		return
	default:
	}
	close(p.closed)
	p.conn.Close()
	<-p.done
}

func (p *Phone) read() {
	defer close(p.done)
	buf := make([]byte, 65535)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		data := buf[:n]
		if len(strings.TrimSpace(string(data))) == 0 {
			continue // a keepalive
		}
		msg, err := sip.ParseMessage(append([]byte(nil), data...))
		if err != nil {
			p.cfg.Log.Debug("unparsable SIP", "from", from, "error", err)
			continue
		}
		switch m := msg.(type) {
		case *sip.Response:
			p.onResponse(m)
		case *sip.Request:
			m.SetSource(from.String())
			p.onRequest(m, from)
		}
	}
}

func (p *Phone) onResponse(res *sip.Response) {
	via := res.Via()
	if via == nil {
		return
	}
	branch, _ := via.Params.Get("branch")
	p.mu.Lock()
	ch := p.waiters[branch]
	p.mu.Unlock()
	if ch != nil {
		select {
		case ch <- res:
		default: // a retransmitted answer nobody waits for any more
		}
	}
}

func (p *Phone) onRequest(req *sip.Request, from netip.AddrPort) {
	callID := ""
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	p.mu.Lock()
	d := p.dialogs[callID]
	armed := p.armed[callID]
	p.mu.Unlock()
	switch {
	case req.IsAck():
		if d != nil {
			closeOnce(d.ack)
		}
	case req.IsInvite():
		switch {
		case d != nil && d.ok != nil:
			p.write(d.ok, from) // our 2xx was lost
		case armed != nil:
			select {
			case armed <- req:
			default: // a retransmission while it is being answered
			}
		default:
			p.respond(req, from, 486, "Busy Here")
		}
	case req.Method == sip.BYE:
		if d == nil {
			p.respond(req, from, 481, "Call/Transaction Does Not Exist")
			return
		}
		p.respond(req, from, 200, "OK")
		closeOnce(d.bye)
	case req.Method == sip.OPTIONS:
		p.respond(req, from, 200, "OK")
	case req.Method == sip.CANCEL:
		p.respond(req, from, 481, "Call/Transaction Does Not Exist")
	default:
		p.respond(req, from, 405, "Method Not Allowed")
	}
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

func (p *Phone) respond(req *sip.Request, to netip.AddrPort, code int, reason string, extra ...string) []byte {
	return p.respondBody(req, to, code, reason, "", "", extra...)
}

// respondBody answers req; toTag is our tag (added when the request's To
// has none), body an SDP body or "".
func (p *Phone) respondBody(req *sip.Request, to netip.AddrPort, code int, reason, toTag, body string, extra ...string) []byte {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if th := res.To(); th != nil && toTag != "" {
		th.Params.Add("tag", toTag)
	}
	for _, e := range extra {
		k, v, _ := strings.Cut(e, ":")
		res.AppendHeader(sip.NewHeader(k, strings.TrimSpace(v)))
	}
	if body != "" {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody([]byte(body))
	} else {
		res.SetBody(nil)
	}
	raw := []byte(res.String())
	p.write(raw, to)
	return raw
}

func (p *Phone) write(raw []byte, to netip.AddrPort) {
	if _, err := p.conn.WriteToUDPAddrPort(raw, to); err != nil {
		p.cfg.Log.Debug("SIP send failed", "to", to, "error", err)
	}
}

func token() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// request is an outgoing request's parts.
type request struct {
	method, ruri string
	from, to     string // header values
	callID       string
	cseq         int
	headers      []string // more lines, "Name: value"
	body         string   // SDP or ""
}

func (p *Phone) build(r request) (raw, branch string) {
	branch = "z9hG4bK-" + token()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", r.method, r.ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=%s;rport\r\n", p.local, branch)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n", r.from, r.to, r.callID, r.cseq, r.method)
	for _, h := range r.headers {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "User-Agent: %s\r\n", p.cfg.UserAgent)
	if r.body != "" {
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(r.body), r.body)
	return b.String(), branch
}

// T1 is RFC 3261's round-trip estimate: the first retransmission interval.
const T1 = 500 * time.Millisecond

// transact sends a request and returns its final response, resending it
// over UDP (from T1, doubling, up to 4 s apart) until a response comes
// (any for an INVITE, a final one otherwise), for 64·T1 at most.
func (p *Phone) transact(ctx context.Context, raw, branch string, invite bool, to netip.AddrPort) (*sip.Response, error) {
	ch := make(chan *sip.Response, 8)
	p.mu.Lock()
	p.waiters[branch] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.waiters, branch)
		p.mu.Unlock()
	}()
	p.write([]byte(raw), to)
	interval := T1
	timer := time.NewTimer(interval)
	defer timer.Stop()
	resend := true
	// Timer B/F: 64·T1 without a final response ends it.
	give := time.NewTimer(64 * T1)
	defer give.Stop()
	for {
		select {
		case res := <-ch:
			if res.StatusCode >= 200 {
				return res, nil
			}
			if invite {
				resend = false // a provisional answer: the proxy has it
			}
		case <-timer.C:
			if resend {
				p.write([]byte(raw), to)
			}
			interval = min(2*interval, 4*time.Second)
			timer.Reset(interval)
		case <-give.C:
			return nil, fmt.Errorf("%s: no final response", strings.Fields(raw)[0])
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.closed:
			return nil, ErrClosed
		}
	}
}

// Register registers the phone's contact for expires, answering sori's
// digest challenge.
func (p *Phone) Register(ctx context.Context, expires time.Duration) error {
	callID := "reg-" + token() + "@" + p.cfg.Addr.String()
	fromTag := token()
	r := request{method: "REGISTER", ruri: "sip:" + p.cfg.Domain, from: "<" + p.AOR() + ">;tag=" + fromTag, to: "<" + p.AOR() + ">",
		callID: callID, cseq: 1, headers: []string{
			"Contact: <sip:" + p.cfg.User + "@" + p.local.String() + ">",
			"Expires: " + strconv.Itoa(int(expires.Seconds())),
		}}
	for attempt := 0; ; attempt++ {
		raw, branch := p.build(r)
		res, err := p.transact(ctx, raw, branch, false, p.cfg.Server)
		if err != nil {
			return fmt.Errorf("REGISTER %s: %w", p.cfg.User, err)
		}
		switch {
		case res.StatusCode == 200:
			return nil
		case res.StatusCode == 401 && attempt < 2:
			cred, err := p.answer(res, "WWW-Authenticate", "REGISTER", r.ruri)
			if err != nil {
				return err
			}
			r.cseq++
			r.headers = append(r.headers[:2:2], "Authorization: "+cred)
		default:
			return fmt.Errorf("REGISTER %s: %d %s", p.cfg.User, res.StatusCode, res.Reason)
		}
	}
}

// answer computes the credentials for a 401 or 407.
func (p *Phone) answer(res *sip.Response, header, method, uri string) (string, error) {
	h := res.GetHeader(header)
	if h == nil {
		return "", fmt.Errorf("%d without %s", res.StatusCode, header)
	}
	ch, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return "", err
	}
	cred, err := digest.Digest(ch, digest.Options{Method: method, URI: uri, Username: p.cfg.User, Password: p.cfg.Password})
	if err != nil {
		return "", err
	}
	return cred.String(), nil
}

// ackFor is the ACK of a non-2xx final answer to an INVITE: the same
// branch, Request-URI and From, the answer's To (RFC 3261 §17.1.1.3).
func (p *Phone) ackFor(r request, branch string, res *sip.Response) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ACK %s SIP/2.0\r\n", r.ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=%s;rport\r\n", p.local, branch)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d ACK\r\nContent-Length: 0\r\n\r\n", r.from, res.To().Value(), r.callID, r.cseq)
	return b.String()
}
