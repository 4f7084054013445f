package transport

import (
	"net"
	"testing"
	"time"
)

// The kernel stamps a datagram as it arrives: a request read a while
// after it came carries the time it came, not the time it was read.
func TestDatagramArrivalStamp(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !stampArrivals(c) {
		t.Fatal("SO_TIMESTAMPNS refused")
	}
	out, err := net.DialUDP("udp", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	sent := time.Now()
	if _, err := out.Write([]byte("OPTIONS")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the datagram waits in the socket's buffer
	buf, oob := make([]byte, 100), make([]byte, oobSize)
	_, oobn, _, _, err := c.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	got := arrival(oob[:oobn])
	if got.IsZero() || got.Before(sent.Add(-time.Second)) || time.Since(got) < 50*time.Millisecond {
		t.Fatalf("arrival %v: want about when it was sent (%v), at least 50 ms ago", got, sent)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, make([]byte, oobSize)} {
		if got := arrival(bad); !got.IsZero() {
			t.Errorf("arrival(%v) = %v, want zero", bad, got)
		}
	}
}
