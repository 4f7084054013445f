package anchor

import (
	"context"
	"time"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/relay"
)

// RunTimeouts ends answered calls whose media stopped for MediaTimeout,
// telling the control client that created each one, until ctx ends.
func (m *Manager) RunTimeouts(ctx context.Context) {
	if m.cfg.MediaTimeout > 0 {
		every(ctx, min(time.Second, m.cfg.MediaTimeout/4), m.expire)
	}
}

// every runs f each period until ctx ends.
func every(ctx context.Context, period time.Duration, f func(now time.Time)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			f(now)
		}
	}
}

func (m *Manager) expire(now time.Time) {
	type ended struct {
		c      *call
		reason string
	}
	var dead []ended
	m.mu.Lock()
	for id, c := range m.calls {
		if c.answered.IsZero() {
			continue // ringing: no media expected yet
		}
		reason := ""
		switch {
		case now.Sub(c.lastMedia()) >= m.cfg.MediaTimeout:
			reason = "no media"
		case c.consentGone(now, m.cfg.MediaTimeout):
			reason = "ICE consent expired"
		default:
			continue
		}
		delete(m.calls, id)
		m.forget(c)
		dead = append(dead, ended{c, reason})
	}
	m.mu.Unlock()
	for _, e := range dead {
		c := e.c
		m.timeouts.Inc()
		m.cfg.Log.Info("media timeout", "call_id", c.id, "after", m.cfg.MediaTimeout, "reason", e.reason)
		if m.cfg.Notify != nil && c.control.IsValid() {
			d := ng.Dict{"command": "media-timeout", "call-id": c.id, "reason": e.reason}
			var tags []any
			for _, l := range c.legs {
				tags = append(tags, l.tag)
			}
			d["tags"] = tags
			for k, v := range c.stats(now) {
				d[k] = v
			}
			if err := m.cfg.Notify.Notify(c.control, d); err != nil {
				m.cfg.Log.Warn("media timeout not reported", "call_id", c.id, "to", c.control, "error", err)
			}
		}
		m.release(c)
	}
}

// consentGone: a WebRTC leg of c lost its ICE consent and has sent
// nothing for timeout: the browser is gone, though the other phone still
// talks (which keeps lastMedia fresh).
func (c *call) consentGone(now time.Time, timeout time.Duration) bool {
	for _, l := range c.legs {
		for _, md := range l.medias {
			if md.rtc == nil || md.rtc.consentLost().IsZero() {
				continue
			}
			last := c.answered
			if t := md.stream.LastPacket(); t.After(last) {
				last = t
			}
			if now.Sub(last) >= timeout {
				return true
			}
		}
	}
	return false
}

// lastMedia is when the call last showed life: its latest packet, or its
// answer when no packet came since.
func (c *call) lastMedia() time.Time {
	last := c.answered
	for _, l := range c.legs {
		for _, md := range l.medias {
			if t := md.stream.LastPacket(); t.After(last) {
				last = t
			}
		}
	}
	return last
}

// RunReports sends every phone, each RTCPInterval, the anchor's receiver
// report on the media it receives from it, until ctx ends.
func (m *Manager) RunReports(ctx context.Context) {
	if m.cfg.RTCPInterval > 0 {
		every(ctx, m.cfg.RTCPInterval, m.report)
	}
}

func (m *Manager) report(now time.Time) {
	var streams []*relay.Stream
	m.mu.Lock()
	for _, c := range m.calls {
		for _, l := range c.legs {
			for _, md := range l.medias {
				streams = append(streams, md.stream)
			}
		}
	}
	m.mu.Unlock()
	for _, s := range streams {
		b, _, ok := s.Report(now, s.JitterFigures())
		if !ok {
			continue
		}
		if err := s.SendRTCP(b); err != nil {
			m.cfg.Log.Debug("RTCP report not sent", "error", err)
		}
	}
}
