// Package opus reads what the anchor needs of an Opus packet without
// decoding it: its duration, from the TOC byte (RFC 6716 §3.1).
package opus

import (
	"errors"
	"time"
)

// ErrMalformed: the packet breaks RFC 6716 §3 (R1-R7 as far as the TOC
// and frame count byte tell).
var ErrMalformed = errors.New("opus: malformed packet")

// frameSize is the duration of one frame for each TOC configuration
// (RFC 6716 Table 2), in units of 2.5 ms.
var frameSize = [32]uint8{
	4, 8, 16, 24, // SILK NB 10, 20, 40, 60 ms
	4, 8, 16, 24, // SILK MB
	4, 8, 16, 24, // SILK WB
	4, 8, // Hybrid SWB 10, 20 ms
	4, 8, // Hybrid FB
	1, 2, 4, 8, // CELT NB 2.5, 5, 10, 20 ms
	1, 2, 4, 8, // CELT WB
	1, 2, 4, 8, // CELT SWB
	1, 2, 4, 8, // CELT FB
}

// Duration is how much audio the packet carries: frames times frame size.
func Duration(payload []byte) (time.Duration, error) {
	if len(payload) == 0 {
		return 0, ErrMalformed
	}
	toc := payload[0]
	frames := 1
	switch toc & 3 {
	case 1, 2:
		frames = 2
	case 3:
		if len(payload) < 2 {
			return 0, ErrMalformed
		}
		frames = int(payload[1] & 0x3f)
		if frames == 0 {
			return 0, ErrMalformed
		}
	}
	d := time.Duration(frames) * time.Duration(frameSize[toc>>3]) * 2500 * time.Microsecond
	if d > 120*time.Millisecond { // R5
		return 0, ErrMalformed
	}
	return d, nil
}

// Samples is Duration in 48 kHz RTP timestamp units (RFC 7587 §4.1: Opus
// always uses a 48 kHz RTP clock).
func Samples(payload []byte) (uint32, error) {
	d, err := Duration(payload)
	return uint32(d / (time.Second / 48000)), err
}
