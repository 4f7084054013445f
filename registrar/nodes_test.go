package registrar

import (
	"context"
	"testing"
)

type holder struct{ transport, source string }

func (h *holder) Holder(transport, source string) (string, string) {
	h.transport, h.source = transport, source
	return "node-b", "f1token-" + source
}

// Each binding names the node it registered on, with that node's token
// for the flow the REGISTER came over.
func TestBindingsNameTheirHolder(t *testing.T) {
	h := newHarness(t)
	hd := &holder{}
	WithHolder(hd)(h.reg)
	res := h.register(request{user: "alice", cseq: 1, headers: []string{"Contact: <sip:alice@192.168.1.20:5060>"}}, "alice-secret")
	if res.StatusCode != 200 {
		t.Fatalf("got %d", res.StatusCode)
	}
	bs, err := h.store.Lookup(context.Background(), "alice@sori.test", h.now)
	if err != nil || len(bs) != 1 {
		t.Fatalf("%v %v", bs, err)
	}
	if b := bs[0]; b.Node != "node-b" || b.Flow != "f1token-203.0.113.5:40000" || hd.transport != "UDP" || hd.source != "203.0.113.5:40000" {
		t.Fatalf("binding held by %q with %q (asked for %s %s)", b.Node, b.Flow, hd.transport, hd.source)
	}
}

// A Path is stored only from the proxies trusted to write one; from
// anyone else the REGISTER gets 403 and nothing is stored.
func TestPathOnlyFromTrustedProxies(t *testing.T) {
	path := "Path: <sip:edge.example;lr>"
	for _, c := range []struct {
		name    string
		trusted func(string) bool
		code    int
	}{
		{"no edge proxy configured", nil, 403},
		{"from a source that is not an edge proxy", func(src string) bool { return src == "198.51.100.1:5060" }, 403},
		{"from an edge proxy", func(src string) bool { return src == "203.0.113.5:40000" }, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			if c.trusted != nil {
				WithPathFrom(c.trusted)(h.reg)
			}
			res := h.register(request{user: "alice", cseq: 1, headers: []string{"Contact: <sip:alice@192.168.1.20:5060>", path}}, "alice-secret")
			if res.StatusCode != c.code {
				t.Fatalf("got %d %s, want %d", res.StatusCode, res.Reason, c.code)
			}
			bs, _ := h.store.Lookup(context.Background(), "alice@sori.test", h.now)
			switch {
			case c.code == 403 && len(bs) != 0:
				t.Fatalf("stored %+v after 403", bs)
			case c.code == 200 && (len(bs) != 1 || len(bs[0].Path) != 1 || res.GetHeader("Path") == nil):
				t.Fatalf("stored %+v, Path echoed %v", bs, res.GetHeader("Path"))
			}
		})
	}
	t.Run("without Path, nothing changes", func(t *testing.T) {
		h := newHarness(t)
		if res := h.register(request{user: "alice", cseq: 1, headers: []string{"Contact: <sip:alice@192.168.1.20:5060>"}}, "alice-secret"); res.StatusCode != 200 {
			t.Fatalf("got %d", res.StatusCode)
		}
	})
}
