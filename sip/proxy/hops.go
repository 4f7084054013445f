package proxy

import (
	"context"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/local"
)

// Hops is the chain link that stops requests going round in circles
// (RFC 3261 §16.3 steps 3-4): Max-Forwards 0 gets 483, a request carrying
// a Via this proxy added for the very same request gets 482. It runs before
// authentication, so a looping request is not challenged on every lap.
type Hops struct {
	Self *local.Identity
}

// Methods implements chain.Plugin.
func (Hops) Methods() []string { return nil }

// Wrap implements chain.Plugin.
func (h Hops) Wrap(next chain.Handler) chain.Handler {
	return chain.HandlerFunc(func(ctx context.Context, w chain.ResponseWriter, req *sip.Request) {
		if req.IsAck() || req.Method == sip.REGISTER || h.Self.AddressedToServer(req.Recipient) && req.Route() == nil {
			next.ServeSIP(ctx, w, req) // answered here, not forwarded
			return
		}
		if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
			_ = chain.Reply(w, req, 483, "Too Many Hops")
			return
		}
		if h.looped(req) {
			_ = chain.Reply(w, req, 482, "Loop Detected")
			return
		}
		next.ServeSIP(ctx, w, req)
	})
}

// looped reports whether one of our Vias carries this request's loop hash:
// we forwarded this same request (same target, same transaction) before.
// A spiral, which comes back with another Request-URI, hashes differently.
func (h Hops) looped(req *sip.Request) bool {
	var want string
	for _, hd := range req.Headers() {
		via, ok := hd.(*sip.ViaHeader)
		if !ok || !h.Self.IsLocalHost(via.Host) {
			continue
		}
		b, _ := via.Params.Get("branch")
		if !strings.HasPrefix(b, branchPrefix) {
			continue
		}
		if want == "" {
			want = branchPrefix + loopHash(req) + "."
		}
		if strings.HasPrefix(b, want) {
			return true
		}
	}
	return false
}

// branchPrefix marks the Via branches sori writes: magic cookie + "sR".
const branchPrefix = sip.RFC3261BranchMagicCookie + "sR"

// loopHash is RFC 3261 §16.6 step 8's hash of what a loop leaves unchanged
// (the top Via is left out: on a loop it is the previous hop's).
func loopHash(req *sip.Request) string {
	h := fnv.New64a()
	w := func(s string) { _, _ = h.Write([]byte(s)); _, _ = h.Write([]byte{0}) }
	w(req.Recipient.String())
	if f := req.From(); f != nil {
		w(f.Params.GetOr("tag", ""))
	}
	if t := req.To(); t != nil {
		w(t.Params.GetOr("tag", ""))
	}
	if c := req.CallID(); c != nil {
		w(c.Value())
	}
	if c := req.CSeq(); c != nil {
		w(strconv.FormatUint(uint64(c.SeqNo), 10))
	}
	for _, hd := range chain.Headers(req, "Proxy-Require") {
		w(hd.Value())
	}
	return strconv.FormatUint(h.Sum64(), 36)
}
