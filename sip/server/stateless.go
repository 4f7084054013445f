package server

import (
	"bytes"
	"context"
	"errors"
	"hash/maphash"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// REGISTER over UDP is answered without a sipgo transaction, as Kamailio's
// registrar answers it through its stateless reply module. A REGISTER always
// ends here (sori never forwards one), so nothing needs the transaction
// afterwards, and a sipgo transaction costs a goroutine, an FSM, timers and
// about 5 KB kept for Timer J per request: measured, most of sori's CPU at
// 10 000 REGISTER/s. What a server transaction owes the client is kept:
// a retransmission gets the same response again, from a cache of final
// responses held for Timer J, and one that arrives while the first copy is
// still being handled is absorbed.
//
// The datagram is taken in sipgo's read filter, before sipgo parses it; TCP
// and every other method go through sipgo as usual.

var registerPrefix = []byte("REGISTER ")

// readFilter claims REGISTER datagrams; it runs on the socket's read loop.
func (s *Server) readFilter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	if fixed := fix2543(data); fixed != nil {
		data = fixed
	}
	if info.Transport != "UDP" || !bytes.HasPrefix(data, registerPrefix) {
		return data, nil
	}
	conn := s.udpConn(info.LocalAddr)
	src, ok := info.RemoteAddr.(*net.UDPAddr)
	if conn == nil || !ok {
		return data, nil
	}
	msg, err := sip.ParseMessage(data) // copies what it keeps: data is reused by the reader
	if err != nil {
		return data, nil // sipgo answers malformed requests (400)
	}
	req, ok := msg.(*sip.Request)
	if !ok || req.Via() == nil || req.CSeq() == nil || req.CallID() == nil {
		return data, nil
	}
	req.SetSource(src.String())
	req.SetTransport("UDP")
	s.inflight.Add(1)
	j := job{stateless: true, req: req, conn: conn, src: src.AddrPort()}
	select {
	case s.jobs <- j:
	default:
		go s.runStateless(j)
	}
	return nil, nil // handled: sipgo never sees it
}

func (s *Server) runStateless(j job) {
	defer s.inflight.Add(-1)
	key := retransKey(j.req)
	cached, busy := s.retrans.claim(key)
	switch {
	case cached != nil: // a retransmission of an answered request
		_, _ = j.conn.WriteToUDPAddrPort(cached, replyAddr(j.req, j.src))
		return
	case busy: // the first copy is still being handled
		return
	}
	w := &udpReply{conn: j.conn, dest: replyAddr(j.req, j.src), key: key, cache: &s.retrans}
	s.serveReq(context.Background(), j.req, &serverHeader{next: w, header: s.server})
	if !w.final {
		s.retrans.release(key) // no final response (should not happen): let a retransmission retry
	}
}

// udpReply sends responses straight to the client and remembers the final one.
type udpReply struct {
	conn  *net.UDPConn
	dest  netip.AddrPort
	key   string
	cache *retransCache
	final bool
}

func (w *udpReply) Respond(res *sip.Response) error {
	if w.final {
		return errors.New("sip server: final response already sent")
	}
	raw := []byte(res.String())
	if res.StatusCode >= 200 {
		w.final = true
		w.cache.store(w.key, raw)
	}
	_, err := w.conn.WriteToUDPAddrPort(raw, w.dest)
	return err
}

// replyAddr is where a response over UDP goes: always the address and port
// the request came from, with or without rport (Kamailio's force_rport).
// RFC 3261 §18.2.2 would use the Via port without rport, which behind NAT is
// a port nobody listens on.
func replyAddr(_ *sip.Request, src netip.AddrPort) netip.AddrPort { return src }

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
