package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sori-voice/sori/media/jitter"
	"github.com/sori-voice/sori/media/relay"
)

func TestKernelFastPathOnlyWhereItCanForward(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	cases := []struct {
		name   string
		o      options
		loaded bool
		says   string
	}{
		{"buffer off, one IPv4 address", options{kernelForward: true, listen: lo, jitter: jitter.Config{Mode: jitter.Off}}, true, "kernel fast path loaded"},
		{"-kernel-forward=false", options{kernelForward: false, listen: lo, jitter: jitter.Config{Mode: jitter.Off}}, false, ""},
		{"every stream buffered", options{kernelForward: true, listen: lo, jitter: jitter.Config{Mode: jitter.Adaptive}}, false, ""},
		{"wildcard -listen", options{kernelForward: true, listen: netip.IPv4Unspecified(), jitter: jitter.Config{Mode: jitter.Off}}, false, "needs -listen to be one IPv4 address"},
		{"IPv6 -listen", options{kernelForward: true, listen: netip.IPv6Loopback(), jitter: jitter.Config{Mode: jitter.Off}}, false, "needs -listen to be one IPv4 address"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			reg := prometheus.NewRegistry()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			path := openFastPath(ctx, c.o, reg, log)
			if path != nil {
				defer func() { relay.SetFastPath(nil); path.Close() }()
			}
			if (path != nil) != c.loaded {
				t.Fatalf("loaded %v, want %v; log:\n%s", path != nil, c.loaded, logs.String())
			}
			if c.says != "" && !strings.Contains(logs.String(), c.says) {
				t.Fatalf("the log does not say %q:\n%s", c.says, logs.String())
			}
			n, err := testutil.GatherAndCount(reg, "sori_anchor_kernel_forwarded_packets_total")
			if err != nil || (n == 1) != c.loaded {
				t.Fatalf("forwarded-packets metric present %v (%v), want %v", n == 1, err, c.loaded)
			}
		})
	}
}
