// Package authfail counts failed digest authentications (a wrong password,
// an unknown user) by source address and by user name, in a sliding
// window, and says when a source is to be banned: after PerSource failures
// from it, or PerUser failures for one user (a password guessed at from
// many addresses: every source failing for that user is then banned).
//
// The window is approximated as Cloudflare's rate limiter does: the
// previous fixed window's count, weighted by how much of it the sliding
// window still covers, plus the current one's. Counters live in ttlmaps,
// bounded under floods of new sources or invented user names.
package authfail

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/sori-voice/sori/sip/abuse/ttlmap"
)

// Config sets the thresholds; 0 disables a threshold.
type Config struct {
	PerSource  int
	PerUser    int
	Window     time.Duration
	MaxEntries int // counters held per kind (0: 100 000)
}

// Counter counts failures; safe for concurrent use.
type Counter struct {
	c       Config
	sources *ttlmap.Map[[16]byte, window]
	users   *ttlmap.Map[string, window]
}

type window struct {
	start     int64 // unix ns when the current fixed window began
	cur, prev int
}

// New returns a Counter.
func New(c Config) *Counter {
	if c.MaxEntries <= 0 {
		c.MaxEntries = 100_000
	}
	if c.Window <= 0 {
		c.Window = time.Minute
	}
	// Untouched for two windows, a counter contributes nothing any more.
	p := int64(2 * c.Window)
	return &Counter{c: c,
		sources: ttlmap.New[[16]byte, window](32, c.MaxEntries, p, ttlmap.HashAddr),
		users:   ttlmap.New[string, window](32, c.MaxEntries, p, ttlmap.HashString)}
}

// add counts one failure at now and returns the sliding-window estimate.
func (w *window) add(now, size int64) float64 {
	switch d := now - w.start; {
	case w.start == 0 || d >= 2*size:
		w.start, w.prev, w.cur = now, 0, 0
	case d >= size:
		w.start, w.prev, w.cur = w.start+size, w.cur, 0
	}
	w.cur++
	covered := 1 - float64(now-w.start)/float64(size)
	return float64(w.prev)*covered + float64(w.cur)
}

// Failed records a failure from src for user at now. ban is true when src
// is to be banned, with the reason.
func (c *Counter) Failed(src netip.Addr, user string, now time.Time) (ban bool, reason string) {
	ns, size := now.UnixNano(), int64(c.c.Window)
	if c.c.PerSource > 0 {
		c.sources.Do(ttlmap.AddrKey(src), ns, func(w *window, _ bool) {
			if w.add(ns, size) >= float64(c.c.PerSource) {
				ban = true
				*w = window{} // a source banned starts from zero when its ban ends
			}
		})
		if ban {
			return true, fmt.Sprintf("%d failed authentications within %s", c.c.PerSource, c.c.Window)
		}
	}
	if c.c.PerUser > 0 && user != "" {
		c.users.Do(user, ns, func(w *window, _ bool) { ban = w.add(ns, size) >= float64(c.c.PerUser) })
		if ban {
			return true, fmt.Sprintf("%d failed authentications for user %q within %s", c.c.PerUser, user, c.c.Window)
		}
	}
	return false, ""
}
