package main

import (
	"net"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// TestArrivalIsTheKernels checks that a datagram read after a pause
// carries the time it reached the socket, not the time it was read.
func TestArrivalIsTheKernels(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := stampArrivals(c); err != nil {
		t.Fatal(err)
	}
	tx, err := net.DialUDP("udp4", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	pc := ipv4.NewPacketConn(c)
	msgs := []ipv4.Message{{Buffers: [][]byte{make([]byte, 64)}, OOB: make([]byte, arrivalOOB)}}
	// The kernel turns its receive timestamps on a little after the first
	// socket asks (a deferred static key), as the generator's sockets
	// have long before its measurement: a first datagram waits for that.
	deadline := time.Now().Add(5 * time.Second)
	var sent, read int64
	for {
		sent = time.Now().UnixNano()
		if _, err := tx.Write([]byte("rtp")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the generator busy elsewhere
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := pc.ReadBatch(msgs, 0)
		read = time.Now().UnixNano()
		if err != nil || n != 1 {
			t.Fatalf("read %d: %v", n, err)
		}
		if at := arrival(msgs[0].OOB[:msgs[0].NN]); at < read-40*int64(time.Millisecond) || time.Now().After(deadline) {
			break
		}
	}
	at := arrival(msgs[0].OOB[:msgs[0].NN])
	if at < sent || at > read-40*int64(time.Millisecond) {
		t.Fatalf("arrival %d ns after sending, read %d ns after", at-sent, read-sent)
	}
	if arrival(nil) != 0 || arrival(make([]byte, arrivalOOB)) != 0 {
		t.Fatal("no control message read as an arrival time")
	}
}
