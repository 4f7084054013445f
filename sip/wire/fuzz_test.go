package wire

import (
	"errors"
	"testing"
)

// seed adds every torture message, and each one's halves, to a corpus.
func seed(f *testing.F, add func(data []byte)) {
	rows := allTorture(f)
	for _, row := range rows {
		add(row.data)
		add(row.data[:len(row.data)/2])
	}
}

// checkFault asserts the contract of a Fault.
func checkFault(t *testing.T, fl *Fault) {
	t.Helper()
	switch fl.Code {
	case 400, 413, 416, 505, 513:
	default:
		t.Fatalf("fault code %d", fl.Code)
	}
	if fl.Reason == "" || len(fl.Reason) > 60 || !printable(fl.Reason) {
		t.Fatalf("fault reason %q", fl.Reason)
	}
}

func FuzzCheck(f *testing.F) {
	seed(f, func(d []byte) { f.Add(d) })
	f.Fuzz(func(t *testing.T, data []byte) {
		info, fl := Check(data)
		if fl != nil {
			checkFault(t, fl)
			return
		}
		if info.Kind == Garbage {
			t.Fatal("Garbage without a fault")
		}
		if info.Start > info.Body || info.Body > info.Length || info.Length > len(data) {
			t.Fatalf("Start %d, Body %d, Length %d of %d", info.Start, info.Body, info.Length, len(data))
		}
		for _, s := range []Span{info.URI, info.CallID, info.CSeqMethod, info.Branch} {
			if s.Start > s.End || s.End > info.Body {
				t.Fatalf("span %+v outside the headers (body at %d)", s, info.Body)
			}
		}
		if info.Kind == Request && (info.CallID.End == info.CallID.Start || info.URI.End == info.URI.Start) {
			t.Fatalf("valid request without Call-ID or Request-URI: %+v", info)
		}
		// A message Check passes frames the same on a stream when it has
		// Content-Length.
		if _, again := Check(data[:info.Length]); again != nil {
			t.Fatalf("Check passes the datagram but not its message: %v", again)
		}
	})
}

func FuzzFrame(f *testing.F) {
	seed(f, func(d []byte) { f.Add(d) })
	f.Fuzz(func(t *testing.T, buf []byte) {
		skip, n, err := Frame(buf)
		if skip < 0 || skip > len(buf) || n < 0 || n > len(buf) {
			t.Fatalf("skip %d, n %d of %d bytes", skip, n, len(buf))
		}
		var fe *FramingError
		switch {
		case err == nil:
			if n <= skip {
				t.Fatalf("empty message: skip %d, n %d", skip, n)
			}
			info, fl := Check(buf[skip:n])
			if fl != nil {
				checkFault(t, fl)
			} else if info.Length != n-skip {
				t.Fatalf("framed %d bytes, Check says %d", n-skip, info.Length)
			}
			// Every shorter prefix of the message is incomplete.
			if _, _, err := Frame(buf[:n-1]); err != ErrIncomplete {
				t.Fatalf("prefix of a framed message: %v", err)
			}
		case errors.As(err, &fe):
			checkFault(t, &fe.Fault)
			if n != 0 || fe.End < skip || fe.End > len(buf) {
				t.Fatalf("FramingError End %d, skip %d, n %d of %d", fe.End, skip, n, len(buf))
			}
		case err == ErrIncomplete:
			if n != 0 {
				t.Fatalf("incomplete with n %d", n)
			}
		default:
			t.Fatalf("error %v", err)
		}
	})
}

func FuzzReply(f *testing.F) {
	seed(f, func(d []byte) { f.Add(d, 400, "Bad Request", "sori") })
	f.Add([]byte("INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"), 599, "a\r\nb", "s\x00\r\n")
	f.Fuzz(func(t *testing.T, data []byte, code int, reason, server string) {
		r := Reply(data, code, reason, server)
		if r == nil {
			return
		}
		if code < 100 || code > 699 {
			t.Fatalf("reply with code %d", code)
		}
		if len(r) > len(data)+len(reason)+len(server)+512 {
			t.Fatalf("reply of %d bytes to %d", len(r), len(data))
		}
		assertReply(t, data, r, server)
	})
}
