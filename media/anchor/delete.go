package anchor

import (
	"context"
	"time"

	"github.com/sori-voice/sori/media/ng"
)

// delete ends a call and reports its final statistics, as query does. With
// a via-branch and no to-tag it drops that branch's leg only (branch.go),
// and reports the call as it goes on; a via-branch it does not know is
// refused rather than taken for the whole call, which may be answered.
// With a from-tag alone it drops that tag's legs and the legs in dialog
// with them only, while another dialog of the call goes on (a callee's
// early dialog that lost, dialogs.go); else the whole call goes.
func (m *Manager) delete(ctx context.Context, req ng.Dict) ng.Dict {
	if res := required(req, "call-id"); res != nil {
		return res
	}
	m.mu.Lock()
	c := m.calls[req.Str("call-id")]
	if c == nil {
		m.mu.Unlock()
		return ng.Error("Call-ID not found or tags didn't match")
	}
	now := time.Now()
	if v := req.Str("via-branch"); v != "" && req.Str("to-tag") == "" {
		l, last := c.dropBranch(v, req.Str("from-tag"))
		switch {
		case l != nil:
			c.lastSignal = now
			m.keep(c, now)
			res := c.stats(now)
			m.mu.Unlock()
			m.releaseLegs([]*leg{l})
			return ok(res)
		case !last:
			m.mu.Unlock()
			return ng.Error("Call-ID not found or tags didn't match")
		}
	}
	if req.Str("via-branch") == "" && req.Str("to-tag") == "" && req.Str("from-tag") != "" {
		if gone := c.dropTag(req.Str("from-tag")); gone != nil { // dialogs.go
			c.lastSignal = now
			m.keep(c, now)
			res := c.stats(now)
			m.mu.Unlock()
			m.releaseLegs(gone)
			return ok(res)
		}
	}
	delete(m.calls, c.id)
	res := c.stats(now)
	forgotten := m.forget(c)
	m.mu.Unlock()
	m.release(c)
	if m.cfg.Keep == nil {
		return ok(res) // nothing to wait for: no timer per delete
	}
	// The reply waits for Redis, so that a call deleted is gone from it
	// too; a failure leaves the key to its TTL.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := forgotten(wctx); err != nil {
		m.cfg.Log.Warn("deleted call left in Redis until its TTL", "call_id", c.id, "error", err)
	}
	return ok(res)
}
