package proxy

import (
	"context"

	"github.com/emiago/sipgo/sip"
)

// Offers per branch. A new call's SDP offer is anchored once before the
// fork (proxy.go offer), for its first target's encryption
// (calleeEncryption); a user's other contacts may speak something else: a
// browser over WebSocket only WebRTC, a phone never it. So a branch whose
// target's encryption (targetEncryption) differs from that offer's gets
// an offer of its own, made from the caller's SDP as it came and naming
// the branch's own Via branch, which gives it its own leg on the anchor
// (media/anchor branch.go, rtpengine's via-branch). Branches wanting the
// call's offer share its leg, as every branch did before.
//
// Each branch's SDP answers name its offer's via-branch, so the anchor
// applies them to that branch's offer. Once one branch answers with a
// 2xx, the anchor's legs of the others are deleted by via-branch
// (dropLostBranches): their ports are free while the call goes on, not
// only when it ends.

// branchOffer gives branch b's request req, to target t, an SDP offer of
// its own when t wants other than the call's; it notes which offer the
// branch got. An error: the branch is not sent.
func (f *fork) branchOffer(b *branch, req *sip.Request, t target) error {
	if f.call == nil || !f.anchored || f.offerSDP == nil {
		return nil // not a new call's anchored offer: nothing per branch
	}
	enc := f.p.targetEncryption(t)
	if enc == f.offerEnc {
		b.media, b.enc = f.offerBranch, enc
		f.noteMediaBranch(f.offerBranch)
		return nil
	}
	req.SetBody(f.offerSDP) // the caller's own SDP, not the call's offer's
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	if _, _, err := f.p.cfg.Media.Offer(ctx, req, f.currentAnchor(), enc); err != nil {
		return err
	}
	b.media, b.enc = viaBranch(req), enc
	f.noteMediaBranch(b.media)
	return nil
}

func (f *fork) noteMediaBranch(v string) {
	if v == "" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.mediaBranches {
		if o == v {
			return
		}
	}
	f.mediaBranches = append(f.mediaBranches, v)
}

// dropLostBranches deletes the anchor's legs of the branches that lost to
// winner's 2xx (its answer already taken), and notes the encryption its
// callee got for a failover; f.mu held.
func (f *fork) dropLostBranches(winner *branch) {
	if winner.media == "" {
		return
	}
	if f.call != nil && winner.enc != f.offerEnc {
		f.call.Offered(winner.enc)
	}
	var lost []string
	for _, v := range f.mediaBranches {
		if v != winner.media {
			lost = append(lost, v)
		}
	}
	if len(lost) == 0 {
		return
	}
	on, callID, fromTag := f.anchor, f.in.CallID().Value(), f.in.From().Params.GetOr("tag", "")
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		defer cancel()
		for _, v := range lost {
			if err := f.p.cfg.Media.DeleteBranch(ctx, on, callID, fromTag, v); err != nil {
				// The leg stays until the call's delete.
				f.p.log.Info("lost branch's media not deleted", "call_id", callID, "via_branch", v, "error", err)
			}
		}
	}()
}

// viaBranch is the branch of req's top Via ("": none).
func viaBranch(req *sip.Request) string {
	if v := req.Via(); v != nil {
		return v.Params.GetOr("branch", "")
	}
	return ""
}
