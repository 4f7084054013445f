package opus

import (
	"errors"
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	tests := []struct {
		name    string
		payload []byte
		want    time.Duration
		err     error
	}{
		{"SILK NB 10 ms, one frame", []byte{0 << 3, 0xaa}, ms(10), nil},
		{"SILK WB 20 ms", []byte{9 << 3}, ms(20), nil},
		{"SILK WB 60 ms", []byte{11 << 3}, ms(60), nil},
		{"Hybrid FB 20 ms (what phones send most)", []byte{15 << 3}, ms(20), nil},
		{"CELT FB 20 ms mono", []byte{0xf8}, ms(20), nil},
		{"CELT FB 20 ms stereo", []byte{0xfc}, ms(20), nil},
		{"CELT NB 2.5 ms", []byte{16 << 3}, ms(2.5), nil},
		{"two equal frames of 20 ms", []byte{15<<3 | 1}, ms(40), nil},
		{"two different frames of 10 ms", []byte{14<<3 | 2}, ms(20), nil},
		{"code 3, six CELT 20 ms frames", []byte{31<<3 | 3, 6}, ms(120), nil},
		{"code 3, three 2.5 ms frames with padding flag", []byte{16<<3 | 3, 0x40 | 3}, ms(7.5), nil},
		{"code 3 over 120 ms", []byte{11<<3 | 3, 3}, 0, ErrMalformed},
		{"code 3 with zero frames", []byte{31<<3 | 3, 0}, 0, ErrMalformed},
		{"code 3 without the count byte", []byte{31<<3 | 3}, 0, ErrMalformed},
		{"empty (DTX is a missing packet, not an empty one)", nil, 0, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Duration(tt.payload)
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Fatalf("got %v %v, want %v %v", got, err, tt.want, tt.err)
			}
		})
	}
	if n, err := Samples([]byte{0xfc}); n != 960 || err != nil {
		t.Fatalf("20 ms = %d samples at 48 kHz (%v)", n, err)
	}
}
