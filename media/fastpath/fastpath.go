// Package fastpath is sori-anchor's kernel fast path: an eBPF program on
// the ingress of the interfaces the anchor's media addresses are on
// (forward.c), which forwards a plain RTP stream from the latched phone
// straight to the other leg's phone, with the addresses the relay would
// send it from, and reports every packet it forwards (Record) for the
// relay's statistics. Everything else it leaves to the relay.
//
// The relay decides which streams take it (media/relay/fast.go): a Route
// per stream, set once the stream is latched and needs nothing the kernel
// cannot do (no jitter buffer, no SRTP, no ICE, no BUNDLE), and deleted
// whenever the stream's state changes, after which its next packet goes
// through the relay, which sets the route again if it still can.
package fastpath

import (
	"errors"
	"net/netip"
	"time"
)

// Route is where the fast path sends a stream's RTP.
type Route struct {
	Src netip.AddrPort // the latched phone: only its packets take the fast path
	Out netip.AddrPort // the anchor's socket the relay sends from (the other leg's)
	Dst netip.AddrPort // the other leg's phone
	ID  uint32         // the stream, in each Record
}

// Record is one packet the fast path forwarded.
type Record struct {
	Arrival time.Time
	ID      uint32
	SSRC    uint32
	TS      uint32
	Seq     uint16
	Len     uint16 // RTP bytes (UDP payload)
}

// Counts are the fast path's totals since Open.
type Counts struct {
	Forwarded uint64 // packets forwarded in the kernel
	RingFull  uint64 // packets left to the relay because the records' ring was full
}

// ErrUnsupported: the route cannot be forwarded in the kernel (IPv6, or
// an address the anchor does not own).
var ErrUnsupported = errors.New("fastpath: route not supported in the kernel")

func routable(r Route) error {
	for _, a := range []netip.AddrPort{r.Src, r.Out, r.Dst} {
		if !a.IsValid() || !a.Addr().Unmap().Is4() || a.Addr().IsUnspecified() || a.Port() == 0 {
			return ErrUnsupported
		}
	}
	return nil
}
