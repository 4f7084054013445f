//go:build !linux

package relay

import (
	"encoding/binary"
	"github.com/sori-voice/sori/media/ports"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Elsewhere than Linux a goroutine per socket reads and writes one packet
// per call, and a goroutine per jitter buffer plays it out.

// socket is one of a stream's sockets.
type socket struct {
	conn *net.UDPConn
	v6   bool // an IPv6 socket
	s    *Stream
	rtcp bool
}

func newSocket(p *ports.Pair, rtcp bool) (*socket, error) {
	c, rc := p.Conns()
	if rtcp {
		c = rc
	}
	return &socket{conn: c, v6: c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Is6()}, nil
}

func (k *socket) close() { k.conn.Close() }

func (k *socket) writeTo(b []byte, dst netip.AddrPort) error {
	_, err := k.conn.WriteToUDPAddrPort(b, dst)
	return err
}

type streamSys struct{ startOnce sync.Once }

func (s *Stream) platformInit() {}

// Start begins forwarding (idempotent).
func (s *Stream) Start() {
	s.startOnce.Do(func() {
		s.wg.Add(2)
		go s.pump(s.rtpSock, false)
		go s.pump(s.rtcpSock, true)
		if s.play != nil {
			s.wg.Add(1)
			go s.player()
		}
	})
}

// Wait blocks until the stream's sockets are closed and its pumps ended.
func (s *Stream) Wait() { s.wg.Wait() }

func (s *Stream) pump(sock *socket, rtcp bool) {
	defer s.wg.Done()
	c := &s.rtp
	if rtcp {
		c = &s.rtcp
	}
	buf := make([]byte, bufSize)
	for {
		n, src, err := sock.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		now := time.Now()
		s.last.Store(now.UnixNano())
		c.packets.Add(1)
		c.bytes.Add(uint64(n))
		from := netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		lc := s.crypto.Load()
		if lc != nil {
			if !rtcp && s.takeOther(buf[:n], from) {
				continue // STUN, DTLS: before latching, as on Linux
			}
			if !s.iceAllows(from) {
				c.errors.Add(1)
				continue
			}
		}
		if !s.accept(from, rtcp) {
			c.errors.Add(1)
			continue
		}
		if lc != nil {
			lc.mu.Lock()
			dec, err := lc.decrypt(buf[:n], rtcp || isRTCP(buf[:n]))
			lc.mu.Unlock()
			if err != nil {
				c.errors.Add(1)
				continue
			}
			n = len(dec)
		}
		if bd := s.bundle.Load(); bd != nil {
			if sec := bd.Route(buf[:n]); sec >= 0 && bd.secs[sec].Stream != nil && bd.secs[sec].Stream != s {
				t, isCtl := bd.secs[sec].Stream, rtcp || isRTCP(buf[:n])
				c.packets.Add(^uint64(0))
				c.bytes.Add(^uint64(n - 1))
				t.received(buf[:n], isCtl, now)
				if t.heldBack(1) {
					continue
				}
				if out, dst, ok := t.out(isCtl); !ok || out.writeProtected(buf[:n], dst, isCtl) != nil {
					t.rtp.errors.Add(1)
				}
				continue
			}
		}
		if rtcp || isRTCP(buf[:n]) {
			s.observeRTCP(buf[:n], now)
		} else {
			s.statsMu.Lock()
			s.observe(buf[:n], now)
			s.statsMu.Unlock()
			if peer := s.peer.Load(); peer != nil && n >= 12 {
				if sentOn := peer.bundle.Load(); sentOn != nil {
					sentOn.Sent(s, binary.BigEndian.Uint32(buf[8:12]))
				}
			}
			if s.play != nil && isRTP(buf[:n]) {
				p := packetPool.Get().(*[bufSize]byte)
				if _, ok := s.enqueue(buf[:n], now, p[:]); !ok {
					packetPool.Put(p)
					c.errors.Add(1)
				} else {
					select {
					case s.play.wake <- struct{}{}:
					default:
					}
				}
				continue
			}
		}
		if s.heldBack(1) {
			continue // the other side's keys are not there yet (srtp.go)
		}
		out, dst, ok := s.out(rtcp)
		if !ok {
			c.errors.Add(1)
			continue
		}
		if err := out.writeProtected(buf[:n], dst, rtcp); err != nil {
			c.errors.Add(1)
		}
	}
}

// writeProtected sends b to the socket's phone, encrypted when its leg
// speaks SRTP.
func (k *socket) writeProtected(b []byte, dst netip.AddrPort, rtcp bool) error {
	if lc := k.s.crypto.Load(); lc != nil {
		lc.mu.Lock()
		out, err := lc.encrypt(make([]byte, 0, len(b)+srtpRoom), b, rtcp || isRTCP(b))
		lc.mu.Unlock()
		if err != nil {
			return err
		}
		b = out
	}
	return k.writeTo(b, dst)
}

// isRTCP tells RTCP from RTP on a multiplexed port: RTCP packet types
// 192-223 sit where RTP has marker+payload type 64-95 (RFC 5761 §4).
func isRTCP(b []byte) bool { return len(b) >= 8 && b[1] >= 192 && b[1] <= 223 }

// packetPool holds the copies of packets waiting in jitter buffers: whole
// arrays, so that putting one back allocates nothing.
var packetPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// player sends what the jitter buffer releases, at its playout time.
func (s *Stream) player() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		s.play.mu.Lock()
		for {
			pkt, ok := s.play.buf.Pop(now)
			if !ok {
				break
			}
			s.play.mu.Unlock()
			s.sendPlayed(pkt.Payload)
			packetPool.Put((*[bufSize]byte)(pkt.Payload[:bufSize]))
			s.play.mu.Lock()
		}
		next, ok := s.play.buf.NextDeadline()
		s.play.mu.Unlock()
		wait := time.Hour
		if ok {
			wait = max(time.Until(next), 0)
		}
		t.Reset(wait)
		select {
		case <-s.play.stop:
			return
		case <-s.play.wake:
		case <-t.C:
		}
	}
}

func (s *Stream) sendPlayed(b []byte) {
	if s.heldBack(1) {
		return
	}
	sock, dst, ok := s.out(false)
	if !ok {
		s.rtp.errors.Add(1)
		return
	}
	if err := sock.writeProtected(b, dst, false); err != nil {
		s.rtp.errors.Add(1)
	}
}

// SetWorkers has no effect elsewhere than Linux.
func SetWorkers(int) {}

// SetSendRing has no effect elsewhere than Linux.
func SetSendRing(bool) {}

// CheckSendRing is nil elsewhere than Linux: there is no ring to miss.
func CheckSendRing() error { return nil }

// wakeups is 0: no workers elsewhere than Linux.
func wakeups() uint64 { return 0 }

// DefaultWorkers is 0: no workers elsewhere than Linux.
func DefaultWorkers() int { return 0 }
