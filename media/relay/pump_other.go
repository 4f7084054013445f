//go:build !linux

package relay

import (
	"net/netip"
	"time"
)

// Elsewhere than Linux the pump reads and writes one packet per call.
func (s *Stream) pump(sock *socket, rtcp bool) {
	defer s.wg.Done()
	c := &s.rtp
	if rtcp {
		c = &s.rtcp
	}
	buf := make([]byte, 2048)
	for {
		n, src, err := sock.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		now := time.Now()
		s.last.Store(now.UnixNano())
		if rtcp || isRTCPPacket(buf[:n]) {
			s.observeRTCP(buf[:n], now)
		} else {
			s.statsMu.Lock()
			s.observe(buf[:n], now)
			s.statsMu.Unlock()
			if s.play != nil && isRTP(buf[:n]) {
				if !s.enqueue(buf[:n], now) {
					c.errors.Add(1)
				}
				continue
			}
		}
		c.packets.Add(1)
		c.bytes.Add(uint64(n))
		if !s.accept(netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), rtcp) {
			c.errors.Add(1)
			continue
		}
		out, dst, ok := s.out(rtcp)
		if !ok {
			c.errors.Add(1)
			continue
		}
		if _, err := out.conn.WriteToUDPAddrPort(buf[:n], dst); err != nil {
			c.errors.Add(1)
		}
	}
}

func isRTCPPacket(b []byte) bool { return len(b) >= 8 && b[1] >= 192 && b[1] <= 223 }
