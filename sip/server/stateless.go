package server

import (
	"context"
	"errors"
	"hash/maphash"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/reply"
	"github.com/sori-voice/sori/sip/transport"
)

// REGISTER over UDP is answered without a transaction, as Kamailio's
// registrar answers it through its stateless reply module. A REGISTER always
// ends here (sori never forwards one), so nothing needs the transaction
// afterwards, and a transaction costs a goroutine, an FSM, timers and about
// 5 KB kept for Timer J per request: measured, most of sori's CPU at 10 000
// REGISTER/s. What a server transaction owes the client is kept: a
// retransmission gets the same response again, from a cache of final
// responses held for Timer J, and one that arrives while the first copy is
// still being handled is absorbed. TCP REGISTERs go through the
// transaction layer as usual.

// stateless runs a UDP REGISTER on a goroutine of the pool.
func (s *Server) stateless(req *sip.Request, peer transport.Conn) {
	if req.CSeq() == nil || req.CallID() == nil {
		s.tx.Request(req, peer) // cannot be keyed: the transaction layer answers it
		return
	}
	s.inflight.Add(1)
	j := job{req: req, peer: peer}
	s.pool.Go(func() { s.runStateless(j) })
}

func (s *Server) runStateless(j job) {
	defer s.inflight.Add(-1)
	key := retransKey(j.req)
	cached, busy := s.retrans.claim(key)
	switch {
	case cached != nil: // a retransmission of an answered request
		_ = j.peer.Write(cached)
		return
	case busy: // the first copy is still being handled
		return
	}
	w := &udpReply{peer: j.peer, key: key, cache: &s.retrans}
	s.serveReq(context.Background(), j.req, &serverHeader{next: w, header: s.server})
	if !w.final {
		s.retrans.release(key) // no final response (dropped on purpose): let a retransmission retry
	}
}

// udpReply sends responses straight to the client (the source address of
// its REGISTER) and remembers the final one.
type udpReply struct {
	peer  transport.Conn
	key   string
	cache *retransCache
	final bool
}

func (w *udpReply) Respond(res *sip.Response) error {
	if w.final {
		return errors.New("sip server: final response already sent")
	}
	raw := reply.Bytes(res)
	if res.StatusCode >= 200 {
		w.final = true
		w.cache.store(w.key, raw)
	}
	return w.peer.Write(raw)
}

func retransKey(req *sip.Request) string {
	branch, _ := req.Via().Params.Get("branch")
	return branch + "\x00" + req.CallID().Value() + "\x00" + strconv.FormatUint(uint64(req.CSeq().SeqNo), 10)
}

// retransCache keeps final responses by request for between one and two
// Timer J periods, in two generations per shard: no per-entry timers.
type retransCache struct {
	seed   maphash.Seed
	ttl    time.Duration
	shards [16]retransShard
}

type retransShard struct {
	mu      sync.Mutex
	rotated time.Time
	cur     map[string][]byte // nil value: being handled
	prev    map[string][]byte
}

func (c *retransCache) init(ttl time.Duration) {
	c.seed = maphash.MakeSeed()
	c.ttl = ttl
	for i := range c.shards {
		c.shards[i].cur = map[string][]byte{}
		c.shards[i].prev = map[string][]byte{}
		c.shards[i].rotated = time.Now()
	}
}

// claim returns the cached response for key, or marks key as being handled.
// busy reports that another copy is being handled right now.
func (c *retransCache) claim(key string) (cached []byte, busy bool) {
	sh := c.shardLocked(key)
	defer sh.mu.Unlock()
	for _, m := range []map[string][]byte{sh.cur, sh.prev} {
		if v, ok := m[key]; ok {
			return v, v == nil
		}
	}
	sh.cur[key] = nil
	return nil, false
}

func (c *retransCache) store(key string, raw []byte) {
	sh := c.shardLocked(key)
	defer sh.mu.Unlock()
	delete(sh.prev, key)
	sh.cur[key] = raw
}

func (c *retransCache) release(key string) {
	sh := c.shardLocked(key)
	defer sh.mu.Unlock()
	delete(sh.cur, key)
	delete(sh.prev, key)
}

func (c *retransCache) shardLocked(key string) *retransShard {
	sh := &c.shards[maphash.String(c.seed, key)%uint64(len(c.shards))]
	sh.mu.Lock()
	if now := time.Now(); now.Sub(sh.rotated) >= c.ttl {
		sh.prev, sh.cur, sh.rotated = sh.cur, make(map[string][]byte, len(sh.cur)), now
	}
	return sh
}
