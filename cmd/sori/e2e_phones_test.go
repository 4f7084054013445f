package main

// Real softphones through sori and sori-anchor on the default
// configuration: baresip (libre's digest) registers as alice, linphonec
// (belle-sip's) as bob; they call each other, each plays a tone, and each
// recording must hold the other phone's tone, relayed by the anchor.

import (
	"bytes"
	byteorder "encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/media/ng"
)

const (
	aliceTone = 440  // Hz, baresip's ausine source
	bobTone   = 1200 // Hz, the WAV linphonec plays
	// holdCall is how long each call is held for audio to flow.
	holdCall = 3 * time.Second
)

func TestPhonesCallEachOther(t *testing.T) {
	for _, tool := range []string{"baresip", "linphonec"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make test installs baresip and linphone-cli): %v", tool, err)
		}
	}
	// tls: baresip over TLS (trusting the certificate sori made itself on
	// first start), linphonec over UDP: the call crosses transports.
	// kernel: over UDP with the anchor's jitter buffer off, so the phones'
	// RTP is forwarded by its kernel fast path once latched.
	for _, name := range []string{"udp", "tcp", "tls", "kernel"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			transport, flags := name, []string(nil)
			if name == "kernel" {
				transport, flags = "udp", []string{"-jitter-buffer", "off"}
			}
			an := startAnchor(t, flags...)
			n := startDefaultNode(t, an)
			var alice *baresip
			var bob *linphonec
			if transport == "tls" {
				alice = startBaresip(t, n.tlsPort, "tls", "alice", "alice-secret", aliceTone, n.ca)
				bob = startLinphonec(t, n.port, "udp", "bob", "bob-secret", bobTone)
			} else {
				alice = startBaresip(t, n.port, transport, "alice", "alice-secret", aliceTone, "")
				bob = startLinphonec(t, n.port, transport, "bob", "bob-secret", bobTone)
			}
			alice.waitRegistered()
			bob.waitRegistered()

			phoneCall(t, an, n.node, alice, bob)
			phoneCall(t, an, n.node, bob, alice)
			if name == "kernel" {
				// Both calls' tones were heard (phoneCall): and most of
				// their packets never woke the anchor.
				forwarded, err := strconv.ParseFloat(an.metric(t, "sori_anchor_kernel_forwarded_packets_total"), 64)
				if err != nil || forwarded < 200 {
					t.Fatalf("the kernel forwarded %v packets (%v), want most of two calls' RTP", forwarded, err)
				}
				t.Logf("the kernel forwarded %.0f packets", forwarded)
			}
		})
	}
}

// defaultNode is sori on the embedded configuration: its tls listener's
// port and the self-signed certificate it made (the CA a phone trusts).
type defaultNode struct {
	*node
	tlsPort, wssPort int
	ca               string
}

// startDefaultNode runs sori on the embedded config/sori.yaml with only
// its addresses changed: SIP and HTTP on free ports, the anchor an, the
// TLS certificate in a directory of the test's; and the extra
// replacements (text once in the file, its new value).
func startDefaultNode(t *testing.T, an *anchorProc, extra ...[2]string) *defaultNode {
	t.Helper()
	return withFreshPorts(t, func() (*defaultNode, error) {
		port, tlsPort, wssPort := freeSIPPort(t), freeSIPPort(t), freeSIPPort(t)
		httpAddr := fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t))
		cfg := string(config.Embedded)
		tlsDir := t.TempDir() // the self-signed pair is created there
		for _, r := range append([][2]string{
			{`["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "tls:127.0.0.1:5061", "wss:127.0.0.1:8443"]`,
				fmt.Sprintf(`["udp:127.0.0.1:%d", "tcp:127.0.0.1:%d", "tls:127.0.0.1:%d", "wss:127.0.0.1:%d"]`, port, port, tlsPort, wssPort)},
			{"/var/lib/sori/tls/cert.pem", filepath.Join(tlsDir, "cert.pem")},
			{"/var/lib/sori/tls/key.pem", filepath.Join(tlsDir, "key.pem")},
			{`anchors: ["127.0.0.1:22222"]`, fmt.Sprintf("anchors: [%q]", an.ng)},
			{"listen: 127.0.0.1:9060", "listen: " + httpAddr},
		}, extra...) {
			if strings.Count(cfg, r[0]) != 1 {
				t.Fatalf("config/sori.yaml no longer has %s once: update this test", r[0])
			}
			cfg = strings.Replace(cfg, r[0], r[1], 1)
		}
		n, err := launchNode(t, cfg, port, httpAddr)
		if err != nil {
			return nil, err
		}
		return &defaultNode{node: n, tlsPort: tlsPort, wssPort: wssPort, ca: filepath.Join(tlsDir, "cert.pem")}, nil
	})
}

// softphone is what a call needs of either client.
type softphone interface {
	user() string
	tone() int
	rtpPort() int
	// record readies the recording of the next call; the returned func
	// reads it once that call has ended.
	record() func() []float64
	dial(aor string)
	// waitAnswered returns when the call with peer is up and its media started.
	waitAnswered(peer string)
	// checkMediaPath requires the phone to say its RTP of the call goes
	// to, or comes from, the anchor.
	checkMediaPath(an *anchorProc)
	hangUp()
	waitEnded(peer string)
}

func aorOf(p softphone) string { return "sip:" + p.user() + "@sori.test" }

// phoneCall has caller call callee (which answers by itself), holds the
// call, hangs up, and checks the media went through the anchor and that
// each side heard the other's tone.
func phoneCall(t *testing.T, an *anchorProc, n *node, caller, callee softphone) {
	t.Helper()
	callerHeard, calleeHeard := caller.record(), callee.record()
	caller.dial(aorOf(callee))
	caller.waitAnswered(aorOf(callee))
	callee.waitAnswered(aorOf(caller))
	if got := nodeMetric(t, n, `sori_calls_active{state="answered"}`); got != "1" {
		t.Fatalf("%s → %s: sori counts %q answered calls", caller.user(), callee.user(), got)
	}
	caller.checkMediaPath(an)
	callee.checkMediaPath(an)
	time.Sleep(holdCall) // audio flows

	// Each phone sent its RTP to the anchor: one leg per phone, latched
	// to the phone's own RTP port, with a call's worth of packets.
	legs := anchorLegs(t, an)
	want := map[int]bool{caller.rtpPort(): true, callee.rtpPort(): true}
	if len(legs) != 2 {
		t.Fatalf("%s → %s: the anchor has legs %v, want one per phone (RTP ports %d, %d)", caller.user(), callee.user(), legs, caller.rtpPort(), callee.rtpPort())
	}
	for port, packets := range legs {
		if !want[port] || packets < 100 {
			t.Fatalf("%s → %s: anchor legs %v (phone RTP port: packets), want ports %d and %d with >= 100 packets each",
				caller.user(), callee.user(), legs, caller.rtpPort(), callee.rtpPort())
		}
	}
	t.Logf("%s → %s: anchor legs (phone RTP port: packets) %v", caller.user(), callee.user(), legs)

	caller.hangUp()
	caller.waitEnded(aorOf(callee))
	callee.waitEnded(aorOf(caller))
	// The BYE makes sori delete the call at the anchor; the counts follow.
	answered := `sori_calls_active{state="answered"}`
	for deadline := time.Now().Add(5 * time.Second); an.metric(t, "sori_anchor_calls") != "0" || an.metric(t, "sori_anchor_ports_in_use") != "0" ||
		nodeMetric(t, n, answered) != "0"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s → %s: after the hang-up the anchor holds %s calls, %s port pairs; sori counts %s answered calls", caller.user(), callee.user(),
				an.metric(t, "sori_anchor_calls"), an.metric(t, "sori_anchor_ports_in_use"), nodeMetric(t, n, answered))
		}
	}
	checkTone(t, caller.user()+" (calling "+callee.user()+")", callerHeard(), callee.tone())
	checkTone(t, callee.user()+" (called by "+caller.user()+")", calleeHeard(), caller.tone())
}

func nodeMetric(t *testing.T, n *node, name string) string {
	t.Helper()
	_, body := httpGet(t, "http://"+n.http+"/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return ""
}

// anchorCall asks the anchor (ng list and query) for its one call.
func anchorCall(t *testing.T, an *anchorProc) ng.Dict {
	t.Helper()
	ids := anchorDo(t, an, ng.Dict{"command": "list"}).List("calls")
	if len(ids) != 1 {
		t.Fatalf("the anchor holds calls %v, want exactly the phones' call", ids)
	}
	return ngQuery(t, an, ids[0])
}

// anchorLegs asks the anchor for its one call and returns, per leg, the
// phone's RTP port and the RTP packets it sent.
func anchorLegs(t *testing.T, an *anchorProc) map[int]int64 {
	t.Helper()
	q := anchorCall(t, an)
	legs := map[int]int64{}
	for tag, v := range q.Dict("tags") {
		leg, _ := v.(map[string]any)
		medias, _ := leg["medias"].([]any)
		if len(medias) != 1 {
			t.Fatalf("leg %s has %d media sections, want audio only: %v", tag, len(medias), leg)
		}
		media, _ := medias[0].(map[string]any)
		streams, _ := media["streams"].([]any)
		if len(streams) == 0 {
			t.Fatalf("leg %s has no streams: %v", tag, leg)
		}
		rtp, _ := streams[0].(map[string]any)
		port, _ := ng.Dict(rtp).Dict("endpoint").Int("port")
		packets, _ := ng.Dict(rtp).Dict("stats").Int("packets")
		legs[int(port)] = packets
	}
	return legs
}

// checkTone requires the recording to hold a couple of seconds of audio
// whose strongest frequency is want.
func checkTone(t *testing.T, who string, samples []float64, want int) {
	t.Helper()
	const rate = 8000
	active := loudFrames(samples, rate)
	if need := int(holdCall.Seconds()*rate) * 2 / 3; len(active) < need {
		t.Fatalf("%s heard %.2f s of sound out of %.2f s recorded, want at least %.2f s", who,
			float64(len(active))/rate, float64(len(samples))/rate, float64(need)/rate)
	}
	got := dominantFrequency(active, rate)
	if math.Abs(got-float64(want)) > 15 {
		t.Fatalf("%s heard mostly %.0f Hz, want the other phone's %d Hz", who, got, want)
	}
	t.Logf("%s heard %.0f Hz for %.2f s of %.2f s recorded", who, got, float64(len(active))/rate, float64(len(samples))/rate)
}

// loudFrames keeps the 20 ms frames of samples that are not silence.
func loudFrames(samples []float64, rate int) []float64 {
	frame := rate / 50
	var out []float64
	for i := 0; i+frame <= len(samples); i += frame {
		var sum float64
		for _, s := range samples[i : i+frame] {
			sum += s * s
		}
		if math.Sqrt(sum/float64(frame)) > 0.01 { // -40 dBFS
			out = append(out, samples[i:i+frame]...)
		}
	}
	return out
}

// dominantFrequency scans 100-3800 Hz in 5 Hz steps with the Goertzel
// algorithm and returns the frequency with the most energy.
func dominantFrequency(samples []float64, rate int) float64 {
	best, bestPower := 0.0, -1.0
	for f := 100.0; f <= 3800; f += 5 {
		coeff := 2 * math.Cos(2*math.Pi*f/float64(rate))
		var s1, s2 float64
		for _, x := range samples {
			s1, s2 = x+coeff*s1-s2, s1
		}
		if p := s1*s1 + s2*s2 - coeff*s1*s2; p > bestPower {
			best, bestPower = f, p
		}
	}
	return best
}

// writeToneWAV writes seconds of a sine at freq Hz, 8 kHz 16-bit mono PCM.
func writeToneWAV(t *testing.T, path string, freq, seconds int) {
	t.Helper()
	const rate = 8000
	n := rate * seconds
	b := make([]byte, 44, 44+2*n)
	copy(b, "RIFF")
	byteorder.LittleEndian.PutUint32(b[4:], uint32(36+2*n))
	copy(b[8:], "WAVEfmt ")
	byteorder.LittleEndian.PutUint32(b[16:], 16)
	byteorder.LittleEndian.PutUint16(b[20:], 1) // PCM
	byteorder.LittleEndian.PutUint16(b[22:], 1) // mono
	byteorder.LittleEndian.PutUint32(b[24:], rate)
	byteorder.LittleEndian.PutUint32(b[28:], rate*2)
	byteorder.LittleEndian.PutUint16(b[32:], 2)
	byteorder.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	byteorder.LittleEndian.PutUint32(b[40:], uint32(2*n))
	for i := range n {
		b = byteorder.LittleEndian.AppendUint16(b, uint16(int16(10000*math.Sin(2*math.Pi*float64(freq)*float64(i)/rate))))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readWAV returns the first channel of a 16-bit PCM WAV file at 8 kHz (or
// a multiple, such as Opus's 48 kHz, averaged down to 8 kHz), in [-1, 1]. A data chunk whose size was never filled in (a recorder killed
// before closing) runs to the end of the file.
func readWAV(path string) ([]float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 12 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return nil, errors.New("not a WAV file")
	}
	channels, step := 0, 1
	for p := 12; p+8 <= len(b); {
		id, size := string(b[p:p+4]), int(byteorder.LittleEndian.Uint32(b[p+4:]))
		body := b[p+8:]
		switch id {
		case "fmt ":
			if size < 16 || len(body) < 16 {
				return nil, errors.New("short fmt chunk")
			}
			format, rate, bits := byteorder.LittleEndian.Uint16(body), byteorder.LittleEndian.Uint32(body[4:]), byteorder.LittleEndian.Uint16(body[14:])
			channels = int(byteorder.LittleEndian.Uint16(body[2:]))
			if format != 1 || bits != 16 || rate == 0 || rate%8000 != 0 || channels == 0 {
				return nil, fmt.Errorf("format %d, %d Hz, %d bits, %d channels: want 16-bit PCM at a multiple of 8000 Hz", format, rate, bits, channels)
			}
			step = int(rate / 8000)
		case "data":
			if channels == 0 {
				return nil, errors.New("data before fmt")
			}
			if size == 0 || size > len(body) {
				size = len(body)
			}
			frame := 2 * channels
			out := make([]float64, 0, size/frame/step)
			for i := 0; i+frame*step <= size; i += frame * step {
				var sum float64
				for j := range step {
					sum += float64(int16(byteorder.LittleEndian.Uint16(body[i+j*frame:]))) / 32768
				}
				out = append(out, sum/float64(step))
			}
			return out, nil
		}
		p += 8 + size + size%2
	}
	return nil, errors.New("no data chunk")
}

// freeRTPPort returns an even port whose odd neighbour (RTCP) is free too.
func freeRTPPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		// An odd port is skipped alone, so the next try starts even.
		if p := freeSIPPort(t); p%2 == 0 && freeSIPPort(t) == p+1 {
			return p
		}
	}
	t.Fatal("no free RTP/RTCP port pair")
	return 0
}

// freePortRun is the first of n consecutive ports freeSIPPort hands out
// one after the other, for a client that binds a run of ports from one.
func freePortRun(t *testing.T, n int) int {
	t.Helper()
outer:
	for range 100 {
		first := freeSIPPort(t)
		for i := 1; i < n; i++ {
			if freeSIPPort(t) != first+i {
				continue outer
			}
		}
		return first
	}
	t.Fatalf("no run of %d free ports", n)
	return 0
}

// console is a client process driven through its standard input; its
// output is kept and matched in order.
type console struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	out    []byte
	seen   int           // output before this offset was matched already
	grew   chan struct{} // a token after each write
	exited chan struct{}
}

func startConsole(t *testing.T, name, dir string, args ...string) *console {
	t.Helper()
	c := &console{t: t, name: name, grew: make(chan struct{}, 1), exited: make(chan struct{})}
	c.cmd = exec.Command(args[0], args[1:]...)
	c.cmd.Dir = dir
	// Their own config, history and databases go to the test's directory.
	c.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, ".config"), "XDG_DATA_HOME="+filepath.Join(dir, ".local", "share"))
	c.cmd.Stdout, c.cmd.Stderr = c, c
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			c.dump()
		}
	})
	return c
}

// logLine matches the start of a liblinphone log line.
var logLine = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3} [a-z0-9-]+-(message|warning|error|debug|trace|fatal)-`)

// dump shows a failed test what the client printed, without its log
// lines, and keeps the whole output in a file.
func (c *console) dump() {
	c.mu.Lock()
	out := string(c.out)
	c.mu.Unlock()
	var console []string
	for _, l := range strings.Split(out, "\n") {
		if !logLine.MatchString(l) {
			console = append(console, l)
		}
	}
	kept := "(not kept)"
	if f, err := os.CreateTemp("", "sori-phones-*.log"); err == nil {
		_, _ = f.WriteString(out)
		f.Close()
		kept = f.Name()
	}
	c.t.Logf("%s output (log lines left out; all of it in %s):\n%s", c.name, kept, tail(strings.Join(console, "\n"), 8000))
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out = append(c.out, p...)
	c.mu.Unlock()
	select {
	case c.grew <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *console) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatalf("%s: %q: %v", c.name, line, err)
	}
}

// waitOutput returns when ready, called on the whole output so far under
// the lock, says so; it fails the test when the process exits first or
// after timeout.
func (c *console) waitOutput(what string, timeout time.Duration, ready func(out []byte) bool) {
	c.t.Helper()
	deadline := time.After(timeout)
	for exited := false; ; {
		c.mu.Lock()
		ok := ready(c.out)
		c.mu.Unlock()
		if ok {
			return
		}
		if exited {
			c.t.Fatalf("%s exited (%v) before %s", c.name, c.cmd.ProcessState, what)
		}
		select {
		case <-c.grew:
		case <-c.exited:
			exited = true // its output is complete: look once more
		case <-deadline:
			c.t.Fatalf("%s: no %s within %s", c.name, what, timeout)
		}
	}
}

// expect waits for want (what it means) in the output after the last
// match and returns its submatches. A match of failure before it fails the
// test at once.
func (c *console) expect(what string, timeout time.Duration, want, failure *regexp.Regexp) []string {
	c.t.Helper()
	var subs []string
	var failed string
	c.waitOutput(what+" ("+want.String()+")", timeout, func(out []byte) bool {
		rest := out[c.seen:]
		loc := want.FindSubmatchIndex(rest)
		if failure != nil {
			if bad := failure.FindIndex(rest); bad != nil && (loc == nil || bad[0] < loc[0]) {
				failed = lineAt(rest, bad[0])
				return true
			}
		}
		if loc == nil {
			return false
		}
		for i := 0; i < len(loc); i += 2 {
			if loc[i] >= 0 {
				subs = append(subs, string(rest[loc[i]:loc[i+1]]))
			} else {
				subs = append(subs, "")
			}
		}
		c.seen += loc[1]
		return true
	})
	if failed != "" {
		c.t.Fatalf("%s: no %s: %s", c.name, what, failed)
	}
	return subs
}

// lineAt is the line of out holding offset i, without terminal colours.
func lineAt(out []byte, i int) string {
	start := bytes.LastIndexByte(out[:i], '\n') + 1
	end := bytes.IndexByte(out[i:], '\n')
	if end < 0 {
		end = len(out) - i
	}
	return regexp.MustCompile(`\x1b\[[0-9;]*m`).ReplaceAllString(strings.TrimSpace(string(out[start:i+end])), "")
}

// baresip is a baresip process: the stdio interface for commands, the
// ausine module as its microphone, sndfile recording what it decodes.
type baresip struct {
	*console
	username   string
	dir        string
	freq, port int
	transport  string // what it registers over: UDP, TCP, TLS
}

// phoneOption changes how a softphone is set up.
type phoneOption int

const (
	// mandatorySRTP: the phone places and takes calls only with SDES-SRTP
	// (baresip's mediaenc=srtp-mand, Linphone's mandatory SRTP).
	mandatorySRTP phoneOption = iota + 1
	// withOpus: baresip loads its Opus codec besides G.711 (a WebRTC peer
	// offers Opus and G.711; Opus passes the anchor untouched).
	withOpus
)

// ca, for transport tls, is the certificate sori is trusted by.
func startBaresip(t *testing.T, sori int, transport, user, password string, freq int, ca string, opts ...phoneOption) *baresip {
	t.Helper()
	dir := t.TempDir()
	b := &baresip{username: user, dir: dir, freq: freq, port: freeRTPPort(t), transport: strings.ToUpper(transport)}
	sip := freeSIPPort(t)
	// Every address is loopback: the SIP and RTP sockets (net_interface),
	// and name lookups, should any happen (dns_server). The ALSA null
	// device plays what is heard; sndfile records it on the way there.
	cfg := fmt.Sprintf(`poll_method		epoll
sip_listen		127.0.0.1:%d
net_interface		127.0.0.1
dns_server		127.0.0.1:53
call_local_timeout	30
audio_player		alsa,null
audio_alert		alsa,null
audio_source		ausine,%d
ausrc_srate		48000
ausrc_channels		2
rtp_ports		%d-%d
rtcp_mux		no
module_path		/usr/lib/baresip/modules
module			stdio.so
module			g711.so
module			sndfile.so
module			alsa.so
module			ausine.so
module_tmp		uuid.so
module_tmp		account.so
module_app		menu.so
statmode_default	off
snd_path		%s
`, sip, freq, b.port, b.port+1, filepath.Join(dir, "rec"))
	if ca != "" {
		cfg += "sip_cafile\t\t" + ca + "\n"
	}
	if slices.Contains(opts, withOpus) {
		cfg += "module\t\t\topus.so\n"
	}
	srtp := slices.Contains(opts, mandatorySRTP)
	if srtp {
		cfg += "module\t\t\tsrtp.so\n"
	}
	// The README's account line, with the test's port and transport;
	// answermode=auto answers calls.
	account := fmt.Sprintf("<sip:%s@sori.test>;auth_pass=%s;outbound=\"sip:127.0.0.1:%d;transport=%s\";regint=600;answermode=auto\n", user, password, sori, transport)
	if transport != "udp" {
		account = fmt.Sprintf("<sip:%s@sori.test;transport=%s>;auth_pass=%s;outbound=\"sip:127.0.0.1:%d;transport=%s\";regint=600;answermode=auto\n", user, transport, password, sori, transport)
	}
	if srtp {
		account = strings.Replace(account, ";regint=600", ";regint=600;mediaenc=srtp-mand", 1)
	}
	for name, body := range map[string]string{"config": cfg, "accounts": account} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "rec"), 0o755); err != nil {
		t.Fatal(err)
	}
	b.console = startConsole(t, "baresip ("+user+")", dir, "baresip", "-f", dir)
	return b
}

func (b *baresip) user() string { return b.username }
func (b *baresip) tone() int    { return b.freq }
func (b *baresip) rtpPort() int { return b.port }

func (b *baresip) waitRegistered() {
	b.t.Helper()
	// "alice@sori.test: {0/UDP/v4} 200 OK (Sori/0.1) [1 binding]"; libre
	// reports a refused or abandoned REGISTER as "reg: ...: Register: <error>"
	// or with the final status.
	b.expect("registration over "+b.transport, 10*time.Second, regexp.MustCompile(`\{\d+/`+b.transport+`/v4\} 200 OK`),
		regexp.MustCompile(`Register: |\{\d+/\w+/v4\} [3-6]\d\d `))
}

func (b *baresip) record() func() []float64 {
	before := b.dumps()
	return func() []float64 {
		b.t.Helper()
		var fresh []string
		for _, f := range b.dumps() {
			if !slices.Contains(before, f) {
				fresh = append(fresh, f)
			}
		}
		if len(fresh) != 1 {
			b.t.Fatalf("%s: sndfile recorded %v for the call, want one file", b.name, fresh)
		}
		s, err := readWAV(fresh[0])
		if err != nil {
			b.t.Fatalf("%s: %s: %v", b.name, fresh[0], err)
		}
		return s
	}
}

// dumps lists sndfile's recordings of decoded (received) audio.
func (b *baresip) dumps() []string {
	files, _ := filepath.Glob(filepath.Join(b.dir, "rec", "dump-*-dec.wav"))
	return files
}

func (b *baresip) dial(aor string) { b.send("/dial " + aor) }

func (b *baresip) waitAnswered(peer string) {
	b.t.Helper()
	b.expect("answered call with "+peer, 10*time.Second, regexp.MustCompile(`Call established: `+regexp.QuoteMeta(peer)+`[;\s]`),
		regexp.MustCompile(`Call with \S+ terminated|Call failed`))
}

// checkMediaPath requires the RTP baresip receives in the current call to
// come from one of the anchor's ports.
func (b *baresip) checkMediaPath(an *anchorProc) {
	b.t.Helper()
	m := b.expect("RTP", 10*time.Second, regexp.MustCompile(`incoming rtp for 'audio' established, receiving from (\d+\.\d+\.\d+\.\d+):(\d+)`), nil)
	if !an.owns(m[1], m[2]) {
		b.t.Fatalf("%s receives its RTP from %s:%s, not from the anchor (127.0.0.1:%d-%d)", b.name, m[1], m[2], an.minPort, an.maxPort)
	}
}

// owns says whether ip:port is one of the anchor's RTP ports.
func (a *anchorProc) owns(ip, port string) bool {
	p, err := strconv.Atoi(port)
	return err == nil && ip == "127.0.0.1" && p >= a.minPort && p <= a.maxPort
}

func (b *baresip) hangUp() { b.send("/hangup") }

func (b *baresip) waitEnded(peer string) {
	b.t.Helper()
	b.expect("end of the call with "+peer, 10*time.Second, regexp.MustCompile(`Call with `+regexp.QuoteMeta(peer)+`(;\S*)? terminated`), nil)
}

// linphonec is a linphonec process in --pipe mode (commands from standard
// input, liblinphone's log on standard output), in file mode: it plays a
// WAV file as its microphone and records what it hears to another.
type linphonec struct {
	*console
	username   string
	dir        string
	freq, port int
	sent       int       // commands written
	calls      int       // recordings asked for
	mediaTo    [2]string // where the current call's RTP goes: the SDP it received
}

const linphonePrompt = "linphonec> "

func startLinphonec(t *testing.T, sori int, transport, user, password string, freq int, opts ...phoneOption) *linphonec {
	t.Helper()
	dir := t.TempDir()
	l := &linphonec{username: user, dir: dir, freq: freq, port: freeRTPPort(t)}
	sip := freeSIPPort(t)
	udp, tcp := sip, 0
	if transport == "tcp" {
		udp, tcp = 0, sip
	}
	// The account as Linphone's settings make it: the server as proxy
	// and as outbound proxy (route), so that calls to sori.test, which has
	// no DNS entry, go there too.
	rc := fmt.Sprintf(`[sip]
sip_port=%d
sip_tcp_port=%d
sip_tls_port=0
default_proxy=0
[rtp]
audio_rtp_port=%d
[sound]
echocancellation=0
[video]
display=0
capture=0
[proxy_0]
reg_proxy=<sip:127.0.0.1:%d;transport=%s>
reg_route=<sip:127.0.0.1:%d;transport=%s;lr>
reg_identity=sip:%s@sori.test
reg_expires=600
reg_sendregister=1
publish=0
[auth_info_0]
username=%s
passwd=%s
realm=sori.test
domain=sori.test
`, udp, tcp, l.port, sori, transport, sori, transport, user, user, password)
	if slices.Contains(opts, mandatorySRTP) {
		rc = strings.Replace(rc, "default_proxy=0\n", "default_proxy=0\nmedia_encryption=srtp\nmedia_encryption_mandatory=1\n", 1)
	}
	if err := os.WriteFile(filepath.Join(dir, "linphonerc"), []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	// liblinphone does not start without a directory for its database.
	if err := os.MkdirAll(filepath.Join(dir, ".local", "share", "linphone"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeToneWAV(t, filepath.Join(dir, "tone.wav"), freq, 20)
	// --pipe: without a terminal, only this mode keeps the core running
	// between commands (it also opens a command socket, /tmp/linphonec-UID,
	// which is not used here). -a answers calls; -d 6 logs to standard output.
	l.console = startConsole(t, "linphonec ("+user+")", dir, "linphonec", "--pipe", "-c", filepath.Join(dir, "linphonerc"), "-a", "-d", "6")
	l.command("soundcard use files")
	l.expect("file mode", 5*time.Second, regexp.MustCompile(`Using wav files instead of soundcard`), nil)
	l.command("play " + filepath.Join(dir, "tone.wav"))
	return l
}

func (l *linphonec) user() string { return l.username }
func (l *linphonec) tone() int    { return l.freq }
func (l *linphonec) rtpPort() int { return l.port }

// command writes one command line once linphonec has prompted for it:
// it reads a single line at a time and drops one that comes too early.
func (l *linphonec) command(line string) {
	l.t.Helper()
	l.waitOutput("prompt for "+strconv.Quote(line), 10*time.Second, func(out []byte) bool {
		return bytes.Count(out, []byte(linphonePrompt)) > l.sent
	})
	l.sent++
	l.send(line)
}

func (l *linphonec) waitRegistered() {
	l.t.Helper()
	l.expect("registration", 10*time.Second, regexp.MustCompile(`moving from state \[LinphoneRegistrationProgress\] to \[LinphoneRegistrationOk\]`),
		regexp.MustCompile(`to \[LinphoneRegistrationFailed\]`))
}

func (l *linphonec) record() func() []float64 {
	l.calls++
	path := filepath.Join(l.dir, fmt.Sprintf("heard-%d.wav", l.calls))
	l.command("record " + path)
	return func() []float64 {
		l.t.Helper()
		s, err := readWAV(path)
		if err != nil {
			l.t.Fatalf("%s: %s: %v", l.name, path, err)
		}
		return s
	}
}

func (l *linphonec) dial(aor string) { l.command("call " + aor) }

func (l *linphonec) waitAnswered(peer string) {
	l.t.Helper()
	ended := regexp.MustCompile(`Call \d+ with \S+ (error|ended)`)
	// oRTP logs where it sends as the audio stream starts, before the
	// call state changes.
	m := l.expect("audio stream", 10*time.Second, regexp.MustCompile(`RtpSession \[\w+\] sending to rtp \[(?:::ffff:)?([0-9.]+)\]:(\d+)`), ended)
	l.mediaTo = [2]string{m[1], m[2]}
	l.expect("answered call with "+peer, 10*time.Second, regexp.MustCompile(`Media streams established with `+regexp.QuoteMeta(peer)), ended)
}

// checkMediaPath requires linphonec to send its RTP to the anchor: the SDP
// it was given points there.
func (l *linphonec) checkMediaPath(an *anchorProc) {
	l.t.Helper()
	if !an.owns(l.mediaTo[0], l.mediaTo[1]) {
		l.t.Fatalf("%s sends its RTP to %s:%s, not to the anchor (127.0.0.1:%d-%d)", l.name, l.mediaTo[0], l.mediaTo[1], an.minPort, an.maxPort)
	}
}

func (l *linphonec) hangUp() { l.command("terminate") }

func (l *linphonec) waitEnded(peer string) {
	l.t.Helper()
	l.expect("end of the call with "+peer, 10*time.Second, regexp.MustCompile(`Call \d+ with `+regexp.QuoteMeta(peer)+` ended`), nil)
}
