package transport

import (
	"sync"
	"time"
)

// lingerMax bounds how long a connection whose peer stopped sending (or
// sent what cannot be framed) stays open for the answers it is owed.
const lingerMax = 32 * time.Second

// lifetime is when a connection (TCP, TLS, WebSocket) closes: once its peer
// has stopped sending and every transaction read from it has its answer,
// lingerMax at most after the peer stopped. Each transaction holds it
// open (Hold), so a peer that closes its sending side, or sends garbage
// after a request, still gets the responses to what it sent before.
type lifetime struct {
	shut func() // closes the socket and forgets the connection; called once

	mu      sync.Mutex
	pending int  // transactions holding the connection
	reading bool // the read loop still runs
	closed  bool
	done    chan struct{}
}

func newLifetime(shut func()) lifetime {
	return lifetime{shut: shut, reading: true, done: make(chan struct{})}
}

// Hold implements Conn.
func (l *lifetime) Hold() func() {
	l.mu.Lock()
	l.pending++
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.pending--
			last := l.pending == 0 && !l.reading
			l.mu.Unlock()
			if last {
				l.close()
			}
		})
	}
}

// readDone: the peer sent its last byte. The connection closes now, or
// when the last transaction holding it is answered (lingerMax at most).
func (l *lifetime) readDone() {
	l.mu.Lock()
	l.reading = false
	idle := l.pending == 0
	l.mu.Unlock()
	if idle {
		l.close()
		return
	}
	go func() {
		select {
		case <-l.done:
		case <-time.After(lingerMax):
			l.close()
		}
	}()
}

func (l *lifetime) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

func (l *lifetime) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.done)
	l.mu.Unlock()
	l.shut()
}
