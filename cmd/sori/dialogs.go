package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/sip/call"
)

// dialogOwner is the name this node saves its calls under in the dialog
// store, and adopts them by when it starts again: sip.node_id with
// sip.nodes, else the host name (one node: a restart keeps it). Empty
// when there is none: calls are still saved, but not adopted at start.
func dialogOwner(cfg *config.Config, log *slog.Logger) string {
	if cfg.SIP.NodeID != "" {
		return cfg.SIP.NodeID
	}
	host, err := os.Hostname()
	if err != nil && cfg.SIP.KeepDialogs {
		log.Warn("no host name: the calls kept in Redis are not adopted when this node starts again", "error", err)
	}
	return host
}

// adoptRetry is how long a node waits before it tries again to adopt its
// saved calls, when the store could not be read at start.
const adoptRetry = 5 * time.Second

// adoptCalls has the table adopt the calls this node saved before it
// started again (call.Table.Adopt): once, bounded by timeout, and while
// that fails (the store not reachable yet), again in the background until
// it works or ctx ends.
func adoptCalls(ctx context.Context, table *call.Table, owner string, timeout time.Duration, log *slog.Logger) {
	if owner == "" {
		return
	}
	try := func() bool {
		actx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if _, err := table.Adopt(actx, owner); err != nil {
			log.Warn("saved calls not adopted yet: trying again", "in", adoptRetry, "error", err)
			return false
		}
		return true
	}
	if try() {
		return
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
