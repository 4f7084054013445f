package main

import (
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sori-voice/sori/media/jitter"
)

func TestFlagsAsScriptsGiveThem(t *testing.T) {
	o, err := parseFlags(strings.Fields("-ng 127.0.0.1:22222 -rtp-ports 30000-39999 -listen 127.0.0.1 -advertise 203.0.113.5 -http 127.0.0.1:9061"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.ng != netip.MustParseAddrPort("127.0.0.1:22222") || o.minPort != 30000 || o.maxPort != 39999 || o.listen != netip.MustParseAddr("127.0.0.1") ||
		len(o.advertise) != 1 || o.advertise[0] != netip.MustParseAddr("203.0.113.5") || o.http != "127.0.0.1:9061" || o.mediaTimeout != 30*time.Second {
		t.Fatalf("%+v", o)
	}
	o, err = parseFlags(strings.Fields("-listen :: -advertise 203.0.113.5,2001:db8::5 -media-timeout 0"), io.Discard)
	if err != nil || len(o.advertise) != 2 || o.mediaTimeout != 0 {
		t.Fatalf("%+v %v", o, err)
	}
	if o, _ := parseFlags(nil, io.Discard); o.jitter.Mode != jitter.Adaptive || o.jitter.Max != 120*time.Millisecond {
		t.Fatalf("default jitter buffer %+v", o.jitter)
	}
	if o, _ := parseFlags(strings.Fields("-jitter-buffer off"), io.Discard); o.jitter.Mode != jitter.Off {
		t.Fatalf("off: %+v", o.jitter)
	}
	o, err = parseFlags(strings.Fields("-ice-sources 127.0.0.0/8,192.0.2.7/24,2001:db8::/32"), io.Discard)
	if err != nil || len(o.iceSources) != 3 || o.iceSources[0] != netip.MustParsePrefix("127.0.0.0/8") ||
		o.iceSources[1] != netip.MustParsePrefix("192.0.2.0/24") || o.iceSources[2] != netip.MustParsePrefix("2001:db8::/32") {
		t.Fatalf("-ice-sources: %v %v", o.iceSources, err)
	}
	if o, _ := parseFlags(nil, io.Discard); o.iceSources != nil || o.consent != 30*time.Second {
		t.Fatalf("default -ice-sources %v (want any), -consent-timeout %s (want RFC 7675's 30s)", o.iceSources, o.consent)
	}
	if o, _ := parseFlags(nil, io.Discard); o.certLifetime != 30*24*time.Hour {
		t.Fatalf("default -dtls-cert-lifetime %s, want rtpengine's 30 days", o.certLifetime)
	}
	if o, err := parseFlags(strings.Fields("-dtls-cert-lifetime 24h"), io.Discard); err != nil || o.certLifetime != 24*time.Hour {
		t.Fatalf("-dtls-cert-lifetime 24h: %s %v", o.certLifetime, err)
	}
	if o, err := parseFlags(strings.Fields("-consent-timeout 2s"), io.Discard); err != nil || o.consent != 2*time.Second {
		t.Fatalf("-consent-timeout 2s: %s %v", o.consent, err)
	}
	// Each anchor has its own name in Redis: by default its advertised
	// address and ng port, the same across its restarts.
	o, err = parseFlags(strings.Fields("-ng 127.0.0.1:2223 -advertise 203.0.113.5 -redis redis-cluster://10.0.0.1:7000,10.0.0.2:7000"), io.Discard)
	if err != nil || o.redis != "redis-cluster://10.0.0.1:7000,10.0.0.2:7000" || o.redisID != "203.0.113.5:2223" || o.redisEvery != 5*time.Second {
		t.Fatalf("-redis: %+v %v", o, err)
	}
	if o, _ := parseFlags(strings.Fields("-redis redis://127.0.0.1:6379/0 -redis-id a1 -redis-every 2s"), io.Discard); o.redisID != "a1" || o.redisEvery != 2*time.Second {
		t.Fatalf("-redis-id: %+v", o)
	}
}

func TestBadFlagsAreNamed(t *testing.T) {
	for _, tt := range []struct{ args, want string }{
		{"-ng localhost:22222", "-ng:"},
		{"-rtp-ports 30000", "-rtp-ports:"},
		{"-rtp-ports 40000-30000", "-rtp-ports:"},
		{"-rtp-ports 80-2000", "-rtp-ports:"},
		{"-listen eth0", "-listen:"},
		{"-listen 0.0.0.0", "-advertise: required"},
		{"-advertise 203.0.113.5,198.51.100.1", "-advertise:"},
		{"-media-timeout -1s", "-media-timeout:"},
		{"-rtcp-interval 1ms", "-rtcp-interval:"},
		{"-jitter-buffer smart", "-jitter-buffer:"},
		{"-jb-min 200ms -jb-max 100ms", "-jb-max:"},
		{"-log-level loud", "-log-level:"},
		{"-ice-sources 127.0.0.1", "-ice-sources:"},
		{"-redis 127.0.0.1:6379", "-redis:"},
		{"-redis-every 10ms", "-redis-every:"},
		{"-consent-timeout 0", "-consent-timeout:"},
		{"-dtls-cert-lifetime 30m", "-dtls-cert-lifetime:"},
		{"-dtls-cert-lifetime 9000h", "-dtls-cert-lifetime:"},
		{"extra", "unexpected argument"},
	} {
		_, err := parseFlags(strings.Fields(tt.args), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.args, err, tt.want)
		}
	}
}
