package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/sip/call"
	"github.com/sori-voice/sori/sip/nodes"
)

// dialogOwner is the name this node saves its calls under in the dialog
// store, and adopts them by when it starts again: sip.node_id with
// sip.nodes, else the host name and this node's first sip.listen address
// ("host/udp:192.0.2.10:5060"): unique among the sori processes of one
// host sharing a Redis (no two listen on one address), yet the same when
// the process starts again on its configuration. Empty when there is no
// host name: calls are still saved, but not adopted at start.
func dialogOwner(cfg *config.Config, log *slog.Logger) string {
	if cfg.SIP.NodeID != "" {
		return cfg.SIP.NodeID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		if cfg.SIP.KeepDialogs {
			log.Warn("no host name: the calls kept in Redis are not adopted when this node starts again", "error", err)
		}
		return ""
	}
	if ls := cfg.Listeners(); len(ls) > 0 {
		return host + "/" + ls[0].String()
	}
	return host
}

// legacyOwner is the name a single node saved its calls under before
// dialogOwner added its listen address (the host name alone): adopted
// too when this node starts, so that an upgrade loses no call. Empty
// when it is owner's.
func legacyOwner(cfg *config.Config, owner string) string {
	host, err := os.Hostname()
	if cfg.SIP.NodeID != "" || err != nil || host == owner {
		return ""
	}
	return host
}

// adoptRetry is how long a node waits before it tries again to adopt its
// saved calls, when the store could not be read at start (or another
// node was taking them: see adoptGone).
const adoptRetry = 5 * time.Second

// adoptCalls has the table adopt the calls this node saved before it
// started again (call.Table.Adopt) under each of owners: once, bounded by
// timeout, and while that fails (the store not reachable yet), again in
// the background until it works or ctx ends.
func adoptCalls(ctx context.Context, table *call.Table, owners []string, timeout time.Duration, log *slog.Logger) {
	for _, owner := range owners {
		if owner == "" {
			continue
		}
		try := func() bool {
			actx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if _, err := table.Adopt(actx, owner); err != nil {
				log.Warn("saved calls not adopted yet: trying again", "node", owner, "in", adoptRetry, "error", err)
				return false
			}
			return true
		}
		if try() {
			continue
		}
		go func() {
			t := time.NewTicker(adoptRetry)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if try() {
						return
					}
				}
			}
		}()
	}
}

// goneAdoptTimeout bounds adopting the calls of one node gone for good:
// a node may leave thousands; it stays under the lease a taker holds on
// them (sip/call/redisdialogs, 30 s), so that no other taker starts on
// them meanwhile.
const goneAdoptTimeout = 20 * time.Second

// adoptGone has this node adopt the calls of the nodes gone for good
// (nodes.GoneAfter without a heartbeat: crashed, or stopped, and not
// started again), looking every BeatTTL until ctx ends. Every live node
// looks; the one whose Take gets a gone node's lease first (in Redis)
// takes all its calls into its own index, loads them and reclaims them on
// their anchors (call.Table.Adopt), and the others find them taken. A
// gone node is looked at again only once it was back in between; timeout
// bounds reading which nodes are gone.
func adoptGone(ctx context.Context, table *call.Table, others *nodes.Set, timeout time.Duration, log *slog.Logger) {
	t := time.NewTicker(nodes.BeatTTL)
	defer t.Stop()
	taken := map[string]bool{} // gone nodes whose calls were taken, by this node or another
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		gctx, cancel := context.WithTimeout(ctx, timeout)
		ids, err := others.Gone(gctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				log.Warn("nodes gone for good not read: their calls wait", "error", err)
			}
			failing = true
			continue
		case err != nil:
			return
		}
		failing = false
		still := make(map[string]bool, len(ids))
		for _, id := range ids {
			still[id] = true
			if taken[id] {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, goneAdoptTimeout)
			n, err := table.Adopt(actx, id)
			cancel()
			switch {
			case errors.Is(err, call.ErrTaking):
				log.Debug("calls of a node gone for good being adopted by another node", "node", id, "error", err)
			case err != nil:
				log.Warn("calls of a node gone for good not adopted yet: trying again", "node", id, "error", err)
			default:
				taken[id] = true
				if n > 0 {
					log.Info("calls of a node gone for good adopted", "node", id, "calls", n)
				}
			}
		}
		for id := range taken {
			if !still[id] {
				delete(taken, id) // back since: its calls are its own again
			}
		}
	}
}
