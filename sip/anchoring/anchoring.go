// Package anchoring drives the media anchors (sori-anchor or rtpengine)
// over the ng protocol: an offer for each SDP offer that passes, an answer
// for each SDP answer (the proxy), a delete when the call ends (sip/call).
// A new call goes to an anchor picked by Call-ID hash and stays there: the
// call object keeps which anchor it is on, the pool keeps no call. An
// anchor that misses a ping gets no new calls until it answers; one that
// keeps failing is dead, and its calls move (failover.go).
package anchoring

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/sip/calls"
)

// ErrNoAnchor: no anchor is up, or every one tried failed.
var ErrNoAnchor = errors.New("anchoring: no media anchor available")

// Config configures a Pool.
type Config struct {
	Anchors      []netip.AddrPort
	Timeout      time.Duration // one command, retransmissions included
	PingInterval time.Duration
	// FailoverAfter is how long an anchor fails its pings (or a call's
	// command times out on it) before it is dead for good and its calls
	// move to the others (failover.go); 0: never.
	FailoverAfter time.Duration
	Log           *slog.Logger
	Registerer    prometheus.Registerer // nil: no metrics
}

// Timeouts is told when an anchor reports that a call's media stopped,
// with each side's media quality by SIP tag (sip/call's Table).
type Timeouts interface {
	MediaTimeout(from netip.AddrPort, callID string, media map[string]calls.MediaQuality)
}

// Pool is the set of anchors.
type Pool struct {
	cfg     Config
	client  *ng.Client
	anchors []*anchor

	// timeouts queues the anchors' media-timeout notifications for Run.
	timeouts chan timeout

	up       *prometheus.GaugeVec
	commands *prometheus.CounterVec
}

type anchor struct {
	addr netip.AddrPort
	mu   sync.Mutex
	up   bool
	// downSince: when the failures began (zero while it answers); dead:
	// failing for FailoverAfter (failover.go).
	downSince time.Time
	dead      bool
}

func (a *anchor) isUp() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.up
}

// New opens the ng client socket; Run pings the anchors.
func New(c Config) (*Pool, error) {
	p := &Pool{cfg: c, timeouts: make(chan timeout, 4096),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sori_media_anchor_up",
			Help: "1 when the media anchor answers ng ping.",
		}, []string{"anchor"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_media_commands_total",
			Help: "ng commands sent to media anchors, by command and outcome (ok, error, timeout).",
		}, []string{"command", "outcome"}),
	}
	for _, a := range c.Anchors {
		p.anchors = append(p.anchors, &anchor{addr: a, up: true}) // up until a ping says otherwise
		p.up.WithLabelValues(a.String()).Set(1)
	}
	if c.Registerer != nil {
		c.Registerer.MustRegister(p.up, p.commands)
	}
	laddr := "127.0.0.1:0"
	if len(c.Anchors) > 0 && !c.Anchors[0].Addr().IsLoopback() {
		laddr = ":0"
	}
	var err error
	p.client, err = ng.NewClient(laddr, max(c.Timeout/4, 50*time.Millisecond), c.Log, p.notified)
	if err != nil {
		return nil, err
	}
	p.client.LazyReplies() // Quality and sdpOf read the replies; both take Raw
	return p, nil
}

// Close closes the client socket.
func (p *Pool) Close() error { return p.client.Close() }

// Run pings every anchor each PingInterval and hands media timeouts to
// to, until ctx ends.
func (p *Pool) Run(ctx context.Context, to Timeouts) {
	t := time.NewTicker(p.cfg.PingInterval)
	defer t.Stop()
	pinged := make(chan struct{}, 1)
	ping := func() {
		go func() { p.pingAll(ctx); p.reportDead(to); pinged <- struct{}{} }()
	}
	ping()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-p.timeouts:
			to.MediaTimeout(m.from, m.callID, m.media)
		case <-t.C:
			select {
			case <-pinged: // the last round is over
				ping()
			default:
			}
		}
	}
}

type timeout struct {
	from   netip.AddrPort
	callID string
	media  map[string]calls.MediaQuality
}

func (p *Pool) pingAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, a := range p.anchors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
			defer cancel()
			sent := time.Now()
			res, err := p.client.Do(cctx, a.addr, ng.Dict{"command": "ping"})
			if ctx.Err() != nil {
				return // stopping: not the anchor's failure
			}
			p.setUpAt(a, err == nil && res.Str("result") == "pong", sent)
		}()
	}
	wg.Wait()
}

func (p *Pool) setUp(a *anchor, up bool) { p.setUpAt(a, up, time.Now()) }

// setUpAt records whether a answered what was sent to it at sent.
func (p *Pool) setUpAt(a *anchor, up bool, sent time.Time) {
	a.mu.Lock()
	changed := a.up != up
	a.up = up
	died, back := a.failing(up, sent, p.cfg.FailoverAfter)
	a.mu.Unlock()
	p.deathChanged(a, died, back)
	if changed {
		if up {
			p.cfg.Log.Info("media anchor is back", "anchor", a.addr)
		} else {
			p.cfg.Log.Warn("media anchor is down: no new calls go to it", "anchor", a.addr)
		}
	}
	v := 0.0
	if up {
		v = 1
	}
	p.up.WithLabelValues(a.addr.String()).Set(v)
}

// candidates lists the anchors a new call may use, its hash's first.
func (p *Pool) candidates(callID string) []*anchor {
	var live []*anchor
	for _, a := range p.anchors {
		if a.isUp() {
			live = append(live, a)
		}
	}
	if len(live) == 0 {
		return nil
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(callID))
	i := int(h.Sum32() % uint32(len(live)))
	return append(live[i:], live[:i]...)
}

// Encryption values: what the side an offer goes to is offered.
const (
	PassEncryption = ""     // the offer's own profile, SRTP or not (rtpengine's default)
	SRTP           = "srtp" // RTP/SAVP (RTP/SAVPF for an AVPF offer), SDES keys of the anchor's
	PlainRTP       = "rtp"  // RTP/AVP (RTP/AVPF): the anchor decrypts an SRTP offerer's media
	// WebRTC is UDP/TLS/RTP/SAVPF with ICE (ICE=force): DTLS-SRTP, the
	// anchor the browser's ICE-lite peer. A side reached over WebSocket
	// gets it, whatever the configuration says: a browser speaks nothing
	// else.
	WebRTC = "webrtc"
)

// webRTCProto is what browsers offer and answer (RFC 8829 §5.1.2).
const webRTCProto = "UDP/TLS/RTP/SAVPF"

// WebSocket reports whether a SIP transport name is WebSocket (RFC 7118):
// its client is taken to be a browser, a WebRTC peer.
func WebSocket(transport string) bool {
	return strings.EqualFold(transport, "WS") || strings.EqualFold(transport, "WSS")
}

// ForContact is the encryption a callee's contact reached over transport
// is offered, its user's or trunk's being configured: WebRTC over
// WebSocket, whatever the configuration says, else configured. Each
// contact a call forks to gets an offer of its own (Offer on the branch's
// request), so a browser and a phone of one user can both answer.
func ForContact(transport, configured string) string {
	if WebSocket(transport) {
		return WebRTC
	}
	return configured
}

// transportFor is the ng "transport protocol" that gives the other side
// encryption, from the offer's first m= line ("": pass the offer's).
// A WebRTC offer going to a side that is not WebRTC is never passed on
// as it is: the anchor ends its DTLS, and the other side gets RTP/AVP, or
// RTP/SAVP with SDES for "srtp" (without feedback: AVPF is WebRTC's
// requirement, not the caller's choice).
func transportFor(body []byte, encryption string) string {
	if encryption == WebRTC {
		return webRTCProto
	}
	s, err := sdp.Parse(body)
	if err != nil || len(s.Media) == 0 {
		return "" // the anchor says what is wrong with it
	}
	if sdp.DTLSProto(s.Media[0].Proto) {
		if encryption == SRTP {
			return "RTP/SAVP"
		}
		return "RTP/AVP"
	}
	if encryption != SRTP && encryption != PlainRTP {
		return ""
	}
	feedback := strings.HasSuffix(strings.ToUpper(s.Media[0].Proto), "AVPF")
	switch {
	case encryption == SRTP && feedback:
		return "RTP/SAVPF"
	case encryption == SRTP:
		return "RTP/SAVP"
	case feedback:
		return "RTP/AVPF"
	}
	return "RTP/AVP"
}

// Offer rewrites req's SDP offer (an INVITE or UPDATE, initial or in
// dialog) so the other side sends its media to the anchor, and returns
// the anchor: on, the call's own when it has one, else one picked for
// it. encryption (SRTP, PlainRTP, WebRTC, PassEncryption) is what the
// other side is offered. A request with no SDP is left alone (false).
//
// The offer names req's top Via branch ("via-branch"): for a request as
// it came, its sender's; for a fork's branch as sori sends it, sori's own,
// which gives that branch its own leg on the anchor (media/anchor
// branch.go; rtpengine's via-branch). Its answer names the same (Answer).
func (p *Pool) Offer(ctx context.Context, req *sip.Request, on netip.AddrPort, encryption string) (netip.AddrPort, bool, error) {
	body, ok := sdpBody(req)
	if !ok {
		return on, false, nil
	}
	d := ng.Dict{"command": "offer", "call-id": req.CallID().Value(), "from-tag": req.From().Params.GetOr("tag", ""),
		"sdp": body, "replace": replace, "ICE": iceFlag(encryption == WebRTC)}
	tag, inDialog := req.To().Params.Get("tag")
	inDialog = inDialog && tag != ""
	// A re-offer passing the profile keeps what each side speaks (the
	// anchor remembers), a browser's included.
	if tp := transportFor(body, encryption); tp != "" && !(inDialog && encryption == PassEncryption) {
		d["transport-protocol"] = tp
	}
	if inDialog {
		d["to-tag"] = tag
	}
	if v := req.Via(); v != nil {
		if b, ok := v.Params.Get("branch"); ok {
			d["via-branch"] = b
		}
	}
	if src, err := netip.ParseAddrPort(req.Source()); err == nil {
		fam := "IP4"
		if src.Addr().Is6() && !src.Addr().Is4In6() {
			fam = "IP6"
		}
		d["received-from"] = []any{fam, src.Addr().Unmap().String()}
	}
	a, res, err := p.do(ctx, req.CallID().Value(), on, d)
	if err != nil {
		return on, false, err
	}
	req.SetBody(sdpOf(res))
	return a, true, nil
}

// Answer rewrites the SDP answer in res (a 18x or 2xx to req) on the
// anchor that took the offer, so the offerer sends its media there.
// branch is the via-branch the offer answered named ("": none).
func (p *Pool) Answer(ctx context.Context, on netip.AddrPort, req *sip.Request, res *sip.Response, branch string) error {
	body, ok := sdpBody(res)
	if !ok {
		return nil
	}
	// The answer goes to the caller: a browser when it called over
	// WebSocket.
	d := ng.Dict{"command": "answer", "call-id": res.CallID().Value(), "from-tag": res.From().Params.GetOr("tag", ""),
		"to-tag": res.To().Params.GetOr("tag", ""), "sdp": body, "replace": replace, "ICE": iceFlag(WebSocket(req.Transport()))}
	if branch != "" {
		d["via-branch"] = branch
	}
	if src, err := netip.ParseAddrPort(res.Source()); err == nil {
		d["received-from"] = []any{"IP4", src.Addr().Unmap().String()}
		if src.Addr().Is6() && !src.Addr().Is4In6() {
			d["received-from"] = []any{"IP6", src.Addr().String()}
		}
	}
	if !on.IsValid() {
		return fmt.Errorf("anchoring: answer for a call with no offer")
	}
	a := p.anchorAt(on)
	if a.isDead() {
		return fmt.Errorf("anchoring: answer on %s: %w", on, ErrDead)
	}
	out, err := p.send(ctx, a, d)
	if err != nil {
		return err
	}
	res.SetBody(sdpOf(out))
	return nil
}

// DeleteBranch drops, on anchor on, the leg that the offer from fromTag on
// via-branch branch made: a fork's branch that lost, its ports released
// now rather than with the call. With no branch it drops fromTag's legs
// (a callee's early dialog that lost: the delete of one monologue), the
// call going on while another dialog has it.
func (p *Pool) DeleteBranch(ctx context.Context, on netip.AddrPort, callID, fromTag, branch string) error {
	d := ng.Dict{"command": "delete", "call-id": callID, "from-tag": fromTag}
	if branch != "" {
		d["via-branch"] = branch
	}
	_, err := p.send(ctx, p.anchorAt(on), d)
	return err
}

// Delete ends the call on its anchor and returns each side's media
// quality, by SIP tag (nil when the anchor did not say).
func (p *Pool) Delete(ctx context.Context, on netip.AddrPort, callID string) map[string]calls.MediaQuality {
	a := p.anchorAt(on)
	res, err := p.send(ctx, a, ng.Dict{"command": "delete", "call-id": callID})
	if err != nil {
		p.cfg.Log.Info("media delete failed", "call_id", callID, "anchor", a.addr, "error", err)
		return nil
	}
	return Quality(res)
}

// Reclaim asks the call's anchor for it (an ng query), which makes this
// process the control client the anchor reports the call's media timeout
// to (sori-anchor takes the last one that spoke for a call). held is
// false when the anchor no longer has the call: it ended there while no
// node held it, its report sent to a process that is gone.
func (p *Pool) Reclaim(ctx context.Context, on netip.AddrPort, callID string) (held bool, err error) {
	res, err := p.client.DoWithin(ctx, on, ng.Dict{"command": "query", "call-id": callID}, p.cfg.Timeout)
	switch {
	case err != nil:
		p.commands.WithLabelValues("query", "timeout").Inc()
		return false, fmt.Errorf("anchoring: query %s on %s: %w", callID, on, err)
	case res.Str("result") == "ok":
		p.commands.WithLabelValues("query", "ok").Inc()
		return true, nil
	}
	p.commands.WithLabelValues("query", "error").Inc()
	if strings.Contains(strings.ToLower(res.Str("error-reason")), "unknown call") {
		return false, nil
	}
	return false, fmt.Errorf("anchoring: query %s on %s: %s", callID, on, res.Str("error-reason"))
}

// Quality reads each tag's media quality from a delete or query reply (or
// a media-timeout notification): the RTP stream of its first medium. It
// reads the reply's bencode (ng.Raw: the client leaves it undecoded) in
// one pass for the dozen fields it wants instead of decoding every leg's
// and stream's stats into maps. BenchmarkDeleteReplyQuality, eager Parse
// and map walk → ParseReply and this: 17-37 → 7-13 µs, 125 → 13 allocs
// per reply (with Get/At walks instead of the Reader: 17-45 µs, as each
// level found its value's end again).
func Quality(d ng.Dict) map[string]calls.MediaQuality {
	tags := d.Raw("tags")
	if len(tags) <= len("de") || tags[0] != 'd' {
		return nil // none, or an empty dictionary
	}
	out := map[string]calls.MediaQuality{}
	rd := tags.Reader()
	rd.Dict(func(tag string) {
		var (
			q                         calls.MediaQuality
			received                  bool // a reception dictionary, even empty
			mos, frac, hopLost, hopOf int64
			hop                       bool
		)
		rd.Dict(func(k string) {
			if k != "medias" {
				return
			}
			rd.List(func(i int) {
				if i != 0 {
					return
				}
				rd.Dict(func(k string) {
					switch k {
					case "SRTP":
						rd.Dict(func(k string) {
							if k == "suite" {
								q.SRTP = rd.Str()
							}
						})
					case "streams":
						rd.List(func(i int) {
							if i != 0 {
								return
							}
							rd.Dict(func(k string) {
								switch k {
								case "reception":
									received = rd.Dict(func(k string) {
										switch k {
										case "expected":
											q.Sent, _ = rd.Int()
										case "lost":
											q.Lost, _ = rd.Int()
										case "jitter":
											q.JitterMS, _ = rd.Int()
										case "MOS":
											mos, _ = rd.Int()
										}
									})
								case "endpoint":
									rd.Dict(func(k string) {
										if k == "address" {
											q.Address, _ = netip.ParseAddr(rd.Str())
										}
									})
								case "downstream":
									rd.Dict(func(k string) {
										switch k {
										case "fraction lost":
											frac, _ = rd.Int()
										case "hop lost":
											hopLost, hop = rd.Int()
										case "hop expected":
											hopOf, _ = rd.Int()
										case "jitter":
											q.DownJitterMS, _ = rd.Int()
										case "RTT":
											q.RTTMS, _ = rd.Int()
										}
									})
								}
							})
						})
					}
				})
			})
		})
		if !received {
			return
		}
		q.MOS = float64(mos) / 10
		if q.Sent > 0 {
			q.LossPct = math.Round(10000*float64(max(q.Lost, 0))/float64(q.Sent)) / 100
		}
		q.DownLossPct = math.Round(10000*float64(frac)/256) / 100
		if hop && hopOf > 0 {
			q.DownLossPct = math.Round(10000*float64(hopLost)/float64(hopOf)) / 100 // the hop alone, whole call
		}
		out[tag] = q
	})
	return out
}

// anchorAt is the anchor at addr (one no longer configured still gets its
// commands: a call stays on its anchor).
func (p *Pool) anchorAt(addr netip.AddrPort) *anchor {
	for _, a := range p.anchors {
		if a.addr == addr {
			return a
		}
	}
	return &anchor{addr: addr, up: true}
}

// do sends a command for a call to its anchor (on); a call with none
// gets one picked, the next tried when one does not answer.
func (p *Pool) do(ctx context.Context, callID string, on netip.AddrPort, d ng.Dict) (netip.AddrPort, ng.Dict, error) {
	if on.IsValid() {
		res, err := p.send(ctx, p.anchorAt(on), d)
		return on, res, err
	}
	var lastErr error = ErrNoAnchor
	for _, a := range p.candidates(callID) {
		res, err := p.send(ctx, a, d)
		if errors.Is(err, ng.ErrTimeout) {
			p.setUp(a, false)
			lastErr = err
			continue
		}
		if err != nil {
			return on, nil, err
		}
		return a.addr, res, nil
	}
	return on, nil, lastErr
}

func (p *Pool) send(ctx context.Context, a *anchor, d ng.Dict) (ng.Dict, error) {
	cmd := d.Str("command")
	sent := time.Now()
	res, err := p.client.DoWithin(ctx, a.addr, d, p.cfg.Timeout)
	switch {
	case err != nil:
		p.commands.WithLabelValues(cmd, "timeout").Inc()
		if errors.Is(err, ng.ErrTimeout) && ctx.Err() == nil {
			p.unanswered(a, sent) // the failover clock starts (failover.go)
		}
		return nil, err
	case res.Str("result") == "error":
		p.commands.WithLabelValues(cmd, "error").Inc()
		return nil, fmt.Errorf("anchoring: %s on %s: %s", cmd, a.addr, res.Str("error-reason"))
	}
	p.commands.WithLabelValues(cmd, "ok").Inc()
	return res, nil
}

// notified handles what an anchor sends unasked: media timeouts.
func (p *Pool) notified(from netip.AddrPort, d ng.Dict) {
	if d.Str("command") != "media-timeout" {
		return
	}
	callID := d.Str("call-id")
	p.cfg.Log.Info("media timeout reported", "call_id", callID, "anchor", from)
	select {
	case p.timeouts <- timeout{from: from, callID: callID, media: Quality(d)}:
	default:
		p.cfg.Log.Warn("media timeout dropped: too many at once", "call_id", callID, "anchor", from)
	}
}

// iceFlag is rtpengine's ICE key for an SDP going to a WebRTC side
// (force: the anchor's own candidates) or to a SIP phone (remove: none).
func iceFlag(webrtc bool) string {
	if webrtc {
		return "force"
	}
	return "remove"
}

// replace is the offer's and answer's "replace" flags (encoded, never
// written).
var replace = []any{"origin", "session-connection"}

// sdpOf is the rewritten SDP in an anchor's reply, as a body. It shares the
// reply's bytes rather than copying them: the reply is the client's own
// copy of the datagram, read by no one once its SDP is taken.
func sdpOf(res ng.Dict) []byte {
	s := res.Str("sdp")
	if s == "" {
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// sdpBody returns a message's SDP body, if it has one.
func sdpBody(m sip.Message) ([]byte, bool) {
	body := m.Body()
	if len(body) == 0 {
		return nil, false
	}
	hs := m.GetHeaders("Content-Type")
	if len(hs) == 0 {
		return nil, false
	}
	v, _, _ := strings.Cut(hs[0].Value(), ";")
	return body, strings.EqualFold(strings.TrimSpace(v), "application/sdp")
}
