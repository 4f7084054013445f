package proxy

import (
	"context"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sori-voice/sori/sip/chain"
	"github.com/sori-voice/sori/sip/local"
	"github.com/sori-voice/sori/sip/uac"
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

// Handles implements chain.Plugin: requests sori forwards (not ACK,
// REGISTER, or one addressed to sori itself, which are answered here).
func (h Hops) Handles(r *chain.Request) bool {
	return !r.IsAck() && r.Method != sip.REGISTER && !(h.Self.AddressedToServer(r.Recipient) && r.Route() == nil)
}

// Serve implements chain.Plugin.
func (h Hops) Serve(ctx context.Context, w chain.ResponseWriter, r *chain.Request, next chain.Handler) chain.Result {
	if mf := r.MaxForwards(); mf != nil && mf.Val() == 0 {
		return chain.Refuse(483, "Too Many Hops")
	}
	if h.looped(r.Request) {
		return chain.Refuse(482, "Loop Detected")
	}
	return next.ServeSIP(ctx, w, r)
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
const branchPrefix = uac.BranchPrefix

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
