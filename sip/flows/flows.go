// Package flows counts the SIP Outbound flows (RFC 5626) this node holds,
// per transport: bindings registered here with a +sip.instance and a
// reg-id, while their connection is open (a UDP flow has no connection:
// until its binding expires or is replaced). It is the registrar's
// observer and a Prometheus collector (sori_sip_flows{transport}).
package flows

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/registrar/store"
)

// Conns tells whether a flow's connection is still open (sip/server).
type Conns interface {
	Open(transport, remote string) bool
}

// Tracker follows the flow-bound bindings the registrar accepted.
type Tracker struct {
	conns Conns
	now   func() time.Time

	mu sync.Mutex
	m  map[string][]flow // by AOR: a REGISTER replaces only its own
}

type flow struct {
	transport, source string
	expires           time.Time
}

// New returns a Tracker that asks conns whether a flow is open.
func New(conns Conns) *Tracker {
	return &Tracker{conns: conns, now: time.Now, m: map[string][]flow{}}
}

// Track replaces what is known of aor's flows with its current bindings.
func (t *Tracker) Track(aor string, bindings []store.Binding) {
	var fs []flow
	for _, b := range bindings {
		if b.RegID == 0 || b.Instance == "" || b.Source == "" {
			continue
		}
		fs = append(fs, flow{transport: strings.ToLower(b.Transport), source: b.Source, expires: b.Expires})
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(fs) == 0 {
		delete(t.m, aor)
	} else {
		t.m[aor] = fs
	}
}

// Count is the open flows by transport; expired ones are let go.
func (t *Tracker) Count() map[string]int {
	now := t.now()
	t.mu.Lock()
	var fs []flow
	for aor, list := range t.m {
		live := list[:0]
		for _, f := range list {
			if f.expires.After(now) {
				live = append(live, f)
			}
		}
		if len(live) == 0 {
			delete(t.m, aor)
			continue
		}
		t.m[aor] = live
		fs = append(fs, live...)
	}
	t.mu.Unlock()
	out := map[string]int{}
	for _, f := range fs { // outside the lock: Open takes the transport's
		if t.conns.Open(f.transport, f.source) {
			out[f.transport]++
		}
	}
	return out
}

var flowsDesc = prometheus.NewDesc("sori_sip_flows",
	"SIP Outbound flows (bindings with +sip.instance and reg-id) registered on this node whose connection is open, by transport.",
	[]string{"transport"}, nil)

// Describe implements prometheus.Collector.
func (t *Tracker) Describe(ch chan<- *prometheus.Desc) { ch <- flowsDesc }

// Collect implements prometheus.Collector: every transport sori serves
// appears, 0 when it holds no flow.
func (t *Tracker) Collect(ch chan<- prometheus.Metric) {
	n := t.Count()
	for _, tr := range []string{"udp", "tcp", "tls", "ws", "wss"} {
		ch <- prometheus.MustNewConstMetric(flowsDesc, prometheus.GaugeValue, float64(n[tr]), tr)
	}
}
