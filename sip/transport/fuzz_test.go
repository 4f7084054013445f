package transport

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/nodes"
)

// wireConn is a net.Conn that keeps what is written to it.
type wireConn struct {
	net.Conn // nil: only what the transport calls is here
	out      bytes.Buffer
}

func (c *wireConn) Write(b []byte) (int, error)      { return c.out.Write(b) }
func (c *wireConn) SetWriteDeadline(time.Time) error { return nil }
func (c *wireConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060} }

// delivered records the messages handed up, as sipgo writes them.
type delivered struct{ msgs []string }

func (d *delivered) Request(r *sip.Request, _ Conn)   { d.msgs = append(d.msgs, r.String()) }
func (d *delivered) Response(r *sip.Response, _ Conn) { d.msgs = append(d.msgs, r.String()) }

// fuzzStream is a connection from remote on transport tr of a Transport
// that hands what it parses to d; signer: the nodes sign (remote is one).
func fuzzStream(tr string, remote netip.AddrPort, signer Signer, d *delivered) (*stream, *wireConn) {
	tp := New(Options{Handler: d, Server: "Sori/fuzz", Signer: signer, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c := &wireConn{}
	s := &stream{t: tp, c: c, transport: tr, remote: remote, local: netip.MustParseAddrPort("127.0.0.1:5060")}
	s.lifetime = newLifetime(func() {})
	return s, c
}

// FuzzStream feeds a TCP connection's bytes through the transport as its
// read loop does (framing, the checks, the signature of a node's
// message, sipgo's parse), and the same bytes as a datagram or a
// WebSocket message through the same ingest. No
// panic; what is written back is SIP responses or keepalive CRLFs; and the
// messages handed up do not depend on how the bytes were split into reads.
func FuzzStream(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "torture", "cases", "*", "*"))
	extra, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "torture", "extra", "*.sip"))
	self := nodes.Address{Transport: "TCP", Addr: netip.MustParseAddrPort("127.0.0.1:5060")}
	peer := nodes.Address{Transport: "TCP", Addr: netip.MustParseAddrPort("127.0.0.2:5060")}
	peers := []nodes.Address{self, peer}
	for _, name := range append(names, extra...) {
		b, err := os.ReadFile(name)
		if err != nil || len(b) == 0 {
			continue
		}
		f.Add(b, uint8(7), false)
		f.Add(append(append([]byte("\r\n\r\n"), b...), b...), uint8(200), false)
	}
	invite := "INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2:5060;branch=z9hG4bK-1\r\nFrom: <sip:a@sori.test>;tag=1\r\nTo: <sip:bob@sori.test>\r\n" +
		"Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:a@127.0.0.2>, sip:b@127.0.0.2, <tel+x:1>\r\nContent-Length: 4\r\n\r\nv=0\n"
	f.Add([]byte(sealFor(nodes.NewSigner(fuzzSecret, peer, peers), invite)), uint8(1), true)
	f.Add([]byte(invite), uint8(9), true)
	f.Add([]byte(invite[:len(invite)-4]+"\n\n"), uint8(3), true)
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8, signed bool) {
		remote := netip.MustParseAddrPort("198.51.100.7:40000")
		var signer func() Signer = func() Signer { return nil }
		if signed {
			remote = peer.Addr
			signer = func() Signer { return nodes.NewSigner(fuzzSecret, self, peers) }
		}
		run := func(step int) (msgs []string, out []byte, open bool) {
			d := &delivered{}
			s, c := fuzzStream("TCP", remote, signer(), d)
			buf, crlf, ok := []byte(nil), 0, true
			for off := 0; off < len(data) && ok; off += step {
				buf, ok = s.consume(append(buf, data[off:min(off+step, len(data))]...), &crlf)
				if len(buf) > maxBuffered {
					t.Fatalf("%d bytes buffered unframed", len(buf))
				}
			}
			return d.msgs, c.out.Bytes(), ok
		}
		whole, out, open := run(max(len(data), 1))
		split, _, splitOpen := run(int(chunk%64) + 1)
		if !slices.Equal(whole, split) || open != splitOpen {
			t.Fatalf("%d messages (open %v) read at once, %d (open %v) in reads of %d bytes", len(whole), open, len(split), splitOpen, chunk%64+1)
		}
		for len(out) > 0 {
			switch {
			case bytes.HasPrefix(out, []byte("\r\n")):
				out = out[2:]
			case bytes.HasPrefix(out, []byte("SIP/2.0 ")):
				end := bytes.Index(out, []byte("\r\n\r\n"))
				if end < 0 {
					t.Fatalf("answer without its header end: %q", out)
				}
				// The answer copies the request's headers as they came (its
				// faults too): only its status line is the transport's.
				line, _, _ := bytes.Cut(out, []byte("\r\n"))
				if len(line) < 13 || line[8] < '1' || line[8] > '6' || line[11] != ' ' {
					t.Fatalf("answer's status line %q", line)
				}
				out = out[end+4:]
			default:
				t.Fatalf("written: %q", out)
			}
		}
		// The same bytes as one datagram, or one WebSocket message (which
		// ws.go hands to the same ingest).
		tr := "UDP"
		if chunk%2 == 1 {
			tr = "WS"
		}
		d := &delivered{}
		s, _ := fuzzStream(tr, remote, signer(), d)
		s.t.ingest(data, s)
		if len(d.msgs) > 1 {
			t.Fatalf("one datagram handed up as %d messages", len(d.msgs))
		}
	})
}

var fuzzSecret = []byte("fuzz-shared-secret-0123456789")

// sealFor is raw signed by s as a node's transport writes it.
func sealFor(s *nodes.Signer, raw string) string {
	end := bytes.Index([]byte(raw), []byte("\r\n\r\n"))
	head, rest := raw[:end+2], raw[end+2:]
	return head + nodes.Header + ": " + s.Sign([]byte(head), []byte(rest)) + "\r\n" + rest
}
