package opus

import (
	"testing"
	"time"
)

// FuzzDuration: any payload has a duration of whole 2.5 ms frames up to
// 120 ms (RFC 6716 R5), or is refused; Samples agrees with it.
func FuzzDuration(f *testing.F) {
	for _, p := range [][]byte{{}, {0}, {0xf8, 0xff, 0xfe}, {15<<3 | 1}, {14<<3 | 2}, {31<<3 | 3, 6}, {16<<3 | 3, 0x40 | 3}, {11<<3 | 3, 3}, {3}, {31<<3 | 3, 0}} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		d, err := Duration(payload)
		n, serr := Samples(payload)
		if (err == nil) != (serr == nil) {
			t.Fatalf("Duration %v, Samples %v", err, serr)
		}
		if err != nil {
			if err != ErrMalformed || d != 0 || n != 0 {
				t.Fatalf("refused with %v, %v, %d", err, d, n)
			}
			return
		}
		if d <= 0 || d > 120*time.Millisecond || d%(2500*time.Microsecond) != 0 {
			t.Fatalf("duration %v", d)
		}
		if n != uint32(d/time.Microsecond*48/1000) {
			t.Fatalf("%d samples for %v", n, d)
		}
	})
}
