package redistest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Cutter is a TCP proxy to a Redis that a test can cut: a partition
// between one client (a sori node) and Redis, the others still reaching
// it. Cut closes every connection through it, and the ones dialled while
// cut are held open with nothing relayed (a black hole: commands time
// out, as across a network partition); Mend relays again.
type Cutter struct {
	ln    net.Listener
	to    string
	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
}

// NewCutter relays to the Redis at to ("127.0.0.1:PORT") until the test ends.
func NewCutter(t testing.TB, to string) *Cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cutter{ln: ln, to: to, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = ln.Close(); c.Cut() })
	go c.serve()
	return c
}

// Addr is where clients dial it.
func (c *Cutter) Addr() string { return c.ln.Addr().String() }

// URL is redis://ADDR/0 through it.
func (c *Cutter) URL() string { return "redis://" + c.Addr() + "/0" }

func (c *Cutter) serve() {
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.conns[in] = true
		cut := c.cut
		c.mu.Unlock()
		if cut {
			go func() { _, _ = io.Copy(io.Discard, in) }() // held, never answered
			continue
		}
		out, err := net.Dial("tcp", c.to)
		if err != nil {
			_ = in.Close()
			continue
		}
		c.mu.Lock()
		c.conns[out] = true
		c.mu.Unlock()
		go func() { _, _ = io.Copy(out, in); _ = out.Close() }()
		go func() { _, _ = io.Copy(in, out); _ = in.Close() }()
	}
}

// Cut closes every connection through c and answers none from now on.
func (c *Cutter) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
	c.closeAll()
}

// Mend relays again (the connections held while cut are closed).
func (c *Cutter) Mend() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = false
	c.closeAll()
}

// closeAll closes every connection; c.mu held.
func (c *Cutter) closeAll() {
	for conn := range c.conns {
		_ = conn.Close()
	}
	clear(c.conns)
}
