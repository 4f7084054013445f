// Package transaction is sori's transaction layer (RFC 3261 §17): it
// matches each request to its server transaction and each response to its
// client transaction, and keeps both sets. The state machines are sipgo's
// (sip.ServerTx, sip.ClientTx); matching, and where a transaction writes
// (the transport.Conn its request came on, or the peer sori chose), are
// ours.
package transaction

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/gopool"
	"github.com/sori-voice/sori/sip/transport"
)

// User is the transaction user: what gets the requests and stray responses.
type User interface {
	// Request is a request that starts a server transaction (tx), or an ACK
	// for a 2xx (tx nil: it has no transaction, RFC 3261 §17.2.3).
	Request(req *sip.Request, tx *sip.ServerTx)
	// Stray is a response that matches no client transaction.
	Stray(res *sip.Response)
}

// Layer holds the live transactions.
type Layer struct {
	user   User
	pool   *gopool.Pool
	log    *slog.Logger
	seed   maphash.Seed
	server [shards]store[*sip.ServerTx]
	client [shards]store[*sip.ClientTx]
}

const shards = 32

type store[T any] struct {
	mu sync.Mutex
	m  map[string]T
}

// New returns a Layer passing requests to user; each received message is
// handled on a goroutine of pool.
func New(user User, pool *gopool.Pool, log *slog.Logger) *Layer {
	l := &Layer{user: user, pool: pool, log: log, seed: maphash.MakeSeed()}
	for i := range shards {
		l.server[i].m = map[string]*sip.ServerTx{}
		l.client[i].m = map[string]*sip.ClientTx{}
	}
	return l
}

func (l *Layer) shard(key string) int { return int(maphash.String(l.seed, key) % shards) }

// Request takes a received request (transport.Handler).
func (l *Layer) Request(req *sip.Request, c transport.Conn) {
	// The state machines may block handing a request on (an ACK to a
	// waiting reader), so each request is handled on a goroutine of its
	// own (from the pool), as sipgo's own layer does; the socket's read
	// loop never waits. The
	// connection is held from here, so a peer that stops sending right
	// after this request still gets its answer.
	release := c.Hold()
	l.pool.Go(func() {
		defer release()
		l.request(req, c)
	})
}

func (l *Layer) request(req *sip.Request, c transport.Conn) {
	if req.IsCancel() {
		if key, ok := serverKey(req, sip.INVITE); ok {
			if tx := l.serverTx(key); tx != nil {
				// 200 to the CANCEL first, then the INVITE ends (487), so the
				// caller stops retransmitting the CANCEL at once.
				if err := c.WriteMsg(sip.NewResponseFromRequest(req, 200, "OK", nil)); err != nil {
					l.log.Debug("200 to CANCEL not sent", "error", err)
				}
				_ = tx.Receive(req)
				return
			}
		}
		// A CANCEL matching nothing is a transaction of its own (the
		// proxy answers it 481).
	}
	key, ok := serverKey(req, "")
	if !ok {
		_ = c.WriteMsg(sip.NewResponseFromRequest(req, 400, "Missing Via", nil))
		return
	}
	s := &l.server[l.shard(key)]
	s.mu.Lock()
	if tx, ok := s.m[key]; ok {
		s.mu.Unlock()
		_ = tx.Receive(req) // a retransmission, or the ACK of a non-2xx final response
		return
	}
	if req.IsAck() {
		s.mu.Unlock()
		l.user.Request(req, nil)
		return
	}
	// The connection is held until the transaction sends its final
	// answer (not until it ends: an INVITE's waits for an ACK that a peer
	// which stopped sending will never send).
	held := &answering{Conn: c, release: c.Hold()}
	tx := sip.NewServerTx(key, req, held, l.log)
	if err := tx.Init(); err != nil {
		s.mu.Unlock()
		held.release()
		l.log.Debug("server transaction not started", "error", err)
		return
	}
	s.m[key] = tx
	s.mu.Unlock()
	tx.OnTerminate(func(key string, _ error) {
		drop(&l.server[l.shard(key)], key, tx)
		held.release()
	})
	l.user.Request(req, tx)
}

// answering is a server transaction's connection: it lets go of its hold
// on the connection once a final response is written.
type answering struct {
	transport.Conn
	release func() // idempotent (transport.Conn.Hold)
}

func (a *answering) WriteMsg(m sip.Message) error {
	err := a.Conn.WriteMsg(m)
	if res, ok := m.(*sip.Response); ok && res.StatusCode >= 200 {
		a.release()
	}
	return err
}

func (l *Layer) serverTx(key string) *sip.ServerTx {
	s := &l.server[l.shard(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[key]
}

// Response takes a received response (transport.Handler).
func (l *Layer) Response(res *sip.Response, _ transport.Conn) {
	key, ok := clientKey(res)
	if !ok {
		l.user.Stray(res)
		return
	}
	s := &l.client[l.shard(key)]
	s.mu.Lock()
	tx := s.m[key]
	s.mu.Unlock()
	if tx == nil {
		l.user.Stray(res)
		return
	}
	l.pool.Go(func() { tx.Receive(res) }) // it blocks until the transaction user reads the response
}

// ErrExists is returned for a request whose branch is already in use.
var ErrExists = errors.New("a client transaction with this branch exists")

// Send starts a client transaction for req towards c. req must carry our
// Via with a fresh branch.
func (l *Layer) Send(_ context.Context, req *sip.Request, c transport.Conn) (*sip.ClientTx, error) {
	if req.IsAck() {
		return nil, errors.New("an ACK is sent without a transaction")
	}
	key, ok := clientKey(req)
	if !ok {
		return nil, errors.New("request without Via branch or CSeq")
	}
	tx := sip.NewClientTx(key, req, c, l.log)
	s := &l.client[l.shard(key)]
	s.mu.Lock()
	if _, exists := s.m[key]; exists {
		s.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", key, ErrExists)
	}
	s.m[key] = tx
	s.mu.Unlock()
	tx.OnTerminate(func(key string, _ error) { drop(&l.client[l.shard(key)], key, tx) })
	if err := tx.Init(); err != nil {
		tx.Terminate()
		return nil, err
	}
	return tx, nil
}

// drop forgets a terminated transaction (unless its key was reused).
func drop[T comparable](s *store[T], key string, tx T) {
	s.mu.Lock()
	if s.m[key] == tx {
		delete(s.m, key)
	}
	s.mu.Unlock()
}

// snapshot lists a store's transactions.
func snapshot[T any](s *store[T]) []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]T, 0, len(s.m))
	for _, tx := range s.m {
		out = append(out, tx)
	}
	return out
}

// Close ends every transaction.
func (l *Layer) Close() {
	for i := range shards {
		for _, tx := range snapshot(&l.server[i]) {
			tx.Terminate()
		}
		for _, tx := range snapshot(&l.client[i]) {
			tx.Terminate()
		}
	}
}

// Counts returns the live server and client transactions.
func (l *Layer) Counts() (server, client int) {
	for i := range shards {
		l.server[i].mu.Lock()
		server += len(l.server[i].m)
		l.server[i].mu.Unlock()
		l.client[i].mu.Lock()
		client += len(l.client[i].m)
		l.client[i].mu.Unlock()
	}
	return server, client
}
