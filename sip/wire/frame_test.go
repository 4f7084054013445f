package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestFrame(t *testing.T) {
	one := string(msg("OPTIONS sip:sori.test SIP/2.0", "Content-Length: 5")) + "hello"
	tests := []struct {
		name    string
		buf     string
		skip, n int
		err     error // ErrIncomplete, a *FramingError (compared by Fault and End), or nil
	}{
		{"empty", "", 0, 0, ErrIncomplete},
		{"double-CRLF ping", "\r\n\r\n", 4, 0, ErrIncomplete},
		{"half a CRLF", "\r\n\r", 2, 0, ErrIncomplete},
		{"bare LF keepalive", "\n", 1, 0, ErrIncomplete},
		{"one message", one, 0, len(one), nil},
		{"keepalive then message", "\r\n\r\n" + one, 4, 4 + len(one), nil},
		{"message then more", one + "OPTIONS", 0, len(one), nil},
		{"body incomplete", one[:len(one)-1], 0, 0, ErrIncomplete},
		{"headers incomplete", one[:40], 0, 0, ErrIncomplete},
		{"bare LF message", strings.ReplaceAll(one, "\r\n", "\n"), 0, len(one) - 9, nil},
		{"missing Content-Length", string(msg("OPTIONS sip:sori.test SIP/2.0")), 0, 0,
			&FramingError{Fault{400, "Missing Content-Length"}, len(msg("OPTIONS sip:sori.test SIP/2.0")) - 2}},
		{"negative", "\r\n" + string(msg("OPTIONS sip:sori.test SIP/2.0", "l: -1")), 2, 0,
			&FramingError{Fault{400, "Negative Content-Length"}, len(msg("OPTIONS sip:sori.test SIP/2.0", "l: -1"))}},
		{"over the limit", string(msg("OPTIONS sip:sori.test SIP/2.0", "Content-Length: 65500")), 0, 0,
			&FramingError{Fault{413, "Content-Length Too Large"}, len(msg("OPTIONS sip:sori.test SIP/2.0", "Content-Length: 65500")) - 2}},
		{"two", string(msg("OPTIONS sip:sori.test SIP/2.0", "Content-Length: 0", "l: 0")), 0, 0,
			&FramingError{Fault{400, "Multiple Content-Length"}, len(msg("OPTIONS sip:sori.test SIP/2.0", "Content-Length: 0", "l: 0")) - 2}},
		// HTTP has the shape of a request line: framed as a request, and
		// refused for its missing Content-Length (Check would refuse it too).
		{"HTTP", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 0, &FramingError{Fault{400, "Missing Content-Length"}, 25}},
		{"garbage", "\x16\x03\x01\r\n\r\n", 0, 0, &FramingError{Fault{400, "Not a SIP Message"}, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			skip, n, err := Frame([]byte(tt.buf))
			if skip != tt.skip || n != tt.n || !sameFramingError(err, tt.err) {
				t.Fatalf("Frame = %d, %d, %v; want %d, %d, %v", skip, n, err, tt.skip, tt.n, tt.err)
			}
		})
	}
}

func sameFramingError(got, want error) bool {
	var g, w *FramingError
	if errors.As(want, &w) {
		return errors.As(got, &g) && *g == *w
	}
	return got == want
}

// TestFrameByteByByte feeds a stream one byte at a time: every prefix short
// of a message is incomplete, and the messages come out whole, in order.
func TestFrameByteByByte(t *testing.T) {
	a := string(msg("INVITE sip:bob@sori.test SIP/2.0", "Content-Type: text/plain", "Content-Length: 3")) + "abc"
	b := string(msg("BYE sip:bob@sori.test SIP/2.0", "l:0"))
	stream := "\r\n\r\n" + a + "\r\n" + b
	var buf []byte
	var got []string
	for i := 0; i < len(stream); i++ {
		buf = append(buf, stream[i])
		for {
			skip, n, err := Frame(buf)
			if err == ErrIncomplete {
				buf = buf[skip:]
				break
			}
			if err != nil {
				t.Fatalf("after %d bytes: %v", i+1, err)
			}
			if _, f := Check(buf[skip:n]); f != nil {
				t.Fatalf("framed message: %v", f)
			}
			got = append(got, string(buf[skip:n]))
			buf = buf[n:]
		}
	}
	if len(got) != 2 || got[0] != a || got[1] != b || len(buf) != 0 {
		t.Fatalf("messages %q, left %q", got, buf)
	}
}

// TestFrameHeaderLimit: a stream that never ends its header block is
// refused once it has sent MaxHeaderBlock bytes, and Reply can still answer
// from the complete lines.
func TestFrameHeaderLimit(t *testing.T) {
	buf := []byte("OPTIONS sip:sori.test SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n")
	for len(buf) <= MaxHeaderBlock {
		if _, _, err := Frame(buf); err != ErrIncomplete {
			t.Fatalf("at %d bytes: %v", len(buf), err)
		}
		buf = append(buf, "X-Pad: "+strings.Repeat("p", 100)+"\r\n"...)
	}
	buf = append(buf, "X-Cut: abc"...)
	skip, n, err := Frame(buf)
	var fe *FramingError
	if !errors.As(err, &fe) || fe.Code != 513 || skip != 0 || n != 0 {
		t.Fatalf("Frame = %d, %d, %v", skip, n, err)
	}
	if fe.End > MaxHeaderBlock || buf[fe.End-1] != '\n' {
		t.Fatalf("End %d does not end a line", fe.End)
	}
	r := Reply(buf[skip:fe.End], fe.Code, fe.Reason, "")
	if !strings.HasPrefix(string(r), "SIP/2.0 513 Header Block Too Large\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n") {
		t.Fatalf("Reply = %q", r)
	}
	if !strings.Contains(err.Error(), "513 Header Block Too Large") {
		t.Fatalf("Error() = %q", err.Error())
	}
}
