//go:build !linux

package ports

import (
	"net"
	"net/netip"
)

// Elsewhere than Linux the pair is two of Go's UDP sockets, closed on
// release (media/relay reads them with goroutines, which only closing
// stops).
type pairSockets struct{ rtp, rtcp *net.UDPConn }

// Conns are the pair's sockets.
func (p *Pair) Conns() (rtp, rtcp *net.UDPConn) { return p.socks.rtp, p.socks.rtcp }

func bindPair(addr netip.Addr, port int) (*Pair, error) {
	rtp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
	if err != nil {
		return nil, err
	}
	rtcp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port+1))))
	if err != nil {
		rtp.Close()
		return nil, err
	}
	return &Pair{Port: port, addr: addr, socks: pairSockets{rtp, rtcp}}, nil
}

func (s *pairSockets) park() bool    { return false }
func (s *pairSockets) unpark() error { return nil }
func (s *pairSockets) close()        { s.rtp.Close(); s.rtcp.Close() }
