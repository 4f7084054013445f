// Command sori-mediabench measures RTP relays that speak the ng protocol
// (sori-anchor, rtpengine) under the same load, one after the other at each
// step, so their figures come from the same run on the same machine.
//
//	sori-mediabench -relay sori-anchor=127.0.0.1:2300@PID -relay rtpengine=127.0.0.1:2301@PID \
//	                [-calls 100] [-max-calls 2400] [-measure 10s] [-warmup 2s]
//
// For each relay and step it sets up K calls with ng offer/answer (an Opus
// SDP), sends 50 RTP packets/s in each direction of each call (12-byte
// header + 80-byte payload carrying the send time), receives what the relay
// forwards, and reports forwarded packets/s, loss, added latency p50/p99
// (from the send time to the kernel's arrival time at the generator's
// socket, SO_TIMESTAMPNS, so the generator's own lag in reading does not
// count against a relay)
// and the relay's CPU from /proc (its threads, and the run time of
// the eBPF programs it holds: sori-anchor's kernel fast path runs in the
// sender's softirq, in no process's times). K doubles from -calls while every relay
// forwards more than 99.9 %, then the largest K each relay passed is
// reported with its CPU cost per packet, and the ratios between relays:
// at their own largest passing steps, and at the largest step both passed
// (the same load). A step where the generator itself fell behind (nothing
// lost, but under 95 % of its packets sent: the machine is busy with
// other work) is measured again, up to -retries times.
// Before and after each step's measurement it asks the relay (ng query, up
// to 32 calls) for its jitter buffer's delay, printed as jb_ms: the mean
// of what it gave the packets of the measurement ("-" when none is
// reported), so the latency of a relay with a buffer can be read against it;
// over_ms is the p99, over the packets of those sampled streams, of each
// packet's latency less the mean delay its own stream's buffer gave in the
// measurement: what the relay adds beyond its buffer's delay.
//
// With -srtp, leg B of every call speaks SDES-SRTP (AES_CM_128_HMAC_SHA1_80):
// the offer asks for RTP/SAVP towards it (ng transport-protocol), B answers
// with a key of its own, and the relay decrypts what B sends and encrypts
// what it sends B; the generator does the same on B's side, outside the
// relay's measured CPU.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"golang.org/x/net/ipv4"

	"github.com/sori-voice/sori/media/ng"
	"github.com/sori-voice/sori/media/sdes"
	"github.com/sori-voice/sori/media/sdp"
	"github.com/sori-voice/sori/sip/transport/stamp"
)

type relay struct {
	name string
	ng   netip.AddrPort
	pids []int
}

type relayFlags []relay

func (r *relayFlags) String() string { return fmt.Sprint(*r) }

func (r *relayFlags) Set(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("%q is not NAME=IP:PORT@PID[,PID]", v)
	}
	addr, pids, _ := strings.Cut(rest, "@")
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", v, err)
	}
	x := relay{name: name, ng: ap}
	for _, p := range strings.Split(pids, ",") {
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("%q: pid %q", v, p)
		}
		x.pids = append(x.pids, n)
	}
	*r = append(*r, x)
	return nil
}

type options struct {
	relays   relayFlags
	calls    int
	maxCalls int
	measure  time.Duration
	warmup   time.Duration
	sockets  int
	retries  int
	srtp     bool // leg B speaks SRTP
}

// result of one step for one relay.
type result struct {
	calls         int
	sent, got     int64
	pps           float64 // packets/s into the relay during the measurement
	p50, p99      time.Duration
	cpu           float64 // % of one core
	usPerPacket   float64 // the relay's CPU (its threads, and its eBPF programs' run time) per packet forwarded
	bpfPct        float64 // of cpu, the relay's eBPF programs (sori-anchor's kernel fast path)
	machineUs     float64 // the whole machine's busy CPU per packet forwarded, the generator's included
	setupFailures int
	jbDelay       time.Duration // the largest jitter-buffer delay a sampled stream reported (-1: none reported)
	jbOver        time.Duration // p99 of the sampled streams' packets' latency less their stream's mean delay (-1: none)
}

func (r result) loss() float64 {
	if r.sent == 0 {
		return 1
	}
	return 1 - float64(r.got)/float64(r.sent)
}

// pass: every call set up, under 0.1 % lost, and the generator kept up
// (at least 95 % of the 100 packets/s per call it should send).
func (r result) pass() bool {
	return r.setupFailures == 0 && r.sent > 0 && r.loss() < 0.001 && r.pps >= 0.95*100*float64(r.calls)
}

// generatorBehind: every call set up and nothing lost, but the generator
// did not send 95 % of its packets: it was starved of CPU.
func (r result) generatorBehind() bool {
	return r.setupFailures == 0 && r.sent > 0 && r.loss() < 0.001 && r.pps < 0.95*100*float64(r.calls)
}

func main() {
	var o options
	flag.Var(&o.relays, "relay", "NAME=NG_IP:PORT@PID[,PID] (repeat for each relay)")
	flag.IntVar(&o.calls, "calls", 100, "first step's concurrent calls")
	flag.IntVar(&o.maxCalls, "max-calls", 2400, "largest step")
	flag.DurationVar(&o.measure, "measure", 10*time.Second, "measured time of a step")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "traffic before measuring")
	flag.IntVar(&o.sockets, "sockets", 16, "generator sockets per call leg")
	flag.IntVar(&o.retries, "retries", 2, "times a step is measured again when the generator fell behind (lost nothing but sent under 95 %)")
	flag.BoolVar(&o.srtp, "srtp", false, "leg B of every call speaks SDES-SRTP (AES_CM_128_HMAC_SHA1_80)")
	flag.Parse()
	if len(o.relays) == 0 {
		fmt.Fprintln(os.Stderr, "sori-mediabench: at least one -relay is required")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "sori-mediabench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	client, err := ng.NewClient("127.0.0.1:0", 500*time.Millisecond, log, nil)
	if err != nil {
		return err
	}
	defer client.Close()
	for _, r := range o.relays {
		if b, _ := os.ReadFile("/proc/sys/kernel/bpf_stats_enabled"); holdsBPF(r.pids) && strings.TrimSpace(string(b)) != "1" {
			// Its eBPF programs' work would be counted nowhere.
			return fmt.Errorf("%s runs eBPF programs: set kernel.bpf_stats_enabled=1 so that their run time is counted in its CPU", r.name)
		}
	}
	best := map[string]result{}
	steps := map[int]map[string]result{} // every relay's result at each step
	fmt.Printf("%-12s %6s %10s %9s %9s %9s %8s %8s %6s %10s %6s %7s\n", "relay", "calls", "pps_in", "loss_%", "p50_us", "p99_us", "cpu_%", "us/pkt", "bpf_%", "sys_us/pkt", "jb_ms", "over_ms")
	for k := o.calls; k <= o.maxCalls; k *= 2 {
		allPass := true
		for _, r := range o.relays {
			res, err := step(client, r, k, o)
			for try := 1; err == nil && res.generatorBehind() && try <= o.retries; try++ {
				// The generator, not the relay, fell short (other load on
				// the machine): measured again, and said so.
				fmt.Printf("%-12s %6d %10.0f  (the generator sent under 95 %%: measured again)\n", r.name, k, res.pps)
				time.Sleep(time.Second)
				res, err = step(client, r, k, o)
			}
			if err != nil {
				return fmt.Errorf("%s at %d calls: %w", r.name, k, err)
			}
			if steps[k] == nil {
				steps[k] = map[string]result{}
			}
			steps[k][r.name] = res
			fmt.Printf("%-12s %6d %10.0f %9.3f %9d %9d %8.1f %8.2f %6.1f %10.2f %6s %7s %s\n", r.name, k, res.pps, 100*res.loss(),
				res.p50.Microseconds(), res.p99.Microseconds(), res.cpu, res.usPerPacket, res.bpfPct, res.machineUs, res.jbString(), msString(res.jbOver), map[bool]string{true: "pass", false: "FAIL"}[res.pass()])
			if res.pass() {
				best[r.name] = res
			} else {
				allPass = false
			}
			time.Sleep(time.Second)
		}
		if !allPass {
			break
		}
	}
	fmt.Println()
	for _, r := range o.relays {
		b, ok := best[r.name]
		if !ok {
			fmt.Printf("RESULT relay=%s max_calls=0 (no step passed)\n", r.name)
			continue
		}
		fmt.Printf("RESULT relay=%s max_calls=%d pps_in=%.0f loss=%.3f%% p50_us=%d p99_us=%d cpu=%.1f%% cpu_us_per_packet=%.2f pps_per_cpu_second=%.0f bpf_share=%.1f%% machine_us_per_packet=%.2f jb_delay_ms=%s p99_over_jb_ms=%s\n",
			r.name, b.calls, b.pps, 100*b.loss(), b.p50.Microseconds(), b.p99.Microseconds(), b.cpu, b.usPerPacket, 1e6/b.usPerPacket, b.bpfPct, b.machineUs, b.jbString(), msString(b.jbOver))
	}
	// Each relay against the last one given (the reference).
	ref := o.relays[len(o.relays)-1].name
	for _, r := range o.relays[:len(o.relays)-1] {
		a, b := best[r.name], best[ref]
		if a.calls > 0 && b.calls > 0 {
			fmt.Printf("RATIO %s/%s: packets per CPU second %.2f, p99 latency %.2f (at their own largest passing steps)\n",
				r.name, ref, b.usPerPacket/a.usPerPacket, float64(a.p99)/float64(b.p99))
		}
	}
	// And at the same load: the largest step both passed (CPU per packet
	// falls as the load grows, so different steps flatter the larger one).
	for _, r := range o.relays[:len(o.relays)-1] {
		for k := o.maxCalls; k >= o.calls; k-- {
			a, okA := steps[k][r.name]
			b, okB := steps[k][ref]
			if okA && okB && a.pass() && b.pass() {
				over := ""
				if a.jbOver >= 0 {
					over = fmt.Sprintf(", p99 over its buffer's delay %s ms (buffer %s ms)", msString(a.jbOver), a.jbString())
				}
				fmt.Printf("RATIO %s/%s at %d calls: packets per CPU second %.2f, p99 latency %.2f (%d us against %d us), whole machine CPU per packet %.2f%s\n",
					r.name, ref, k, b.usPerPacket/a.usPerPacket, float64(a.p99)/float64(b.p99), a.p99.Microseconds(), b.p99.Microseconds(), a.machineUs/b.machineUs, over)
				break
			}
		}
	}
	return nil
}

type call struct {
	id           string
	toA, toB     netip.AddrPort // where leg A sends (anchor port for A), where leg B sends
	sockA, sockB int
	// With -srtp: B's own key (what B sends) and the relay's key towards
	// B, each used by one goroutine (B's sender, B's socket reader).
	bSend, bRecv *srtp.Context
}

// benchSuite is the suite leg B takes with -srtp.
const benchSuite = "AES_CM_128_HMAC_SHA1_80"

// keyB picks the relay's benchSuite crypto from the offer to B and makes
// B's answer crypto (its own key, the same tag).
func keyB(c *call, offer string) (answer string, err error) {
	s, err := sdp.Parse([]byte(offer))
	if err != nil || len(s.Media) == 0 {
		return "", fmt.Errorf("relay SDP: %v", err)
	}
	cs, err := sdes.ParseAll(s.Media[0].Crypto)
	if err != nil {
		return "", err
	}
	for _, relayKey := range cs {
		if relayKey.Suite.Name != benchSuite {
			continue
		}
		mine, err := sdes.Generate(relayKey.Tag, relayKey.Suite, sdes.Params{})
		if err != nil {
			return "", err
		}
		if c.bSend, err = mine.Context(); err != nil {
			return "", err
		}
		if c.bRecv, err = relayKey.Context(); err != nil {
			return "", err
		}
		return mine.String(false), nil
	}
	return "", fmt.Errorf("the relay offered B no %s: %v", benchSuite, s.Media[0].Crypto)
}

// step runs K calls through one relay.
func step(client *ng.Client, r relay, k int, o options) (result, error) {
	res := result{calls: k, jbDelay: -1, jbOver: -1}
	gen, err := newGenerator(o.sockets)
	if err != nil {
		return res, err
	}
	defer gen.close()
	calls := make([]call, 0, k)
	defer func() {
		for _, c := range calls {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = client.Do(ctx, r.ng, ng.Dict{"command": "delete", "call-id": c.id})
			cancel()
		}
	}()
	run := time.Now().UnixNano()
	for i := 0; i < k; i++ {
		c := call{id: fmt.Sprintf("bench-%d-%d", run, i), sockA: i % o.sockets, sockB: i % o.sockets}
		od := ng.Dict{"command": "offer", "call-id": c.id, "from-tag": "a", "sdp": benchSDP(gen.a[c.sockA].addr),
			"replace": []any{"origin", "session-connection"}, "ICE": "remove"}
		if o.srtp {
			od["transport-protocol"] = "RTP/SAVP"
		}
		offer, err := ngDo(client, r.ng, od)
		if err != nil {
			res.setupFailures++
			continue
		}
		answerSDP := benchSDP(gen.b[c.sockB].addr)
		if o.srtp {
			crypto, err := keyB(&c, offer.Str("sdp"))
			if err != nil {
				return res, fmt.Errorf("%s: %w", r.name, err)
			}
			answerSDP = strings.Replace(answerSDP, "RTP/AVP", "RTP/SAVP", 1) + "a=crypto:" + crypto + "\r\n"
		}
		answer, err := ngDo(client, r.ng, ng.Dict{"command": "answer", "call-id": c.id, "from-tag": "a", "to-tag": "b",
			"sdp": answerSDP, "replace": []any{"origin", "session-connection"}, "ICE": "remove"})
		if err != nil {
			res.setupFailures++
			continue
		}
		if c.toB, err = target(offer.Str("sdp")); err != nil {
			return res, err
		}
		if c.toA, err = target(answer.Str("sdp")); err != nil {
			return res, err
		}
		calls = append(calls, c)
	}
	if res.setupFailures > 0 {
		return res, nil
	}
	cpu0 := cpuUsed(r.pids)
	var jb0 jbSample
	stats := gen.blast(calls, o.warmup, o.measure, sampledCall(len(calls)), func() {
		jb0 = sampleJitter(client, r, calls)
		cpu0 = cpuUsed(r.pids)
	})
	cpu1 := cpuUsed(r.pids)
	res.sent, res.got = stats.sent, stats.got
	res.pps = float64(stats.sent) / o.measure.Seconds()
	res.p50, res.p99 = stats.quantile(0.5), stats.quantile(0.99)
	jb1 := sampleJitter(client, r, calls)
	res.jbDelay = jitterDelay(jb0, jb1)
	res.jbOver = overDelay(jb0, jb1, stats.flows)
	cpuSec := (cpu1.process + cpu1.bpf - cpu0.process - cpu0.bpf).Seconds()
	res.cpu = 100 * cpuSec / (o.measure.Seconds() + 0.3)
	if cpuSec > 0 {
		res.bpfPct = 100 * (cpu1.bpf - cpu0.bpf).Seconds() / cpuSec
	}
	if res.got > 0 {
		res.usPerPacket = cpuSec * 1e6 / float64(res.got)
		res.machineUs = float64((cpu1.machine - cpu0.machine).Microseconds()) / float64(res.got)
	}
	return res, nil
}

func (r result) jbString() string { return msString(r.jbDelay) }

func msString(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64)
}

// jbSample is what the relay says of its jitter buffers (ng query, up to
// 32 of the calls, spread over them), per stream: the packets queued and
// the delay they were given, summed, where the relay gives those
// (sori-anchor), else just the delay.
type jbSample map[string]jbStream

type jbStream struct {
	queued, delaySumUs int64 // -1: not reported
	delay              time.Duration
	ssrc               int64 // what the stream receives (the generator's flow), -1: not reported
}

// sampledCall says which calls sampleJitter asks about: up to 32, spread.
func sampledCall(n int) func(i int) bool {
	step := max(n/32, 1)
	return func(i int) bool { return i%step == 0 }
}

func sampleJitter(client *ng.Client, r relay, calls []call) jbSample {
	out := jbSample{}
	sampled := sampledCall(len(calls))
	for i := range calls {
		if !sampled(i) {
			continue
		}
		res, err := ngDo(client, r.ng, ng.Dict{"command": "query", "call-id": calls[i].id})
		if err != nil {
			continue
		}
		tags := res.Dict("tags")
		for tag := range tags {
			for mi, m := range list(tags.Dict(tag)["medias"]) {
				for si, st := range list(m.(ng.Dict)["streams"]) {
					jb := st.(ng.Dict).Dict("jitter buffer")
					ssrc, ok := st.(ng.Dict).Int("SSRC")
					if !ok {
						ssrc = -1
					}
					d, ok := jb.Int("delay")
					if !ok {
						continue
					}
					js := jbStream{queued: -1, delaySumUs: -1, delay: time.Duration(d) * time.Millisecond, ssrc: ssrc}
					if q, ok := jb.Int("queued"); ok {
						js.queued = q
						js.delaySumUs, _ = jb.Int("delay sum us")
					}
					out[fmt.Sprintf("%d/%s/%d/%d", i, tag, mi, si)] = js
				}
			}
		}
	}
	return out
}

// jitterDelay is the largest jitter-buffer delay of the sampled streams
// over the measurement (from the samples before and after it): what the
// relay's buffer adds by design, to read its latency against.
// sori-anchor's delay moves within a call (the first second's guess comes
// down, it grows for late packets and shrinks back), so the mean of what
// it gave the packets queued between the samples is taken where the relay
// reports it; else the delay after. -1 when no stream reports one (no
// buffer, or a relay that does not say).
func jitterDelay(before, after jbSample) time.Duration {
	best := time.Duration(-1)
	for k, a := range after {
		best = max(best, meanDelay(before[k], a))
	}
	return best
}

// meanDelay is what a stream's buffer gave the packets it queued between
// two samples, on average (else the delay after).
func meanDelay(b, a jbStream) time.Duration {
	if a.queued >= 0 && b.queued >= 0 && a.queued > b.queued {
		return time.Duration(a.delaySumUs-b.delaySumUs) * time.Microsecond / time.Duration(a.queued-b.queued)
	}
	return a.delay
}

// overDelay is the p99, over the measured packets of the sampled streams
// that say what they receive (SSRC), of each packet's latency less its
// stream's mean delay over the measurement: what the relay adds beyond
// its buffer. -1 when no stream says.
func overDelay(before, after jbSample, flows map[uint32]*[20000]int64) time.Duration {
	var over stats
	const bucket = 10 * time.Microsecond
	for k, a := range after {
		b, ok := before[k]
		if !ok || a.ssrc < 0 || a.queued < 0 || flows[uint32(a.ssrc)] == nil {
			continue
		}
		shift := int(meanDelay(b, a) / bucket)
		for i, c := range flows[uint32(a.ssrc)] {
			over.hist[max(i-shift, 0)] += c
		}
	}
	if slices.Max(over.hist[:]) == 0 {
		return -1
	}
	return over.quantile(0.99)
}

// list is a bencoded list of dictionaries, as ng.Dicts.
func list(v any) []any {
	l, _ := v.([]any)
	out := make([]any, 0, len(l))
	for _, e := range l {
		switch d := e.(type) {
		case ng.Dict:
			out = append(out, d)
		case map[string]any:
			out = append(out, ng.Dict(d))
		}
	}
	return out
}

func ngDo(client *ng.Client, to netip.AddrPort, d ng.Dict) (ng.Dict, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	res, err := client.Do(ctx, to, d)
	if err != nil {
		return nil, err
	}
	if res.Str("result") != "ok" {
		return nil, errors.New(res.Str("error-reason"))
	}
	return res, nil
}

func benchSDP(a netip.AddrPort) string {
	return fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n",
		a.Addr(), a.Addr(), a.Port())
}

func target(body string) (netip.AddrPort, error) {
	s, err := sdp.Parse([]byte(body))
	if err != nil || len(s.Media) == 0 {
		return netip.AddrPort{}, fmt.Errorf("relay SDP: %v", err)
	}
	return netip.AddrPortFrom(s.Media[0].Addr, uint16(s.Media[0].Port)), nil
}

// cpuTime is CPU used since boot.
type cpuTime struct {
	process time.Duration // the relays' processes, all threads (user+system)
	bpf     time.Duration // the eBPF programs they hold (run_time_ns; kernel.bpf_stats_enabled=1)
	machine time.Duration // every CPU's busy time (/proc/stat: all but idle and iowait)
}

// userHZ is the unit of /proc's CPU times.
const userHZ = 100

func cpuUsed(pids []int) cpuTime {
	var t cpuTime
	for _, p := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				t.process += time.Duration(u+st) * time.Second / userHZ
			}
		}
		_, run := bpfPrograms(p)
		t.bpf += run
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		for i, v := range f[1:] {
			if i == 3 || i == 4 || i >= 8 {
				continue // idle, iowait; guest time is in user already
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			t.machine += time.Duration(n) * time.Second / userHZ
		}
	}
	return t
}

// bpfPrograms counts the eBPF programs process pid holds open (each once,
// by prog_id) and sums their run time: the kernel fast path's share of the
// relay's work, spent in the softirq of whoever sent the packet, so in no
// process's times.
func bpfPrograms(pid int) (n int, run time.Duration) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fdinfo"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	seen := map[string]bool{}
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil || !strings.Contains(string(b), "prog_id:") {
			continue
		}
		var id string
		var ns int64
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ":")
			switch strings.TrimSpace(k) {
			case "prog_id":
				id = strings.TrimSpace(v)
			case "run_time_ns":
				ns, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
		if id != "" && !seen[id] {
			seen[id] = true
			n++
			run += time.Duration(ns)
		}
	}
	return n, run
}

// holdsBPF: one of pids holds an eBPF program open.
func holdsBPF(pids []int) bool {
	for _, p := range pids {
		if n, _ := bpfPrograms(p); n > 0 {
			return true
		}
	}
	return false
}

// generator is the two phones of every call: sockets for leg A and leg B.
type generator struct {
	a, b []*gsock
}

type gsock struct {
	conn *net.UDPConn
	pc   *ipv4.PacketConn
	addr netip.AddrPort
}

func newGenerator(n int) (*generator, error) {
	g := &generator{}
	for _, side := range []*[]*gsock{&g.a, &g.b} {
		for i := 0; i < n; i++ {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				g.close()
				return nil, err
			}
			_ = c.SetReadBuffer(4 << 20)
			_ = c.SetWriteBuffer(4 << 20)
			// A packet's latency ends when it reached the generator's
			// socket, not when the generator, on the same cores as the
			// relay, got round to reading it: the relay's added latency,
			// not the generator's.
			if err := stamp.On(c); err != nil {
				c.Close()
				g.close()
				return nil, fmt.Errorf("kernel arrival times: %w", err)
			}
			*side = append(*side, &gsock{conn: c, pc: ipv4.NewPacketConn(c), addr: c.LocalAddr().(*net.UDPAddr).AddrPort()})
		}
	}
	return g, nil
}

func (g *generator) close() {
	for _, s := range append(g.a, g.b...) {
		s.conn.Close()
	}
}

type stats struct {
	sent, got int64
	hist      [20000]int64 // 10 µs buckets up to 200 ms; the last one holds the rest
	// The sampled calls' flows (by SSRC: 2i from A, 2i+1 from B), each
	// its own histogram.
	flows map[uint32]*[20000]int64
}

func (s *stats) quantile(q float64) time.Duration {
	var n int64
	for _, c := range s.hist {
		n += c
	}
	if n == 0 {
		return 0
	}
	want := int64(q * float64(n))
	var acc int64
	for i, c := range s.hist {
		acc += c
		if acc > want {
			return time.Duration(i*10) * time.Microsecond
		}
	}
	return time.Duration(len(s.hist)*10) * time.Microsecond
}

const pktSize = 92 // 12-byte RTP header + 80-byte payload

// blast sends 50 packets/s per direction per call for warmup+measure, and
// counts what comes back for packets sent while measuring.
func (g *generator) blast(calls []call, warmup, measure time.Duration, sampled func(i int) bool, startMeasure func()) *stats {
	st := &stats{flows: map[uint32]*[20000]int64{}}
	for i := range calls {
		if sampled(i) {
			st.flows[uint32(2*i)], st.flows[uint32(2*i+1)] = new([20000]int64), new([20000]int64)
		}
	}
	var measuring atomic.Bool
	var sent atomic.Int64
	var mu sync.Mutex
	done := make(chan struct{})
	var readers sync.WaitGroup
	isB := map[*gsock]bool{}
	for _, s := range g.b {
		isB[s] = true
	}
	for _, s := range append(slices.Clone(g.a), g.b...) {
		readers.Add(1)
		go func(s *gsock) {
			var hdr rtp.Header
			defer readers.Done()
			msgs := make([]ipv4.Message, 64)
			for i := range msgs {
				msgs[i].Buffers = [][]byte{make([]byte, 1500)}
				msgs[i].OOB = make([]byte, stamp.OOBSize)
			}
			var local stats
			local.flows = map[uint32]*[20000]int64{}
			defer func() {
				mu.Lock()
				st.got += local.got
				for i, c := range local.hist {
					st.hist[i] += c
				}
				for ssrc, h := range local.flows {
					for i, c := range h {
						st.flows[ssrc][i] += c
					}
				}
				mu.Unlock()
			}()
			for {
				_ = s.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				n, err := s.pc.ReadBatch(msgs, 0)
				read := time.Now().UnixNano()
				for i := 0; i < n; i++ {
					b := msgs[i].Buffers[0][:msgs[i].N]
					now := read
					if at := stamp.Arrival(msgs[i].OOB[:msgs[i].NN]); !at.IsZero() {
						now = at.UnixNano()
					}
					if len(b) >= 12 && isB[s] && len(calls) > 0 && calls[0].bRecv != nil {
						// SRTP from the relay: A's flow 2i is call i's.
						i := binary.BigEndian.Uint32(b[8:12]) / 2
						if int(i) >= len(calls) {
							continue
						}
						var err error
						if b, err = calls[i].bRecv.DecryptRTP(b, b, &hdr); err != nil {
							continue
						}
					}
					if len(b) < pktSize || b[12] != 1 {
						continue // sent before measuring
					}
					local.got++
					d := min(max((now-int64(binary.BigEndian.Uint64(b[13:21])))/10000, 0), int64(len(local.hist)-1))
					local.hist[d]++
					if ssrc := binary.BigEndian.Uint32(b[8:12]); st.flows[ssrc] != nil {
						h := local.flows[ssrc]
						if h == nil {
							h = new([20000]int64)
							local.flows[ssrc] = h
						}
						h[d]++
					}
				}
				if err != nil {
					select {
					case <-done:
						return
					default:
					}
				}
			}
		}(s)
	}

	// Senders: each generator socket sends, every 20 ms, one packet for each
	// call leg it carries, in sendmmsg batches; the sockets are split over a
	// few goroutines.
	type flow struct {
		dst  *net.UDPAddr
		id   uint32
		srtp *srtp.Context // nil: plain RTP
	}
	flows := map[*gsock][]flow{}
	for i, c := range calls {
		flows[g.a[c.sockA]] = append(flows[g.a[c.sockA]], flow{net.UDPAddrFromAddrPort(c.toA), uint32(2 * i), nil})
		flows[g.b[c.sockB]] = append(flows[g.b[c.sockB]], flow{net.UDPAddrFromAddrPort(c.toB), uint32(2*i + 1), c.bSend})
	}
	socks := append(slices.Clone(g.a), g.b...)
	const senders = 4
	var wg sync.WaitGroup
	stop := time.Now().Add(warmup + measure)
	measureAt := time.Now().Add(warmup)
	for w := 0; w < senders; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			type batch struct {
				s     *gsock
				flows []flow
				msgs  []ipv4.Message
			}
			var mine []batch
			for i := w; i < len(socks); i += senders {
				b := batch{s: socks[i], flows: flows[socks[i]]}
				for _, f := range b.flows {
					b.msgs = append(b.msgs, ipv4.Message{Buffers: [][]byte{make([]byte, pktSize, pktSize+16)}, Addr: f.dst})
				}
				mine = append(mine, b)
			}
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			var seq uint16
			var hdr rtp.Header
			for now := range tick.C {
				if now.After(stop) {
					return
				}
				on := measuring.Load()
				seq++
				for _, b := range mine {
					for k, f := range b.flows {
						p := b.msgs[k].Buffers[0][:pktSize]
						p[0], p[1] = 0x80, 111
						binary.BigEndian.PutUint16(p[2:], seq)
						binary.BigEndian.PutUint32(p[4:], uint32(seq)*960) // 20 ms at 48 kHz
						binary.BigEndian.PutUint32(p[8:], f.id)
						p[12] = 0
						if on {
							p[12] = 1
						}
						binary.BigEndian.PutUint64(p[13:], uint64(time.Now().UnixNano()))
						b.msgs[k].Buffers[0] = p
						if f.srtp != nil {
							if out, err := f.srtp.EncryptRTP(p, p, &hdr); err == nil {
								b.msgs[k].Buffers[0] = out
							}
						}
					}
					for off := 0; off < len(b.msgs); {
						n, err := b.s.pc.WriteBatch(b.msgs[off:min(off+64, len(b.msgs))], 0)
						if err != nil || n == 0 {
							break
						}
						if on {
							sent.Add(int64(n))
						}
						off += n
					}
				}
			}
		}(w)
	}
	time.Sleep(time.Until(measureAt))
	startMeasure()
	measuring.Store(true)
	time.Sleep(time.Until(stop))
	measuring.Store(false)
	wg.Wait()
	time.Sleep(300 * time.Millisecond) // the last packets in flight
	close(done)
	readers.Wait()
	st.sent = sent.Load()
	return st
}
