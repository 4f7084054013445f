package anchorstate

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Keeper writes the anchor's snapshots to a Store from one goroutine
// (Run): a call saved many times before a write is written once, the
// latest, and a delete after a save wins. The anchor never waits for
// Redis, except for a delete, whose reply says the call is gone.
type Keeper struct {
	store   *Store
	log     *slog.Logger
	timeout time.Duration

	mu      sync.Mutex
	pending map[string]*Call // nil value: delete
	cert    *Cert            // the certificate for new legs, to be written
	batch   *batch           // what the next write completes
	wake    chan struct{}
}

type batch struct {
	done chan struct{}
	err  error
}

// NewKeeper writes through s; each write gets timeout.
func NewKeeper(s *Store, log *slog.Logger, timeout time.Duration) *Keeper {
	return &Keeper{store: s, log: log, timeout: timeout, pending: map[string]*Call{},
		batch: &batch{done: make(chan struct{})}, wake: make(chan struct{}, 1)}
}

// Save queues a snapshot of a call.
func (k *Keeper) Save(c Call) {
	k.mu.Lock()
	k.pending[c.ID] = &c
	k.mu.Unlock()
	k.poke()
}

// SaveCert queues the anchor's certificate for new legs (a renewal); one
// that fails to be written is tried again with the next write, unless a
// newer one came meanwhile.
func (k *Keeper) SaveCert(c Cert) {
	k.mu.Lock()
	k.cert = &c
	k.mu.Unlock()
	k.poke()
}

// Delete queues the call's removal; wait returns once it is written (or
// ctx ends).
func (k *Keeper) Delete(callID string) (wait func(context.Context) error) {
	k.mu.Lock()
	k.pending[callID] = nil
	b := k.batch
	k.mu.Unlock()
	k.poke()
	return func(ctx context.Context) error {
		select {
		case <-b.done:
			return b.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (k *Keeper) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// Run writes what is queued until ctx ends, then what is left.
func (k *Keeper) Run(ctx context.Context) {
	for {
		select {
		case <-k.wake:
			k.flush(ctx)
		case <-ctx.Done():
			// A last write on the way out: a SIGTERM'd anchor's calls stay
			// kept for the next start, as they are now.
			k.flush(ctx)
			return
		}
	}
}

func (k *Keeper) flush(ctx context.Context) {
	k.mu.Lock()
	pending, b, cert := k.pending, k.batch, k.cert
	k.pending, k.batch, k.cert = map[string]*Call{}, &batch{done: make(chan struct{})}, nil
	k.mu.Unlock()
	var save []Call
	var drop []string
	for id, c := range pending {
		if c == nil {
			drop = append(drop, id)
		} else {
			save = append(save, *c)
		}
	}
	// Bounded by the timeout, not by ctx: a write under way when the
	// anchor stops is finished, not lost.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.timeout)
	b.err = k.store.Write(wctx, save, drop)
	if cert != nil {
		if err := k.store.SaveCert(wctx, *cert); err != nil {
			k.log.Warn("DTLS certificate not written to Redis: tried again with the next write; a restart meanwhile makes a new one for new legs",
				"error", err)
			k.mu.Lock()
			if k.cert == nil && time.Now().Before(cert.NotAfter) {
				k.cert = cert
			}
			k.mu.Unlock()
		}
	}
	cancel()
	if b.err != nil {
		// The next periodic snapshot writes the saves again; a lost delete
		// leaves the key to its TTL.
		k.log.Warn("anchor state not written to Redis", "saves", len(save), "deletes", len(drop), "error", b.err)
	}
	close(b.done)
}
