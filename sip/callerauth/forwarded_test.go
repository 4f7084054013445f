package callerauth

import (
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain/chaintest"
)

// A request another node forwards down one of this node's flows was
// authenticated where it entered: it is not challenged again; any other
// request from our domain still is.
func TestForwardedByANode(t *testing.T) {
	p := newPlugin(t)
	p.Forwarded = func(req *sip.Request) bool { return req.Source() == "10.0.0.2:41000" }
	for _, c := range []struct {
		name, src string
		passed    bool
	}{
		{"from the node", "10.0.0.2:41000", true},
		{"from anyone else", "10.0.0.3:41000", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := chaintest.Request(t, chaintest.Raw("INVITE", "sip:bob@192.168.1.20:5060", "Route: <sip:f1token@127.0.0.1:5060;lr>"))
			req.SetSource(c.src)
			res, user, passed := serve(t, p, req)
			if (passed != nil) != c.passed || user != "" {
				t.Fatalf("passed %v as %q, response %v", passed != nil, user, res)
			}
			if !c.passed && (res == nil || res.StatusCode != 407) {
				t.Fatalf("not challenged: %v", res)
			}
		})
	}
}
