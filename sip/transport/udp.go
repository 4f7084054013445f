package transport

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sori-voice/sori/sip/transport/stamp"
)

// maxDatagram is the largest UDP payload (IPv4: 65 535 - 8 - 20).
const maxDatagram = 65507

// udpSocket is one listening UDP socket; it also sends every request and
// response sori puts on UDP, so peers see the port they registered to.
type udpSocket struct {
	t       *Transport
	conn    *net.UDPConn
	local   netip.AddrPort
	stamped bool // the kernel stamps each datagram's arrival (stamp_linux.go)
}

// serve reads datagrams until the socket closes. Each one is checked and
// parsed here, on the reading goroutine: the parsed message keeps copies,
// so the buffer is reused at once.
func (u *udpSocket) serve() {
	buf := make([]byte, maxDatagram+1)
	oob := make([]byte, stamp.OOBSize)
	for {
		var n, oobn int
		var src netip.AddrPort
		var err error
		if u.stamped {
			n, oobn, _, src, err = u.conn.ReadMsgUDPAddrPort(buf, oob)
		} else {
			n, src, err = u.conn.ReadFromUDPAddrPort(buf)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			u.t.log.Warn("udp read failed", "local", u.local, "error", err)
			continue
		}
		if n == 0 {
			continue
		}
		peer := &udpPeer{sock: u, remote: unmap(src)}
		if u.stamped {
			peer.arrived = stamp.Arrival(oob[:oobn])
		}
		if buf[0] < 2 && u.t.admitted(peer) && u.t.stunKeepalive(buf[:n], peer) {
			continue // a STUN keepalive (its first byte: 0 or 1; SIP starts with a letter)
		}
		u.t.ingest(buf[:n], peer)
	}
}

// udpPeer is a UDP peer: our socket and its address; one for each
// datagram received, with the time the kernel got it.
type udpPeer struct {
	sock    *udpSocket
	remote  netip.AddrPort
	arrived time.Time
}

// Arrived is when the kernel received the datagram (zero: not stamped).
func (p *udpPeer) Arrived() time.Time { return p.arrived }

func (p *udpPeer) Transport() string      { return "UDP" }
func (p *udpPeer) Remote() netip.AddrPort { return p.remote }
func (p *udpPeer) LocalAddr() net.Addr    { return net.UDPAddrFromAddrPort(p.sock.local) }
func (p *udpPeer) Hold() func()           { return func() {} }

// Ref, TryClose and Close are sipgo's connection reference counting; the
// listening socket outlives every transaction.
func (p *udpPeer) Ref(int) int            { return 1 }
func (p *udpPeer) TryClose() (int, error) { return 1, nil }
func (p *udpPeer) Close() error           { return nil }
func (p *udpPeer) String() string         { return "udp:" + p.remote.String() }
func (p *udpPeer) Write(b []byte) error   { return p.sock.write(b, p.remote) }
func (p *udpPeer) WriteMsg(m sip.Message) error {
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	m.StringWrite(buf)
	p.sock.t.seal(buf, m, p.remote)
	return p.sock.write(buf.Bytes(), p.remote)
}

func (u *udpSocket) write(b []byte, to netip.AddrPort) error {
	if len(b) > maxDatagram {
		return fmt.Errorf("udp: %d bytes is larger than a datagram", len(b))
	}
	if _, err := u.conn.WriteToUDPAddrPort(b, to); err != nil {
		return fmt.Errorf("udp send to %s: %w", to, err)
	}
	return nil
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
