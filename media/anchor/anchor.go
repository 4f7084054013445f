// Package anchor keeps the calls whose media sori-anchor relays and
// answers the ng commands that create, change, report and end them.
// One file per command: offer.go, answer.go, delete.go, query.go (query
// and list); timeout.go ends calls whose media stopped.
//
// A call has legs, one per SIP tag ("monologues" in rtpengine's terms);
// the offerer's leg and its peer each get a relay.Stream per m= section.
// An offer's SDP tells where the offerer receives and is rewritten to
// point the other side at the peer's ports; the answer does the reverse.
//
// A forked offer (branch.go) gets a peer leg per "via-branch", each made
// for what that branch speaks; the answer names its branch, and a delete
// with a via-branch drops one branch's leg. Callees offering to one caller
// tag (early dialogs, dialogs.go) each get a caller-side leg of their own,
// and a delete with a from-tag alone drops one callee's dialog.
package anchor

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/media/relay"
)

// Config configures a Manager.
type Config struct {
	// Advertise are the addresses written into SDP: at most one IPv4 and
	// one IPv6; each SDP gets the one of its own family (or of the ng
	// "address family" key), else the first.
	Advertise    []netip.Addr
	Ports        *ports.Allocator
	MediaTimeout time.Duration // 0: never
	RTCPInterval time.Duration // the anchor's own RTCP reports to each phone; 0: none
	Jitter       jitter.Config // the jitter buffer of every inbound stream (Mode Off: none)
	Log          *slog.Logger
	Registerer   prometheus.Registerer // nil: no metrics
	// Notify sends the control client that created a call unsolicited ng
	// messages (the media timeout report); nil: none are sent.
	Notify Notifier
	// Certificate is the DTLS identity of WebRTC legs (webrtc.go) until
	// it is due for renewal (see CertLifetime); nil: one is made when the
	// first WebRTC leg needs it.
	Certificate *dtlssrtp.Certificate
	// CertLifetime is how long each DTLS certificate the anchor makes is
	// valid. Once half of a certificate's life has passed, new WebRTC legs
	// get a new one; a leg keeps the certificate its SDP named (and its
	// fingerprint, on re-offers too) until it ends. 0: 30 days
	// (dtlssrtp.DefaultLifetime).
	CertLifetime time.Duration
	// CertRenewed is called with each certificate the anchor makes for
	// new WebRTC legs (a renewal, or the first one when Certificate is
	// nil), from the goroutine that made it, under the anchor's
	// certificate lock: sori-anchor -redis keeps it (keep.go), so that a
	// restart goes on with it. nil: none.
	CertRenewed func(*dtlssrtp.Certificate)
	// Clock is the certificates' clock (their renewal and validity); nil:
	// time.Now.
	Clock func() time.Time
	// ICESources are the networks a WebRTC peer's ICE checks are answered
	// from; a check from elsewhere gets no answer, so that address never
	// carries the leg's media. Empty: any.
	ICESources []netip.Prefix
	// Keep keeps the calls across a restart (keep.go); nil: not kept.
	Keep Keeper
	// KeepEvery is how often every call's snapshot is written again (its
	// statistics, its TTL); 0: 5 s.
	KeepEvery time.Duration
	// ConsentTimeout ends a WebRTC peer's consent to receive media this
	// long after its last ICE check on the media path (RFC 7675 §5.1);
	// 0: 30 s.
	ConsentTimeout time.Duration
}

// Notifier sends an unsolicited ng message (ng.Server).
type Notifier interface {
	Notify(to netip.AddrPort, d ng.Dict) error
}

// NotifierFunc adapts a function to Notifier.
type NotifierFunc func(to netip.AddrPort, d ng.Dict) error

// Notify calls f.
func (f NotifierFunc) Notify(to netip.AddrPort, d ng.Dict) error { return f(to, d) }

// Manager holds the calls.
type Manager struct {
	cfg   Config
	mu    sync.Mutex
	calls map[string]*call

	commands *prometheus.CounterVec
	counted  [len(commandNames)][len(resultNames)]countedSlot // commands' children, looked up once
	active   prometheus.GaugeFunc
	timeouts prometheus.Counter

	// ctx bounds the WebRTC legs' DTLS associations; Close ends it.
	ctx    context.Context
	cancel context.CancelFunc
	certMu sync.Mutex
	cert   *dtlssrtp.Certificate // what new WebRTC legs get (certificate)

	scratch []netip.AddrPort // keepChanged's, under mu
	keyed   chan struct{}    // a WebRTC leg's handshake keyed it: RunKeep saves it now
}

type call struct {
	id         string
	created    time.Time
	lastSignal time.Time
	answered   time.Time // zero until an answer
	control    netip.AddrPort
	legs       []*leg
	kept       keptMark // the last snapshot kept (keep.go)

	// The first two legs (a call's two, mostly), allocated with the call,
	// and the array c.legs starts on (newLeg).
	inline     [2]leg
	inlineUsed int
	legsArr    [2]*leg
}

type leg struct {
	tag     string // "" until the answer names it
	label   string
	created time.Time
	peer    *leg
	medias  []*media
	// branch: the via-branch of the offer this leg was made for, and
	// offerer the leg that offered (branch.go); "" and nil: none named.
	branch  string
	offerer *leg

	// The first media section, allocated with the leg, and the array
	// l.medias starts on (ensure).
	inline     media
	inlineUsed bool
	mediasArr  [1]*media
}

type media struct {
	owner  *leg
	index  int // 1-based, as rtpengine counts
	typ    string
	proto  string // what the leg's phone speaks: RTP/AVP, RTP/SAVP, ...
	mux    bool
	stream *relay.Stream
	sdes   *legSDES   // nil: plain RTP or WebRTC (srtp.go)
	rtc    *legWebRTC // nil: not a WebRTC leg (webrtc.go)
	// bundle is the section of the same WebRTC leg whose transport
	// carries this one (bundle.go); nil: its own, or none.
	bundle   *media
	demux    demuxInfo // what the browser's SDP says to tell it apart on a bundle
	demuxSet bool      // its stream is a bundle's transport (relay.Stream.SetBundle)
}

// New returns a Manager.
func New(c Config) *Manager {
	m := &Manager{cfg: c, calls: map[string]*call{}, keyed: make(chan struct{}, 1),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sori_anchor_commands_total",
			Help: "ng commands handled, by command and result.",
		}, []string{"command", "result"}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_anchor_media_timeouts_total",
			Help: "Calls ended because their media stopped for media_timeout.",
		}),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.active = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sori_anchor_calls",
		Help: "Calls the anchor holds.",
	}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return float64(len(m.calls))
	})
	if c.Registerer != nil {
		c.Registerer.MustRegister(m.commands, m.active, m.timeouts, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sori_anchor_ports_in_use",
			Help: "RTP/RTCP port pairs allocated.",
		}, func() float64 { return float64(c.Ports.InUse()) }), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sori_anchor_ports_parked",
			Help: "Released RTP/RTCP port pairs kept bound for reuse after their quarantine.",
		}, func() float64 { return float64(c.Ports.Parked()) }))
	}
	return m
}

// Handle implements ng.Handler.
func (m *Manager) Handle(ctx context.Context, cmd string, req ng.Dict, from netip.AddrPort) ng.Dict {
	var res ng.Dict
	label := cmd // the metric's command label: only commands the anchor knows
	switch cmd {
	case "ping":
		res = ng.Dict{"result": "pong"}
	case "offer":
		res = m.offer(req, from)
	case "answer":
		res = m.answer(req)
	case "delete":
		res = m.delete(ctx, req)
	case "query":
		res = m.query(req)
	case "list":
		res = m.list(req)
	default:
		res = ng.Error("Unrecognized command")
		// The command is whatever the datagram says: as a label it made
		// a series per name (memory without bound), and a name that is
		// not UTF-8 made prometheus panic, ending the process.
		label = "unknown"
	}
	if res.Str("result") != "error" && (cmd == "offer" || cmd == "answer" || cmd == "query") {
		m.takeControl(req.Str("call-id"), from)
	}
	m.count(label, res.Str("result"))
	return res
}

// The commands and results whose sori_anchor_commands_total child is
// looked up once, on first use (so no series appears before its first
// command, as before): WithLabelValues hashed both labels under the
// vector's lock on every command.
var (
	commandNames = [...]string{"ping", "offer", "answer", "delete", "query", "list"}
	resultNames  = [...]string{"ok", "error", "pong"}
)

type countedSlot struct {
	once sync.Once
	c    prometheus.Counter
}

// count adds one to the commands counter of cmd and result.
func (m *Manager) count(cmd, result string) {
	ci, ri := slices.Index(commandNames[:], cmd), slices.Index(resultNames[:], result)
	if ci < 0 || ri < 0 {
		// Anything else ("unknown" commands) as before, never cached.
		m.commands.WithLabelValues(cmd, result).Inc()
		return
	}
	s := &m.counted[ci][ri]
	s.once.Do(func() { s.c = m.commands.WithLabelValues(commandNames[ci], resultNames[ri]) })
	s.c.Inc()
}

// takeControl makes from the control client told of the call's media
// timeout: the last one to speak for it, not only the one that created
// it. A restarted sori node (its control socket on a new port), or
// another node taking the call over, queries its calls and gets their
// reports from then on. rtpengine keeps the first; nothing else differs.
func (m *Manager) takeControl(callID string, from netip.AddrPort) {
	if !from.IsValid() {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.calls[callID]; c != nil && c.control != from {
		c.control = from
		m.keep(c, time.Now())
	}
}

// Close releases every call's ports. With a Keeper the calls stay kept
// for the next process, and their WebRTC legs' DTLS associations are left
// to it: the browsers are not told they end (keep.go).
func (m *Manager) Close() {
	m.mu.Lock()
	calls := m.calls
	m.calls = map[string]*call{}
	m.mu.Unlock()
	for _, c := range calls {
		if m.cfg.Keep != nil {
			abandonWebRTC(c)
		}
		m.release(c)
	}
	m.cancel()
}

// advertise picks the address written into an SDP whose media address is
// addr, honouring the request's "address family" (IP4, IP6).
func (m *Manager) advertise(addr netip.Addr, family string) netip.Addr {
	want6 := addr.Is6()
	switch family {
	case "IP4":
		want6 = false
	case "IP6":
		want6 = true
	}
	for _, a := range m.cfg.Advertise {
		if a.Is6() == want6 {
			return a
		}
	}
	return m.cfg.Advertise[0]
}

// legByTag finds a leg of c.
func (c *call) legByTag(tag string) *leg {
	for _, l := range c.legs {
		if l.tag == tag {
			return l
		}
	}
	return nil
}

// newLeg adds a leg to c. The first two are c's own (c.inline): with
// its media section in the leg (ensure), a call's legs and medias took 8
// allocations fewer (BenchmarkCallLifecycle, 2026-12-04).
func (c *call) newLeg(tag string, now time.Time) *leg {
	var l *leg
	if c.inlineUsed < len(c.inline) {
		l = &c.inline[c.inlineUsed]
		c.inlineUsed++
		if c.legs == nil {
			c.legs = c.legsArr[:0]
		}
	} else {
		l = new(leg)
	}
	*l = leg{tag: tag, created: now}
	c.legs = append(c.legs, l)
	return l
}

// release stops the call's streams and frees their ports.
func (m *Manager) release(c *call) { m.releaseLegs(c.legs) }

// releaseLegs stops the legs' streams and frees their ports.
func (m *Manager) releaseLegs(legs []*leg) {
	for _, l := range legs {
		for _, md := range l.medias {
			m.stopWebRTC(md)
			md.stream.Stop()
			m.cfg.Ports.Release(md.stream.Pair())
		}
	}
	for _, l := range legs {
		for _, md := range l.medias {
			md.stream.Wait()
		}
	}
}
