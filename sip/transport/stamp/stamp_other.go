//go:build !linux

// Package stamp: no kernel arrival stamps here; a datagram's time is
// when it is read.
package stamp

import (
	"errors"
	"net"
	"time"
)

// On: not on this system.
func On(*net.UDPConn) error { return errors.New("SO_TIMESTAMPNS: not on this system") }

const OOBSize = 0

func Arrival([]byte) time.Time { return time.Time{} }
