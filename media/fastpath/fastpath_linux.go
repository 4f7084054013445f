package fastpath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

const routeLocal = 1 // forward.c's ROUTE_LOCAL

// Path is the loaded program, attached to the ingress of the interfaces
// the anchor's addresses are on, with its routes and records.
type Path struct {
	objs  forwardObjects
	links []link.Link
	rd    *ringbuf.Reader
	local map[netip.Addr]bool // this host's addresses when Open ran
	loop  []netip.Prefix      // and its loopback interfaces' prefixes (127.0.0.0/8): local too
	rt    *rtnetlink.Conn     // route lookups for non-local destinations (Set; its caller serialises)
}

// Open loads the program and attaches it (tcx ingress) to the interfaces
// holding addrs: loopback for 127.0.0.0/8, every interface that is up for
// an unspecified address. It needs CAP_BPF and CAP_NET_ADMIN (root) and
// Linux 6.6 or later; the error says what failed.
func Open(addrs []netip.Addr) (*Path, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("fastpath: interfaces: %w", err)
	}
	p := &Path{local: map[netip.Addr]bool{}}
	attach := map[int]bool{}
	for _, ifc := range ifaces {
		as, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			p.local[pfx.Addr().Unmap()] = true
			if ifc.Flags&net.FlagLoopback != 0 && ifc.Flags&net.FlagUp != 0 {
				p.loop = append(p.loop, pfx.Masked())
			}
			for _, want := range addrs {
				want = want.Unmap()
				if pfx.Addr().Unmap() == want || (want.IsLoopback() && ifc.Flags&net.FlagLoopback != 0) {
					attach[ifc.Index] = true
				}
			}
		}
		for _, want := range addrs {
			if want.IsUnspecified() && ifc.Flags&net.FlagUp != 0 {
				attach[ifc.Index] = true
			}
		}
	}
	if len(attach) == 0 {
		return nil, fmt.Errorf("fastpath: no interface holds %v", addrs)
	}
	if p.rt, err = rtnetlink.Dial(nil); err != nil {
		return nil, fmt.Errorf("fastpath: route netlink: %w", err)
	}
	if err := loadForwardObjects(&p.objs, nil); err != nil {
		p.rt.Close()
		return nil, fmt.Errorf("fastpath: load: %w", err)
	}
	for idx := range attach {
		l, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: p.objs.SoriRtpFwd, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("fastpath: attach to interface %d: %w", idx, err)
		}
		p.links = append(p.links, l)
	}
	rd, err := ringbuf.NewReader(p.objs.Records)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("fastpath: records: %w", err)
	}
	p.rd = rd
	return p, nil
}

// be4 is a network-order IPv4 address as the program reads it from the
// packet (a little-endian load of big-endian bytes).
func be4(a netip.Addr) uint32 {
	b := a.Unmap().As4()
	return binary.NativeEndian.Uint32(b[:])
}

// be2 is a port in network order, as loaded by the program.
func be2(port uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], port)
	return binary.NativeEndian.Uint16(b[:])
}

func key(local netip.AddrPort) forwardKey {
	return forwardKey{Addr: be4(local.Addr()), Port: be2(local.Port())}
}

// Set routes the RTP arriving at local (the anchor's socket of the
// receiving leg) from r.Src.
func (p *Path) Set(local netip.AddrPort, r Route) error {
	if err := routable(r); err != nil {
		return err
	}
	if !local.IsValid() || !local.Addr().Unmap().Is4() || local.Addr().IsUnspecified() {
		return ErrUnsupported
	}
	v := forwardRoute{
		SrcAddr: be4(r.Src.Addr()), SrcPort: be2(r.Src.Port()),
		OutAddr: be4(r.Out.Addr()), OutPort: be2(r.Out.Port()),
		DstAddr: be4(r.Dst.Addr()), DstPort: be2(r.Dst.Port()),
		Id: r.ID,
	}
	if p.isLocal(r.Dst.Addr().Unmap()) {
		v.Flags = routeLocal
	} else {
		ifindex, nh, err := p.nextHop(r.Out.Addr().Unmap(), r.Dst.Addr().Unmap())
		if err != nil {
			return fmt.Errorf("fastpath: route to %s: %w", r.Dst, err)
		}
		v.Ifindex, v.NhAddr = ifindex, be4(nh)
	}
	k := key(local)
	if err := p.objs.Routes.Put(&k, &v); err != nil {
		return fmt.Errorf("fastpath: route %s: %w", local, err)
	}
	return nil
}

func (p *Path) isLocal(a netip.Addr) bool {
	if p.local[a] {
		return true
	}
	for _, pfx := range p.loop {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// nextHop is where the kernel would send from src to dst (ip route get
// dst from src): the interface and the gateway, or dst itself on a link.
// Looked up once per route: a change of the host's routes reaches a
// stream when its route is set again.
func (p *Path) nextHop(src, dst netip.Addr) (uint32, netip.Addr, error) {
	msgs, err := p.rt.Route.Get(&rtnetlink.RouteMessage{
		Family:    unix.AF_INET,
		DstLength: 32,
		SrcLength: 32,
		Attributes: rtnetlink.RouteAttributes{
			Dst: net.IP(dst.AsSlice()),
			Src: net.IP(src.AsSlice()),
		},
	})
	if err != nil {
		return 0, netip.Addr{}, err
	}
	for _, m := range msgs {
		if m.Type != unix.RTN_UNICAST || m.Attributes.OutIface == 0 {
			continue
		}
		nh := dst
		if gw, ok := netip.AddrFromSlice(m.Attributes.Gateway); ok && gw.Unmap().Is4() {
			nh = gw.Unmap()
		}
		return m.Attributes.OutIface, nh, nil
	}
	return 0, netip.Addr{}, errors.New("no unicast route")
}

// Delete removes local's route: its packets go to the relay again.
func (p *Path) Delete(local netip.AddrPort) {
	if !local.IsValid() || !local.Addr().Unmap().Is4() {
		return
	}
	k := key(local)
	_ = p.objs.Routes.Delete(&k) // absent: nothing to do
}

// pollEvery is how often Run reads the records: the program never wakes
// it (BPF_RB_NO_WAKEUP), so a stream's counters and statistics lag the
// packets by up to this.
const pollEvery = 10 * time.Millisecond

// Run hands each record to each until ctx ends or the path is closed.
func (p *Path) Run(ctx context.Context, each func(Record)) error {
	var raw ringbuf.Record
	for ctx.Err() == nil {
		p.rd.SetDeadline(time.Now().Add(pollEvery))
		offset := wallMinusMonotonic()
		for {
			err := p.rd.ReadInto(&raw)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
					return nil
				}
				return fmt.Errorf("fastpath: records: %w", err)
			}
			b := raw.RawSample
			if len(b) < 24 {
				continue
			}
			each(Record{
				Arrival: time.Unix(0, int64(binary.NativeEndian.Uint64(b[0:8]))+offset),
				ID:      binary.NativeEndian.Uint32(b[8:12]),
				SSRC:    binary.NativeEndian.Uint32(b[12:16]),
				TS:      binary.NativeEndian.Uint32(b[16:20]),
				Seq:     binary.NativeEndian.Uint16(b[20:22]),
				Len:     binary.NativeEndian.Uint16(b[22:24]),
			})
		}
	}
	return nil
}

func wallMinusMonotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Now().UnixNano() - ts.Nano()
}

// Counts sums the program's per-CPU counters.
func (p *Path) Counts() Counts {
	var c Counts
	for i, dst := range []*uint64{&c.Forwarded, &c.RingFull} {
		var per []uint64
		k := uint32(i)
		if err := p.objs.Counts.Lookup(&k, &per); err != nil {
			continue
		}
		for _, v := range per {
			*dst += v
		}
	}
	return c
}

// Close detaches the program (the relay gets every packet again) and
// frees its maps.
func (p *Path) Close() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	if p.rd != nil {
		errs = append(errs, p.rd.Close())
	}
	errs = append(errs, p.objs.Close())
	if p.rt != nil {
		errs = append(errs, p.rt.Close())
		p.rt = nil
	}
	return errors.Join(errs...)
}
