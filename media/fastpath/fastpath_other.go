//go:build !linux

package fastpath

import (
	"context"
	"errors"
	"net/netip"
)

// Path is unavailable off Linux.
type Path struct{}

// Open fails off Linux.
func Open(addrs []netip.Addr) (*Path, error) {
	return nil, errors.New("fastpath: needs Linux's eBPF tcx")
}

// Set fails off Linux.
func (p *Path) Set(local netip.AddrPort, r Route) error { return ErrUnsupported }

// Delete does nothing off Linux.
func (p *Path) Delete(local netip.AddrPort) {}

// Run returns at once off Linux.
func (p *Path) Run(ctx context.Context, each func(Record)) error { return nil }

// Counts are zero off Linux.
func (p *Path) Counts() Counts { return Counts{} }

// Close does nothing off Linux.
func (p *Path) Close() error { return nil }
