package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sori-voice/sori/media/anchor"
	"github.com/sori-voice/sori/media/anchorstate"
	"github.com/sori-voice/sori/media/dtlssrtp"
	"github.com/sori-voice/sori/media/ports"
	"github.com/sori-voice/sori/registrar/store/redisstore"
)

// keptState is -redis: the anchor's calls in Redis.
type keptState struct {
	rs     *redisstore.Store
	store  *anchorstate.Store
	keeper *anchorstate.Keeper
}

// redisTimeout bounds each Redis command: a slow Redis delays a delete's
// reply by this much at most, never the media.
const redisTimeout = time.Second

// portRetry is how long a kept call's port that is taken is tried again.
const portRetry = time.Second

func openKept(o options, log *slog.Logger) (*keptState, error) {
	// The URL forms and client settings of sori's own store.
	rs, err := redisstore.Open(o.redis, redisstore.Options{Timeout: redisTimeout})
	if err != nil {
		return nil, fmt.Errorf("-redis: %w", err)
	}
	// A key outlives the media timeout by two writes: a call whose anchor
	// is gone for longer would have timed out anyway.
	ttl := time.Hour
	if o.mediaTimeout > 0 {
		ttl = o.mediaTimeout + 2*o.redisEvery
	}
	st, err := anchorstate.NewStore(rs.Client(), anchorstate.Options{ID: o.redisID, TTL: ttl})
	if err != nil {
		_ = rs.Close()
		return nil, fmt.Errorf("-redis: %w", err)
	}
	return &keptState{rs: rs, store: st, keeper: anchorstate.NewKeeper(st, log, redisTimeout)}, nil
}

// restore loads the kept calls into mgr; the ones that cannot be bound
// again are dropped from Redis. Redis being away is logged, not fatal: the
// anchor serves new calls and keeps them from now on.
func (k *keptState) restore(ctx context.Context, mgr *anchor.Manager, log *slog.Logger) {
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	calls, bad, err := k.store.Load(lctx)
	if err != nil {
		log.Error("kept calls not restored", "error", err)
		return
	}
	for id, err := range bad {
		log.Warn("kept call unreadable, dropped", "call_id", id, "error", err)
	}
	n, dropped := mgr.Restore(calls)
	// The sockets of a killed anchor's io_uring are released by the kernel
	// some milliseconds after the process is gone: a port still taken is
	// tried again for a while before its call is dropped. The calls
	// restored already relay meanwhile; no command is taken yet, so no new
	// call can take the port.
	for deadline := time.Now().Add(portRetry); len(dropped) > 0 && time.Now().Before(deadline); {
		var again []anchorstate.Call
		for _, c := range calls {
			if err, ok := dropped[c.ID]; ok && errors.Is(err, ports.ErrTaken) {
				again = append(again, c)
			}
		}
		if len(again) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		more, still := mgr.Restore(again)
		n += more
		for _, c := range again {
			delete(dropped, c.ID)
			if err, ok := still[c.ID]; ok {
				dropped[c.ID] = err
			}
		}
	}
	var ids []string
	for id, err := range dropped {
		log.Warn("kept call not restored, dropped", "call_id", id, "error", err)
		ids = append(ids, id)
	}
	if err := k.store.Write(lctx, nil, ids); err != nil {
		log.Warn("dropped calls left in Redis until their TTL", "calls", len(ids), "error", err)
	}
	log.Info("kept calls restored", "calls", n, "dropped", len(dropped)+len(bad), "took", time.Since(start))
}

// loadCert is the DTLS certificate for new legs the previous process
// kept (nil: none, or unusable: a new one is made).
func (k *keptState) loadCert(ctx context.Context, log *slog.Logger) *dtlssrtp.Certificate {
	lctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	kc, ok, err := k.store.LoadCert(lctx)
	if err != nil {
		log.Warn("kept DTLS certificate not read: new WebRTC legs get a new one", "error", err)
		return nil
	}
	if !ok {
		return nil
	}
	c, err := dtlssrtp.ParseCertificatePEM([]byte(kc.Cert), []byte(kc.Key))
	if err != nil {
		log.Warn("kept DTLS certificate unreadable: new WebRTC legs get a new one", "error", err)
		return nil
	}
	log.Info("kept DTLS certificate read back: new WebRTC legs get it until it is due for renewal",
		"fingerprint", c.Fingerprint().String(), "not_after", c.NotAfter())
	return c
}

// keptCert is c as Redis keeps it.
func keptCert(c *dtlssrtp.Certificate) (anchorstate.Cert, error) {
	cert, key, err := c.PEM()
	if err != nil {
		return anchorstate.Cert{}, err
	}
	return anchorstate.Cert{Cert: string(cert), Key: string(key), NotAfter: c.NotAfter()}, nil
}

// saveCert keeps c, the certificate for new legs at start, before the
// first command; a failure is logged and left to the keeper's next write.
func (k *keptState) saveCert(ctx context.Context, c *dtlssrtp.Certificate, log *slog.Logger) {
	kc, err := keptCert(c)
	if err != nil {
		log.Warn("DTLS certificate not kept", "error", err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, redisTimeout)
	err = k.store.SaveCert(wctx, kc)
	cancel()
	if err != nil {
		log.Warn("DTLS certificate not kept in Redis: tried again with the next write; a restart meanwhile makes a new one for new legs", "error", err)
		k.keeper.SaveCert(kc)
	}
}

// certRenewed is anchor.Config.CertRenewed: a renewal is kept through the
// keeper, never waited for.
func (k *keptState) certRenewed(log *slog.Logger) func(*dtlssrtp.Certificate) {
	return func(c *dtlssrtp.Certificate) {
		kc, err := keptCert(c)
		if err != nil {
			log.Warn("renewed DTLS certificate not kept", "error", err)
			return
		}
		k.keeper.SaveCert(kc)
	}
}

func (k *keptState) close() { _ = k.rs.Close() }
