package relay

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/pion/srtp/v3"
	"golang.org/x/net/ipv4"

	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/ports"
)

// RELAY_SEND_RING=off measures the workers without io_uring, and
// RELAY_RECV_RING=off with io_uring sends but epoll receives, to compare
// (the workers are made once per process).
func init() {
	if os.Getenv("RELAY_SEND_RING") == "off" {
		SetSendRing(false) // and receive without it: epoll and recvmmsg
	}
	if os.Getenv("RELAY_RECV_RING") == "off" {
		SetRecvRing(false)
	}
}

// cpuNow is the process's user+system CPU time.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRelayLoad is the anchor under a load like sori-mediabench's:
// 200 calls, each op is one 20 ms tick in which phone A of every call sends
// one packet (one sendmmsg for all) and phone B receives them all. It reports
// ns/pkt (wall) and cpu-ns/pkt: the CPU of the whole process (anchor and
// phones) per relayed packet, the figure to compare before and after a
// change; and wakes/pkt, the workers' wake-ups per relayed packet, which
// tells the playout's coalescing apart from the noise of a shared machine. off: no jitter buffer, unpaced. adaptive: through the adaptive
// buffer, paced at 20 ms so the buffer holds packets as in a call.
func BenchmarkRelayLoad(b *testing.B) {
	for _, mode := range []jitter.Mode{jitter.Off, jitter.Adaptive} {
		b.Run(mode.String(), func(b *testing.B) { relayLoad(b, mode, 200, false) })
	}
}

// BenchmarkRelayLoadSRTP is BenchmarkRelayLoad with phone B's leg SRTP
// (AES_CM_128_HMAC_SHA1_80): the anchor encrypts every packet it relays,
// as it does towards an SRTP phone from a plain one (decrypting costs the
// same: AES-CM and HMAC-SHA1 over the same bytes). plain is the same run
// without it, for the difference.
func BenchmarkRelayLoadSRTP(b *testing.B) {
	b.Run("plain", func(b *testing.B) { relayLoad(b, jitter.Off, 200, false) })
	b.Run("srtp", func(b *testing.B) { relayLoad(b, jitter.Off, 200, true) })
}

func relayLoad(b *testing.B, mode jitter.Mode, calls int, srtpB bool) {
	alloc, err := ports.New(loopback, 44000, 44000+4*calls+100)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(alloc.Close) // the parked pairs, after everything else
	o := Options{OpusPT: 111}
	if mode != jitter.Off {
		o.Jitter = &jitter.Config{Mode: mode}
	}
	tx, rx := newPhone(b), newPhone(b)
	_ = rx.conn.SetReadBuffer(4 << 20)
	_ = tx.conn.SetWriteBuffer(4 << 20)
	msgs := make([]ipv4.Message, calls)
	for i := 0; i < calls; i++ {
		var st [2]*Stream
		for k := range st {
			p, err := alloc.Allocate()
			if err != nil {
				b.Fatal(err)
			}
			if st[k], err = NewStream(p, o); err != nil {
				b.Fatal(err)
			}
			s := st[k]
			b.Cleanup(func() { s.Stop(); alloc.Release(p); s.Wait() })
		}
		if srtpB {
			k := newKeys(b, srtp.ProtectionProfileAes128CmHmacSha1_80)
			if err := st[1].SetCrypto(&Crypto{In: k, Out: k}); err != nil {
				b.Fatal(err)
			}
		}
		st[0].SetEndpoint(tx.addr(), netip.AddrPort{})
		st[1].SetEndpoint(rx.addr(), netip.AddrPort{})
		st[0].SetPeer(st[1])
		st[1].SetPeer(st[0])
		st[0].Start()
		st[1].Start()
		pkt := opusPacket(0)
		binary.BigEndian.PutUint32(pkt[8:], uint32(i))
		msgs[i] = ipv4.Message{Buffers: [][]byte{pkt}, Addr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(st[0].Port())))}
	}
	txc := ipv4.NewPacketConn(tx.conn)
	in := make([]byte, 2048)
	var seq uint16
	tick := func() int {
		seq++
		for i := range msgs {
			p := msgs[i].Buffers[0]
			binary.BigEndian.PutUint16(p[2:], seq)
			binary.BigEndian.PutUint32(p[4:], uint32(seq)*960)
		}
		for off := 0; off < len(msgs); {
			n, err := txc.WriteBatch(msgs[off:], 0)
			if err != nil {
				b.Fatal(err)
			}
			off += n
		}
		got := 0
		_ = rx.conn.SetReadDeadline(time.Now().Add(time.Second))
		for got < len(msgs) {
			// One read per packet: ReadBatch would allocate each source address.
			if _, _, err := rx.conn.ReadFromUDPAddrPort(in); err != nil {
				return got // lost some
			}
			got++
		}
		return got
	}
	paced := mode != jitter.Off
	start := time.Now()
	for i := 0; i < 10; i++ { // latch, warm the pools
		if paced {
			time.Sleep(time.Until(start.Add(time.Duration(i) * 20 * time.Millisecond)))
		}
		tick()
	}
	lost := 0
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, wall0, wakes0 := cpuNow(), time.Now(), wakeups()
	start = time.Now()
	for i := 0; i < b.N; i++ {
		if paced {
			time.Sleep(time.Until(start.Add(time.Duration(i) * 20 * time.Millisecond)))
		}
		lost += len(msgs) - tick()
	}
	b.StopTimer()
	pkts := float64(b.N * len(msgs))
	b.ReportMetric(float64(cpuNow()-cpu0)/pkts, "cpu-ns/pkt")
	b.ReportMetric(float64(time.Since(wall0))/pkts, "ns/pkt")
	b.ReportMetric(float64(lost)/pkts, "lost/pkt")
	b.ReportMetric(float64(wakeups()-wakes0)/pkts, "wakes/pkt") // the workers' (Linux)
}

// BenchmarkPlayoutLatency is the playout's timing end to end, the jitter
// buffer and the worker's wake-ups: 50 calls through adaptive buffers
// (sori-anchor's default), phone A of each sending a packet every 20 ms
// late by a jitter like media/jitter's latJitter (most within 1 ms, 12 %
// 1-8 ms, 3 % 8-25 ms), phone B timing what the anchor plays. Each op is
// one 20 ms tick of every call, after a second of warm-up (-benchtime
// 500x: 10 s; ns/op counts the receiver's last 500 ms too). It reports
// what a packet's latency from its timestamp's time (its send time with
// no jitter) adds over its stream's delay, p50 and p99 over all packets
// (p99-over-delay-ms; issue 16's target is ≤ 2), the mean delay, and the
// share not played (lost/pkt).
func BenchmarkPlayoutLatency(b *testing.B) {
	const calls = 50
	alloc, err := ports.New(loopback, 46000, 46000+4*calls+100)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(alloc.Close)
	o := Options{OpusPT: 111, Jitter: &jitter.Config{Mode: jitter.Adaptive}}
	tx, rx := newPhone(b), newPhone(b)
	_ = rx.conn.SetReadBuffer(4 << 20)
	ins := make([]*Stream, calls)
	dsts := make([]netip.AddrPort, calls)
	for i := 0; i < calls; i++ {
		var st [2]*Stream
		for k := range st {
			p, err := alloc.Allocate()
			if err != nil {
				b.Fatal(err)
			}
			if st[k], err = NewStream(p, o); err != nil {
				b.Fatal(err)
			}
			s := st[k]
			b.Cleanup(func() { s.Stop(); alloc.Release(p); s.Wait() })
		}
		st[0].SetEndpoint(tx.addr(), netip.AddrPort{})
		st[1].SetEndpoint(rx.addr(), netip.AddrPort{})
		st[0].SetPeer(st[1])
		st[1].SetPeer(st[0])
		st[0].Start()
		st[1].Start()
		ins[i], dsts[i] = st[0], netip.AddrPortFrom(loopback, uint16(st[0].Port()))
	}
	// The schedule: packet k of call i is ideal at start+k·20ms, sent
	// jitter later; sorted by send time.
	type send struct {
		at   time.Duration
		call int
		seq  uint16
	}
	ticks := b.N + 50 // 1 s before measuring: the latch, the first spurt
	rng := rand.New(rand.NewPCG(1, 2))
	sched := make([]send, 0, ticks*calls)
	for k := 0; k < ticks; k++ {
		for i := 0; i < calls; i++ {
			var j time.Duration
			switch r := rng.IntN(100); {
			case r < 85:
				j = time.Duration(rng.Int64N(int64(time.Millisecond)))
			case r < 97:
				j = time.Millisecond + time.Duration(rng.Int64N(int64(7*time.Millisecond)))
			default:
				j = 8*time.Millisecond + time.Duration(rng.Int64N(int64(17*time.Millisecond)))
			}
			sched = append(sched, send{time.Duration(k)*20*time.Millisecond + j, i, uint16(k)})
		}
	}
	slices.SortFunc(sched, func(x, y send) int { return int(x.at - y.at) })

	pkt := opusPacket(0) // 20 ms CELT: the TOC byte at 12, the ideal time at 14..21
	start := time.Now().Add(50 * time.Millisecond)
	measureFrom := start.Add(50 * 20 * time.Millisecond).UnixNano()
	over := make([]time.Duration, 0, len(sched)) // not to count the harness's allocations
	var delays time.Duration
	got := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_ = rx.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, _, err := rx.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			now := time.Now().UnixNano()
			if n < 24 {
				continue
			}
			ideal := int64(binary.BigEndian.Uint64(buf[14:22]))
			if ideal < measureFrom {
				continue
			}
			st, _ := ins[binary.BigEndian.Uint32(buf[8:12])].JitterStats()
			over = append(over, time.Duration(now-ideal)-st.Delay)
			delays += st.Delay
			got++
		}
	}()
	sent := 0
	timed := false
	for _, s := range sched {
		if !timed && s.at >= 50*20*time.Millisecond {
			b.ResetTimer() // the first second was the warm-up
			timed = true
		}
		if d := time.Until(start.Add(s.at)); d > 0 {
			time.Sleep(d)
		}
		binary.BigEndian.PutUint16(pkt[2:], s.seq)
		binary.BigEndian.PutUint32(pkt[4:], uint32(s.seq)*960)
		binary.BigEndian.PutUint32(pkt[8:], uint32(s.call))
		pkt[1] = 111
		if s.seq == 0 {
			pkt[1] |= 0x80 // the talk spurt's start
		}
		ideal := start.Add(time.Duration(s.seq) * 20 * time.Millisecond).UnixNano()
		binary.BigEndian.PutUint64(pkt[14:], uint64(ideal))
		if _, err := tx.conn.WriteToUDPAddrPort(pkt, dsts[s.call]); err != nil {
			b.Fatal(err)
		}
		if ideal >= measureFrom {
			sent++
		}
	}
	<-done
	b.StopTimer()
	slices.Sort(over)
	q := func(f float64) float64 {
		if len(over) == 0 {
			return 0
		}
		return float64(over[min(int(f*float64(len(over))), len(over)-1)]) / 1e6
	}
	b.ReportMetric(q(0.5), "p50-over-delay-ms")
	b.ReportMetric(q(0.99), "p99-over-delay-ms")
	b.ReportMetric(float64(delays)/float64(max(got, 1))/1e6, "delay-ms")
	b.ReportMetric(float64(sent-got)/float64(max(sent, 1)), "lost/pkt")
}
