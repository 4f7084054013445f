// Package ratelimit limits the requests each source address may send, as
// Kamailio's pike module does: a token bucket per address, refilled at
// Rate per second up to Burst. A source that empties its bucket is over the
// limit; what happens to it then (a ban) is the caller's business.
//
// The buckets live in a ttlmap: a bucket untouched long enough to be full
// again is forgotten, so memory stays bounded under a flood from many
// sources, and no entry has a timer.
package ratelimit

import (
	"net/netip"
	"time"

	"github.com/sori-voice/sori/sip/abuse/ttlmap"
)

// Config is the limit.
type Config struct {
	Rate       float64 // requests per second per source, sustained
	Burst      float64 // requests a source may send at once
	MaxSources int     // buckets held at most (0: 200 000)
}

// Limiter is the set of buckets; safe for concurrent use.
type Limiter struct {
	rate, burst float64
	buckets     *ttlmap.Map[[16]byte, bucket]
}

type bucket struct {
	tokens float64
	last   int64 // unix ns of the last refill
}

// New returns a Limiter.
func New(c Config) *Limiter {
	if c.MaxSources <= 0 {
		c.MaxSources = 200_000
	}
	if c.Burst < 1 {
		c.Burst = 1
	}
	// An idle bucket is full again after burst/rate: forgetting it then
	// loses nothing.
	refill := int64(c.Burst / c.Rate * float64(time.Second))
	if refill < int64(time.Second) {
		refill = int64(time.Second)
	}
	return &Limiter{rate: c.Rate, burst: c.Burst, buckets: ttlmap.New[[16]byte, bucket](64, c.MaxSources, refill, ttlmap.HashAddr)}
}

// Allow takes one request from src's bucket at now; false when the bucket
// is empty (src is over the limit).
func (l *Limiter) Allow(src netip.Addr, now time.Time) bool {
	ns := now.UnixNano()
	ok := false
	l.buckets.Do(ttlmap.AddrKey(src), ns, func(b *bucket, fresh bool) {
		if fresh {
			b.tokens, b.last = l.burst, ns
		} else if ns > b.last {
			b.tokens += float64(ns-b.last) / 1e9 * l.rate
			if b.tokens > l.burst {
				b.tokens = l.burst
			}
			b.last = ns
		}
		if b.tokens >= 1 {
			b.tokens--
			ok = true
		}
	})
	return ok
}

// Sources is how many buckets are held.
func (l *Limiter) Sources() int { return l.buckets.Len() }
