package weather

import (
	"context"
	"sync"
	"time"

	"github.com/sori-voice/sori/sip/calls"
)

// CellStore keeps cells for a Buffer: a shared store (redisweather) that
// takes a node's cells in batches.
type CellStore interface {
	// AddCells adds each observation's counters to its cell. On an error
	// it returns what it did not write or cannot tell it wrote, to be
	// added again, with more merged in or not (nil: it wrote everything);
	// a store that can tell takes off, then, what had been written.
	AddCells(ctx context.Context, obs []Observation) (unwritten []Observation, err error)
	// Cells returns the stored cells of q's hours that q wants (q has
	// passed Check).
	Cells(ctx context.Context, q Query) ([]Observation, error)
	// Clear forgets every cell.
	Clear(ctx context.Context) error
}

// DefaultFlushEvery is how often a Buffer's cells go to the store unless
// configured.
const DefaultFlushEvery = 5 * time.Second

// DefaultMaxCells bounds the cells a Buffer holds unless configured.
const DefaultMaxCells = 100_000

// DefaultBatch is the cells a Buffer gives its store at once unless
// configured: a flush in steady state is one batch.
const DefaultBatch = 2000

// BufferOptions configure a Buffer.
type BufferOptions struct {
	Store CellStore
	// Retention: records of older hours are ignored and cells of hours
	// that become older are not written. 0 is DefaultRetention.
	Retention time.Duration
	// MaxCells bounds the cells held (about 700 bytes each). A record that
	// would add a cell past it is dropped whole; the cells held still take
	// records. 0 is DefaultMaxCells.
	MaxCells int
	// Batch bounds the cells of one AddCells: a flush of more (after a
	// long outage) is several, in turn. 0 is DefaultBatch.
	Batch int
	Now   func() time.Time // default time.Now
	// Dropped is called with each record dropped at MaxCells.
	Dropped func(r calls.Record)
	// Flushed is called after each flush with its error (nil when it
	// succeeded) and the cells then held.
	Flushed func(err error, held int)
}

// Buffer is an Aggregator that counts records in memory and adds its cells
// to a CellStore in one batch per Flush: the store's cost is per cell and
// flush, not per call. A failed flush's cells are merged back and go with
// the next. Queries read the store and add the cells not yet flushed, so a
// node sees its own records at once (another node's, after its next flush).
type Buffer struct {
	o BufferOptions

	flushMu sync.Mutex // one flush at a time; queries wait for it

	mu      sync.Mutex
	pending map[Cell]*Counters
}

// NewBuffer returns an empty Buffer over o.Store.
func NewBuffer(o BufferOptions) *Buffer {
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.MaxCells <= 0 {
		o.MaxCells = DefaultMaxCells
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Buffer{o: o, pending: map[Cell]*Counters{}}
}

// Add implements Aggregator: the record's cells merged into those held.
// It does not block on the store.
func (b *Buffer) Add(_ context.Context, r calls.Record) error {
	obs := Observe(r)
	if len(obs) == 0 {
		return nil
	}
	if obs[0].Cell.Hour.Before(OldestRetained(b.o.Now(), b.o.Retention)) {
		return nil // every observation of a record has its hour
	}
	b.mu.Lock()
	fresh := 0
	for i := range obs {
		if b.pending[obs[i].Cell] == nil {
			fresh++
		}
	}
	if fresh > 0 && len(b.pending)+fresh > b.o.MaxCells {
		b.mu.Unlock()
		if b.o.Dropped != nil {
			b.o.Dropped(r)
		}
		return nil
	}
	b.merge(obs)
	b.mu.Unlock()
	return nil
}

// merge adds obs to the cells held; b.mu is held.
func (b *Buffer) merge(obs []Observation) {
	for i := range obs {
		o := &obs[i]
		c := b.pending[o.Cell]
		if c == nil {
			c = new(Counters)
			b.pending[o.Cell] = c
		}
		c.Add(&o.Counters)
	}
}

// Held is the number of cells not yet flushed.
func (b *Buffer) Held() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// Flush adds the cells held to the store, in one AddCells per Batch
// cells, and forgets them; what the store did not take, and the batches
// after a failed one, are merged back (with what came in meanwhile) for
// the next flush. Cells of hours past the retention are dropped.
func (b *Buffer) Flush(ctx context.Context) error {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	held := b.pending
	b.pending = make(map[Cell]*Counters, len(held))
	b.mu.Unlock()
	var err error
	if len(held) > 0 {
		oldest := OldestRetained(b.o.Now(), b.o.Retention)
		obs := make([]Observation, 0, len(held))
		for cell, c := range held {
			if !cell.Hour.Before(oldest) {
				obs = append(obs, Observation{Cell: cell, Counters: *c})
			}
		}
		var unwritten []Observation
		for start := 0; start < len(obs); start += b.o.Batch {
			end := min(start+b.o.Batch, len(obs))
			unwritten, err = b.o.Store.AddCells(ctx, obs[start:end])
			if err != nil {
				unwritten = append(unwritten, obs[end:]...)
				break
			}
		}
		if len(unwritten) > 0 {
			b.mu.Lock()
			b.merge(unwritten) // accepted records: past MaxCells too
			b.mu.Unlock()
		}
	}
	if b.o.Flushed != nil {
		b.o.Flushed(err, b.Held())
	}
	return err
}

// Run flushes at every tick until ctx ends, then once more and returns:
// a clean stop loses no record added before ctx ended. Each flush has
// timeout to finish.
func (b *Buffer) Run(ctx context.Context, ticks <-chan time.Time, timeout time.Duration) {
	flush := func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		_ = b.Flush(fctx)
		cancel()
	}
	for {
		select {
		case <-ticks:
			flush()
		case <-ctx.Done():
			flush()
			return
		}
	}
}

// Query implements Aggregator: the store's cells of q's hours and those
// held, grouped. It waits for a flush under way, so a cell is never
// counted both held and stored.
func (b *Buffer) Query(ctx context.Context, q Query) ([]Row, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	obs, err := b.o.Store.Cells(ctx, q)
	if err != nil {
		return nil, err
	}
	hours := map[time.Time]bool{}
	for _, h := range q.Hours(b.o.Now(), b.o.Retention) {
		hours[h] = true
	}
	b.mu.Lock()
	for cell, c := range b.pending {
		if hours[cell.Hour] && q.Wants(cell.Tag) {
			obs = append(obs, Observation{Cell: cell, Counters: *c})
		}
	}
	b.mu.Unlock()
	return Group(q, obs), nil
}

// Clear implements Clearer: the cells held and the store's.
func (b *Buffer) Clear(ctx context.Context) error {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	clear(b.pending)
	b.mu.Unlock()
	return b.o.Store.Clear(ctx)
}
