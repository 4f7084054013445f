package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/ng"
)

// sori drives rtpengine as it drives sori-anchor (media.anchors takes
// either): these tests run the real rtpengine daemon (package
// rtpengine-daemon, installed by make deps) in userspace on loopback.

// startRtpengine runs rtpengine on its own ng port and media range; its
// anchorProc has no HTTP (no metrics): ask it over ng (ngCalls).
func startRtpengine(t *testing.T) *anchorProc {
	t.Helper()
	bin, err := exec.LookPath("rtpengine")
	if err != nil {
		t.Fatalf("rtpengine is not installed (make deps installs rtpengine-daemon): %v", err)
	}
	lo := takeRange()
	a := &anchorProc{ng: fmt.Sprintf("127.0.0.1:%d", freeSIPPort(t)), minPort: lo, maxPort: lo + 199, exited: make(chan struct{})}
	a.cmd = exec.Command(bin, "--config-file=none", "--foreground", "--log-stderr", "--log-level=6",
		"--interface=127.0.0.1", "--listen-ng="+a.ng, fmt.Sprintf("--port-min=%d", a.minPort), fmt.Sprintf("--port-max=%d", a.maxPort),
		"--table=-1", "--delete-delay=0", "--num-threads=2", "--timeout=60")
	a.run(t, "rtpengine", false, func(log string) string {
		var kept []string // without the test's own polling
		for _, l := range strings.Split(log, "\n") {
			if !strings.Contains(l, "'list'") && !strings.Contains(l, "'query'") && !strings.Contains(l, "'ping'") {
				kept = append(kept, l)
			}
		}
		return tail(strings.Join(kept, "\n"), 8000)
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if res, err := ngDo(a, ng.Dict{"command": "ping"}); err == nil && res.Str("result") == "pong" {
			return a
		}
		select {
		case <-a.exited:
			t.Fatalf("rtpengine exited at start:\n%s", a.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("rtpengine did not answer ping:\n%s", a.logs.String())
		}
	}
}

// ngDo sends one ng command to the anchor.
func ngDo(a *anchorProc, d ng.Dict) (ng.Dict, error) {
	client, err := ng.NewClient("127.0.0.1:0", 200*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return client.Do(ctx, netip.MustParseAddrPort(a.ng), d)
}

// ngCalls is how many calls the anchor holds (ng list).
func ngCalls(t *testing.T, a *anchorProc) int {
	t.Helper()
	l := anchorDo(t, a, ng.Dict{"command": "list"})
	if l.Str("result") != "ok" {
		t.Fatalf("ng list: %v", l)
	}
	return len(l.List("calls"))
}

// A call through sori anchored by rtpengine: both INVITE and 200 point
// at rtpengine's ports, RTP goes both ways through it unchanged, and the
// BYE deletes the call there.
func TestRtpengineAnchorsACall(t *testing.T) {
	an := startRtpengine(t)
	n := startNode(t, nodeConfig{extra: fmt.Sprintf("media:\n  anchors: [%q]\n  ping_interval: 1s\n", an.ng)})
	ma, mb := newMediaSocket(t), newMediaSocket(t)
	c := callWithMedia(t, n, ma, mb)
	toAnchorFromB, toAnchorFromA := mediaTarget(t, c.inv.Body()), mediaTarget(t, c.res.Body())
	for name, ap := range map[string]netip.AddrPort{"bob's INVITE": toAnchorFromB, "alice's 200": toAnchorFromA} {
		if !an.hasPort(ap) {
			t.Fatalf("%s sends media to %s, not to rtpengine (%d-%d)", name, ap, an.minPort, an.maxPort)
		}
	}
	if toAnchorFromA == toAnchorFromB {
		t.Fatalf("both sides send media to %s", toAnchorFromA)
	}
	stream(t, ma, toAnchorFromA, mb, toAnchorFromB, 0xa11ce, 50)
	stream(t, mb, toAnchorFromB, ma, toAnchorFromA, 0xb0b, 50)
	q := anchorCall(t, an)
	if tags := q.Dict("tags"); len(tags) != 2 || tags.Dict(c.res.To().Params.GetOr("tag", "")) == nil {
		t.Fatalf("rtpengine's call has legs %v, want alice's and bob's", keys(tags))
	}

	c.alice.send(c.alice.inDialog("BYE", 3, c.res))
	c.bob.respond(c.bob.readRequest(), 200, "OK")
	if r := c.alice.final(); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
	waitNgCalls(t, an, 0)
	// rtpengine drops the call before it replies: the reply reaches sori after.
	deleted := `sori_media_commands_total{command="delete",outcome="ok"}`
	for deadline := time.Now().Add(5 * time.Second); nodeMetric(t, n, deleted) != "1"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sori's ng deletes: %q", nodeMetric(t, n, deleted))
		}
	}
}

func waitNgCalls(t *testing.T, an *anchorProc, want int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ngCalls(t, an) != want; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the anchor holds %d calls, want %d", ngCalls(t, an), want)
		}
	}
}

// The fork of TestForkOffersEachContactItsOwnSDP with rtpengine as the
// anchor: the browser's branch gets rtpengine's WebRTC offer (its own
// via-branch), the phone's RTP/AVP; the phone answers, the browser's
// branch is deleted by via-branch, media flows, and the hang-up leaves
// rtpengine with nothing.
func TestRtpengineForkOffersEachContactItsOwnSDP(t *testing.T) {
	an := startRtpengine(t)
	for _, phoneFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "phone registered first", false: "browser registered first"}[phoneFirst], func(t *testing.T) {
			forkToBrowserAndPhone(t, an, phoneFirst)
		})
	}
}

// legCount is how many port pairs the anchor holds for calls:
// sori-anchor's gauge, or for rtpengine the media sections of its calls'
// legs that have a local port (ng query).
func (a *anchorProc) legCount(t *testing.T) int {
	t.Helper()
	if a.http != "" {
		var n int
		fmt.Sscan(a.metric(t, "sori_anchor_ports_in_use"), &n)
		return n
	}
	total := 0
	for _, id := range anchorDo(t, a, ng.Dict{"command": "list"}).List("calls") {
		q := anchorDo(t, a, ng.Dict{"command": "query", "call-id": id})
		for _, v := range liveLegs(q.Dict("tags")) {
			leg, _ := v.(map[string]any)
			medias, _ := leg["medias"].([]any)
			total += len(medias)
		}
	}
	return total
}

// callCount is how many calls the anchor holds.
func (a *anchorProc) callCount(t *testing.T) int {
	t.Helper()
	if a.http != "" {
		var n int
		fmt.Sscan(a.metric(t, "sori_anchor_calls"), &n)
		return n
	}
	return ngCalls(t, a)
}

// liveLegs are the legs of an ng query's "tags" that hold ports: rtpengine
// lists a deleted branch until its call ends, its streams without a local
// port (released); sori-anchor drops it.
func liveLegs(tags ng.Dict) ng.Dict {
	live := ng.Dict{}
	for tag, v := range tags {
		leg, _ := v.(map[string]any)
		medias, _ := leg["medias"].([]any)
		for _, m := range medias {
			md, _ := m.(map[string]any)
			streams, _ := md["streams"].([]any)
			if len(streams) == 0 {
				continue
			}
			if st, _ := streams[0].(map[string]any); st["local port"] != nil {
				live[tag] = v
				break
			}
		}
	}
	return live
}

// peerOf is the tag a leg of an ng query is in dialogue with: sori-anchor
// says "in dialogue with", rtpengine 10.5 lists its "subscriptions".
func peerOf(leg ng.Dict) string {
	if p := leg.Str("in dialogue with"); p != "" {
		return p
	}
	subs, _ := leg["subscriptions"].([]any)
	for _, s := range subs {
		if d, _ := s.(map[string]any); d != nil {
			if tag := ng.Dict(d).Str("tag"); tag != "" {
				return tag
			}
		}
	}
	return ""
}
