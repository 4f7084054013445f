package ng

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Client sends ng requests from one UDP socket to any number of servers
// and matches replies by cookie. Datagrams that answer no pending request
// and carry a "command" are notifications from a server (sori-anchor's
// media timeouts), handed to Notify.
type Client struct {
	conn    *net.UDPConn
	log     *slog.Logger
	prefix  string
	seq     atomic.Uint64
	lazy    atomic.Bool
	retry   time.Duration
	notify  func(from netip.AddrPort, d Dict)
	mu      sync.Mutex
	pending map[string]chan Dict
	done    chan struct{}
}

// Pooled per command (see DoWithin).
var (
	encodeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}
	replyChans = sync.Pool{New: func() any { return make(chan Dict, 1) }}
	timers     = sync.Pool{New: func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}}
)

// ErrTimeout: the server did not answer.
var ErrTimeout = errors.New("ng: no reply")

// NewClient opens a client socket on laddr ("127.0.0.1:0"). retry is the
// retransmission interval (rtpengine's Kamailio module uses 1 s).
func NewClient(laddr string, retry time.Duration, log *slog.Logger, notify func(from netip.AddrPort, d Dict)) (*Client, error) {
	ua, err := net.ResolveUDPAddr("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("ng client %s: %w", laddr, err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("ng client: %w", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	c := &Client{conn: conn, log: log, prefix: hex.EncodeToString(b[:]) + "_", retry: retry, notify: notify,
		pending: map[string]chan Dict{}, done: make(chan struct{})}
	go c.read()
	return c, nil
}

// LazyReplies makes the client decode replies and notifications with
// ParseReply instead of Parse: their nested lists and dictionaries are
// Raw, read through Dict's accessors (Dict, DictAt, List, Raw).
func (c *Client) LazyReplies() { c.lazy.Store(true) }

// LocalAddr is the client's socket address, where servers send replies
// and notifications.
func (c *Client) LocalAddr() netip.AddrPort {
	a := c.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// Close stops the client.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// Do sends req to server and waits for the reply, retransmitting every
// retry interval until ctx ends.
func (c *Client) Do(ctx context.Context, server netip.AddrPort, req Dict) (Dict, error) {
	return c.DoWithin(ctx, server, req, 0)
}

// DoWithin is Do that also gives up after within (0: no limit), as a
// context.WithTimeout of ctx would, but with one timer for the
// retransmissions and the limit instead of a context, its timer and a
// ticker per command (three ng commands per anchored call: 5 % of sori's
// allocated bytes at 1000 calls/s, pprof allocs). The datagram's buffer,
// the reply's channel and the timer are pooled: BenchmarkClientDo (an
// answer with its SDP over loopback) went from 26 to 11 allocations and
// 2179 to 790 B per command (8 of the 15 saved: the keys' boxing in
// appendDict).
func (c *Client) DoWithin(ctx context.Context, server netip.AddrPort, req Dict, within time.Duration) (Dict, error) {
	cookie := c.prefix + strconv.FormatUint(c.seq.Add(1), 36)
	buf := encodeBufs.Get().(*[]byte)
	defer encodeBufs.Put(buf)
	b, err := encode((*buf)[:0], cookie, req)
	if err != nil {
		return nil, err
	}
	*buf = b[:0] // grown, kept for the next command
	ch := replyChans.Get().(chan Dict)
	c.mu.Lock()
	c.pending[cookie] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, cookie)
		c.mu.Unlock()
		// read sends under c.mu, to a pending cookie only: nothing more
		// comes now but a duplicate already sent, taken out here.
		select {
		case <-ch:
		default:
		}
		replyChans.Put(ch)
	}()
	var deadline time.Time
	if within > 0 {
		deadline = time.Now().Add(within)
	}
	if d, ok := ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline = d
	}
	next := func() time.Duration {
		if deadline.IsZero() {
			return c.retry
		}
		return min(c.retry, time.Until(deadline))
	}
	t := timers.Get().(*time.Timer)
	t.Reset(next())
	defer func() {
		t.Stop() // nothing left to receive after it (Go ≥ 1.23 timers)
		timers.Put(t)
	}()
	timedOut := func() error {
		return fmt.Errorf("ng %s to %s: %w", req.Str("command"), server, ErrTimeout)
	}
	for {
		if _, err := c.conn.WriteToUDPAddrPort(b, server); err != nil {
			return nil, fmt.Errorf("ng %s to %s: %w", req.Str("command"), server, err)
		}
		select {
		case res := <-ch:
			return res, nil
		case <-t.C:
			if !deadline.IsZero() && !time.Now().Before(deadline) {
				return nil, timedOut()
			}
			t.Reset(next())
		case <-ctx.Done():
			return nil, timedOut()
		}
	}
}

func (c *Client) read() {
	defer close(c.done)
	buf := make([]byte, 65535)
	for {
		n, from, err := c.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		parse := Parse // a copy: buf is read into again
		if c.lazy.Load() {
			parse = ParseReply
		}
		cookie, d, err := parse(buf[:n])
		if err != nil {
			c.log.Debug("ng: unreadable datagram", "from", from, "error", err)
			continue
		}
		c.mu.Lock()
		ch, ok := c.pending[cookie]
		if ok { // under c.mu: DoWithin pools ch once it is no longer pending
			select {
			case ch <- d:
			default: // a duplicate reply
			}
		}
		c.mu.Unlock()
		switch {
		case ok:
		case d.Str("command") != "" && c.notify != nil:
			c.notify(netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), d)
		}
	}
}
