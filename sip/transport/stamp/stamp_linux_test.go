package stamp

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
	if err := On(c); err != nil {
		t.Fatal(err)
	}
	out, err := net.DialUDP("udp", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// The kernel turns its receive stamps on a little after the first
	// socket asks (a deferred static key); until then a datagram is
	// stamped when it is read. A long-lived socket has them long before
	// its traffic: the first datagrams here wait for that, up to 5 s.
	var sent, got time.Time
	for deadline := time.Now().Add(5 * time.Second); ; {
		sent = time.Now()
		if _, err := out.Write([]byte("OPTIONS")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the datagram waits in the socket's buffer
		buf, oob := make([]byte, 100), make([]byte, OOBSize)
		_, oobn, _, _, err := c.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			t.Fatal(err)
		}
		got = Arrival(oob[:oobn])
		if got.IsZero() || time.Since(got) >= 50*time.Millisecond || time.Now().After(deadline) {
			break
		}
	}
	if got.IsZero() || got.Before(sent.Add(-time.Second)) || time.Since(got) < 50*time.Millisecond {
		t.Fatalf("arrival %v: want about when it was sent (%v), at least 50 ms ago", got, sent)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, make([]byte, OOBSize)} {
		if got := Arrival(bad); !got.IsZero() {
			t.Errorf("Arrival(%v) = %v, want zero", bad, got)
		}
	}
}
