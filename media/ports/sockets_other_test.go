//go:build !linux

package ports

import (
	"net"
	"testing"
)

func boundPorts(t *testing.T, p *Pair) (rtp, rtcp int) {
	a, b := p.Conns()
	return a.LocalAddr().(*net.UDPAddr).Port, b.LocalAddr().(*net.UDPAddr).Port
}
