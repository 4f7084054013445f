package webrtc

import (
	"context"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/sori-voice/sori/media/dtlssrtp"
)

// fuzzDatagrams splits data into datagrams, each after a length byte.
func fuzzDatagrams(data []byte, each func([]byte)) {
	for len(data) > 0 {
		n := min(int(data[0]), len(data)-1)
		each(data[1 : 1+n])
		data = data[1+n:]
	}
}

// FuzzLeg feeds datagrams that are not RTP to a WebRTC leg whose peer's
// address passed its ICE check and whose DTLS server waits for the
// browser's ClientHello: Classify's demultiplexing, the STUN checks, and
// DTLS records into the handshake. No panic, every call returns, and
// nothing is sent but to the address a datagram came from.
func FuzzLeg(f *testing.F) {
	anchorCert, err := dtlssrtp.NewCertificate()
	if err != nil {
		f.Fatal(err)
	}
	browserCert, err := dtlssrtp.NewCertificate()
	if err != nil {
		f.Fatal(err)
	}
	from := netip.MustParseAddrPort("127.0.0.30:50000")
	check := func(nominate bool) []byte {
		s := []stun.Setter{stun.NewTransactionIDSetter([stun.TransactionIDSize]byte{1, 2, 3}), stun.BindingRequest, stun.NewUsername("anch:brow"),
			stun.RawAttribute{Type: stun.AttrICEControlling, Value: make([]byte, 8)}}
		if nominate {
			s = append(s, stun.RawAttribute{Type: stun.AttrUseCandidate})
		}
		m, err := stun.Build(append(s, stun.NewShortTermIntegrity(anchorICE.Pwd), stun.Fingerprint)...)
		if err != nil {
			f.Fatal(err)
		}
		return m.Raw
	}
	// A real ClientHello, from a browser's endpoint.
	hello := make(chan []byte, 1)
	e, err := dtlssrtp.Start(context.Background(), dtlssrtp.Config{Role: dtlssrtp.Client, Certificate: browserCert, Remote: anchorCert.Fingerprint(),
		Send: func(p []byte) error {
			select {
			case hello <- append([]byte(nil), p...):
			default:
			}
			return nil
		},
		Done: func(dtlssrtp.Keys, error) {}})
	if err != nil {
		f.Fatal(err)
	}
	var ch []byte
	select {
	case ch = <-hello:
	case <-time.After(10 * time.Second):
		f.Fatal("no ClientHello")
	}
	_ = e.Close()
	frame := func(ps ...[]byte) []byte {
		var out []byte
		for _, p := range ps {
			out = append(out, byte(min(len(p), 255)))
			out = append(out, p[:min(len(p), 255)]...)
		}
		return out
	}
	f.Add(frame(ch), true)
	f.Add(frame(check(true), ch, ch), false)
	f.Add(frame([]byte{22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, []byte{0x17, 0xfe, 0xfd}, []byte{64, 1}, []byte{0x80}, []byte{0, 1, 0, 0}), true)
	stunCheck := check(false)
	f.Fuzz(func(t *testing.T, data []byte, checked bool) {
		// A datagram that hangs the leg fails here, with the input kept;
		// the fuzzer itself only gives up on the worker.
		done := make(chan struct{})
		go func() {
			defer close(done)
			legRun(t, data, checked, anchorCert, browserCert, from, stunCheck)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("the leg hangs:\n%s", buf[:runtime.Stack(buf, true)])
		}
	})
}

// legRun is one FuzzLeg input.
func legRun(t *testing.T, data []byte, checked bool, anchorCert, browserCert *dtlssrtp.Certificate, from netip.AddrPort, stunCheck []byte) {
	{
		var mu sync.Mutex
		var sentTo []netip.AddrPort
		leg, err := New(context.Background(), Config{ICE: anchorICE, Certificate: anchorCert,
			Send: func(b []byte, to netip.AddrPort) error {
				mu.Lock()
				sentTo = append(sentTo, to)
				mu.Unlock()
				return nil
			},
			Keys: func(dtlssrtp.Keys, error) {}})
		if err != nil {
			t.Error(err)
			return
		}
		if checked {
			if err := leg.Handle(stunCheck, from); err != nil {
				t.Error(err)
			}
		}
		if err := leg.SetPeer(Peer{Ufrag: "brow", Fingerprint: browserCert.Fingerprint(), Role: dtlssrtp.Server}); err != nil {
			t.Error(err)
		}
		others := map[netip.AddrPort]bool{from: true}
		i := 0
		fuzzDatagrams(data, func(p []byte) {
			src := from
			if i%3 == 2 {
				src = netip.AddrPortFrom(from.Addr(), from.Port()+1)
				others[src] = true
			}
			i++
			if len(p) > 0 && Classify(p[0]) == RTP {
				return // the relay's, not the leg's
			}
			_ = leg.Handle(p, src)
		})
		time.Sleep(time.Millisecond) // the handshake's goroutine reads what it was given
		_ = leg.Early()
		_ = leg.Consent(time.Now())
		if err := leg.Close(); err != nil {
			t.Logf("close: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, to := range sentTo {
			if !others[to] {
				t.Errorf("sent to %v, which sent nothing", to)
			}
		}
	}
}
