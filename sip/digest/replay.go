package digest

import (
	"sync"
	"time"
)

// replayGuard remembers, per nonce, which nonce-counts were used: the highest
// one and a 64-wide window below it (as IPsec's anti-replay window does), so
// a client's parallel requests may arrive out of order but none is accepted twice.
//
// Nonces are grouped in time buckets by their issue time; a whole bucket is
// dropped once every nonce in it has expired, so memory stays bounded by the
// request rate times the nonce lifetime with no per-entry timers.
type replayGuard struct {
	span    time.Duration
	buckets [replayBuckets]replayBucket
}

const replayBuckets = 10

type replayBucket struct {
	mu    sync.Mutex
	epoch int64
	seen  map[uint64]ncWindow
}

type ncWindow struct {
	max  uint32
	mask uint64 // bit i set: nonce-count max-i was used
}

func newReplayGuard(ttl time.Duration) *replayGuard {
	// Buckets cover ttl plus the allowed clock skew with room to spare, so a
	// bucket is never reused while one of its nonces can still be valid.
	span := (ttl + clockSkew) / (replayBuckets - 2)
	if span <= 0 {
		span = time.Second
	}
	return &replayGuard{span: span}
}

// use records nc for nonce n; false means it was used before (or is too old to tell).
func (g *replayGuard) use(n nonce, nc uint32) bool {
	epoch := n.issued.UnixNano() / int64(g.span)
	b := &g.buckets[uint64(epoch)%replayBuckets]
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.epoch != epoch {
		if b.epoch > epoch {
			return false // the bucket moved on: this nonce is long expired
		}
		b.epoch = epoch
		clear(b.seen)
		if b.seen == nil {
			b.seen = make(map[uint64]ncWindow)
		}
	}
	w, ok := b.seen[n.key]
	switch {
	case !ok:
		w = ncWindow{max: nc, mask: 1}
	case nc > w.max:
		shift := nc - w.max
		if shift >= 64 {
			w.mask = 1
		} else {
			w.mask = w.mask<<shift | 1
		}
		w.max = nc
	default:
		d := w.max - nc
		if d >= 64 || w.mask&(1<<d) != 0 {
			return false
		}
		w.mask |= 1 << d
	}
	b.seen[n.key] = w
	return true
}
