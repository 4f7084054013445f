package anchor

import (
	"time"

	"github.com/sori-voice/sori/media/ng"
)

// delete ends a call and reports its final statistics, as query does.
func (m *Manager) delete(req ng.Dict) ng.Dict {
	if res := required(req, "call-id"); res != nil {
		return res
	}
	m.mu.Lock()
	c := m.calls[req.Str("call-id")]
	if c == nil {
		m.mu.Unlock()
		return ng.Error("Call-ID not found or tags didn't match")
	}
	delete(m.calls, c.id)
	res := c.stats(time.Now())
	m.mu.Unlock()
	m.release(c)
	return ng.OK(res)
}
