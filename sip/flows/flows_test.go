package flows

import (
	"testing"
	"time"

	"github.com/sori-voice/sori/registrar/store"
)

type conns map[string]bool // transport+" "+remote → open

func (c conns) Open(transport, remote string) bool { return c[transport+" "+remote] }

func TestCount(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	open := conns{"tls 203.0.113.5:40000": true, "udp 203.0.113.5:40001": true, "ws 203.0.113.9:50000": true}
	tr := New(open)
	tr.now = func() time.Time { return now }
	later := now.Add(time.Hour)
	tr.Track("alice@sori.test", []store.Binding{
		{ID: "a", Instance: "<urn:uuid:1>", RegID: 1, Transport: "tls", Source: "203.0.113.5:40000", Expires: later},
		{ID: "b", Instance: "<urn:uuid:1>", RegID: 2, Transport: "udp", Source: "203.0.113.5:40001", Expires: later},
		{ID: "c", Instance: "<urn:uuid:2>", RegID: 1, Transport: "tcp", Source: "203.0.113.5:40002", Expires: later}, // its connection closed
		{ID: "d", Transport: "tls", Source: "203.0.113.5:40000", Expires: later},                                     // no outbound
		{ID: "e", Instance: "<urn:uuid:3>", RegID: 1, Transport: "udp", Source: "203.0.113.5:40001", Expires: now},   // expired
	})
	tr.Track("bob@sori.test", []store.Binding{
		{ID: "f", Instance: "<urn:uuid:4>", RegID: 1, Transport: "ws", Source: "203.0.113.9:50000", Expires: later},
	})
	got := tr.Count()
	if got["tls"] != 1 || got["udp"] != 1 || got["tcp"] != 0 || got["ws"] != 1 || len(got) != 3 {
		t.Fatalf("flows %v", got)
	}
	tr.Track("alice@sori.test", nil) // alice un-registered
	if got := tr.Count(); got["tls"] != 0 || got["udp"] != 0 || got["ws"] != 1 {
		t.Fatalf("after un-register: %v", got)
	}
	if len(tr.m) != 1 || len(tr.m["bob@sori.test"]) != 1 {
		t.Fatalf("%d tracked, want bob's only", len(tr.m))
	}
}
