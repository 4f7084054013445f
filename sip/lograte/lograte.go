// Package lograte lets one log line a second through, for what the
// network can make happen at any rate (requests refused, reports left
// alone): a Gate per kind of line, safe for concurrent use.
package lograte

import (
	"sync/atomic"
	"time"
)

// Every is how often a Gate lets a line through.
const Every = time.Second

// Gate lets one line through per Every. The zero value is ready.
type Gate struct{ last atomic.Int64 }

// Allow reports whether a line at now goes through.
func (g *Gate) Allow(now time.Time) bool {
	last := g.last.Load()
	return now.UnixNano()-last >= int64(Every) && g.last.CompareAndSwap(last, now.UnixNano())
}
