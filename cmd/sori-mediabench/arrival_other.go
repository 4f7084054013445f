//go:build !linux

package main

import "net"

const arrivalOOB = 0

// stampArrivals: without SO_TIMESTAMPNS a packet's latency ends when the
// generator reads it.
func stampArrivals(*net.UDPConn) error { return nil }

func arrival([]byte) int64 { return 0 }
