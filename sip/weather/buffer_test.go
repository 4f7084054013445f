package weather_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/weather"
	"github.com/sori-voice/sori/sip/weather/memweather"
	"github.com/sori-voice/sori/sip/weather/weathertest"
)

// fakeStore is a CellStore in memory that fails on demand: while down,
// every AddCells fails; failCell makes the cells it names fail alone.
type fakeStore struct {
	mu       sync.Mutex
	cells    map[weather.Cell]weather.Counters
	writes   int   // AddCells calls
	sizes    []int // their observations
	down     bool
	downAt   int // AddCells fails from this call on (0: never)
	failCell func(weather.Cell) bool
}

func newFakeStore() *fakeStore { return &fakeStore{cells: map[weather.Cell]weather.Counters{}} }

var errDown = errors.New("store down")

func (f *fakeStore) AddCells(_ context.Context, obs []weather.Observation) ([]weather.Observation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	f.sizes = append(f.sizes, len(obs))
	if f.down || (f.downAt > 0 && f.writes >= f.downAt) {
		return obs, errDown
	}
	var unwritten []weather.Observation
	for _, o := range obs {
		if f.failCell != nil && f.failCell(o.Cell) {
			unwritten = append(unwritten, o)
			continue
		}
		c := f.cells[o.Cell]
		c.Add(&o.Counters)
		f.cells[o.Cell] = c
	}
	if unwritten != nil {
		return unwritten, errDown
	}
	return nil, nil
}

func (f *fakeStore) Cells(_ context.Context, q weather.Query) ([]weather.Observation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	var out []weather.Observation
	for cell, c := range f.cells {
		if q.Wants(cell.Tag) {
			out = append(out, weather.Observation{Cell: cell, Counters: c})
		}
	}
	return out, nil
}

func (f *fakeStore) Clear(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.cells)
	return nil
}

// total is the store's count of call sides over every cell of tag "".
func (f *fakeStore) total() (sides int64, cells int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for cell, c := range f.cells {
		if cell.Tag == "" {
			sides += c.Calls
		}
	}
	return sides, len(f.cells)
}

func (f *fakeStore) set(fn func(f *fakeStore)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// TestBufferContract: a Buffer over a store passes the Aggregator contract.
func TestBufferContract(t *testing.T) {
	weathertest.Run(t, func(t *testing.T, now func() time.Time, retention time.Duration) weather.Aggregator {
		return weather.NewBuffer(weather.BufferOptions{Store: newFakeStore(), Now: now, Retention: retention})
	})
}

type env struct {
	t     *testing.T
	base  time.Time
	clock *weathertest.Clock
	store *fakeStore
	buf   *weather.Buffer
	drops []string
	flush []error
}

func (e *env) add(recs ...calls.Record) {
	e.t.Helper()
	for _, r := range recs {
		if err := e.buf.Add(context.Background(), r); err != nil {
			e.t.Fatal(err)
		}
	}
}

// rows is the buffer's answer by network and hop over the six hours.
func (e *env) rows() []weather.Row {
	e.t.Helper()
	rows, err := e.buf.Query(context.Background(), weather.Query{From: e.base, To: e.base.Add(6 * time.Hour), By: []string{"network", "hop", "tag:plan"}})
	if err != nil {
		e.t.Fatal(err)
	}
	return rows
}

// want is memweather's answer to the same records.
func want(t *testing.T, clock *weathertest.Clock, base time.Time, recs []calls.Record) []weather.Row {
	t.Helper()
	m := memweather.New(memweather.Options{Now: clock.Now})
	for _, r := range recs {
		if err := m.Add(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := m.Query(context.Background(), weather.Query{From: base, To: base.Add(6 * time.Hour), By: []string{"network", "hop", "tag:plan"}})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func (e *env) sides() int64 {
	var n int64
	for _, r := range e.rows() {
		if r.Dims["tag:plan"] == "" {
			n += r.Calls
		}
	}
	return n
}

func TestBuffer(t *testing.T) {
	side := func(plan string) *calls.MediaQuality {
		return weathertest.Side("carrier-a", "lte", 1000, 20, 12, 4.1, map[string]string{"plan": plan})
	}
	tests := []struct {
		name     string
		maxCells int
		run      func(e *env)
	}{
		{"records of one cell merge into one", 0, func(e *env) {
			for i := range 100 {
				e.add(weathertest.Record("m", e.base.Add(time.Duration(i)*time.Second), side("a"), nil))
			}
			if n := e.buf.Held(); n != 2 { // the total and plan=a
				e.t.Fatalf("%d cells held, want 2", n)
			}
			if err := e.buf.Flush(context.Background()); err != nil {
				e.t.Fatal(err)
			}
			sides, cells := e.store.total()
			if sides != 100 || cells != 2 || e.store.writes != 1 || e.buf.Held() != 0 {
				e.t.Fatalf("store: %d sides in %d cells by %d writes; %d held", sides, cells, e.store.writes, e.buf.Held())
			}
		}},
		{"queries add held and stored cells, identically to counting at once", 0, func(e *env) {
			recs := weathertest.Records(3, 300, e.base)
			e.add(recs[:100]...)
			if err := e.buf.Flush(context.Background()); err != nil {
				e.t.Fatal(err)
			}
			e.add(recs[100:200]...)
			if err := e.buf.Flush(context.Background()); err != nil {
				e.t.Fatal(err)
			}
			e.add(recs[200:]...)
			if got, w := e.rows(), want(e.t, e.clock, e.base, recs); !reflect.DeepEqual(got, w) {
				e.t.Fatalf("got\n%+v\nwant\n%+v", got, w)
			}
		}},
		{"a failed flush is retried with the next, merged", 0, func(e *env) {
			e.add(weathertest.Record("a", e.base, side("a"), nil))
			e.store.set(func(f *fakeStore) { f.down = true })
			if err := e.buf.Flush(context.Background()); !errors.Is(err, errDown) {
				e.t.Fatalf("flush to a down store: %v", err)
			}
			e.add(weathertest.Record("b", e.base, side("a"), nil))
			if n := e.buf.Held(); n != 2 {
				e.t.Fatalf("%d cells held after the failure, want 2 (merged)", n)
			}
			e.store.set(func(f *fakeStore) { f.down = false })
			if err := e.buf.Flush(context.Background()); err != nil {
				e.t.Fatal(err)
			}
			if sides, _ := e.store.total(); sides != 2 || e.buf.Held() != 0 {
				e.t.Fatalf("after recovery: %d sides stored, %d cells held", sides, e.buf.Held())
			}
			if len(e.flush) != 2 || e.flush[0] == nil || e.flush[1] != nil {
				e.t.Fatalf("Flushed saw %v", e.flush)
			}
		}},
		{"only what the store did not write is retried", 0, func(e *env) {
			e.add(weathertest.Record("a", e.base, side("a"), nil), weathertest.Record("b", e.base, side("b"), nil))
			e.store.set(func(f *fakeStore) { f.failCell = func(c weather.Cell) bool { return c.Tag == "plan=b" } })
			if err := e.buf.Flush(context.Background()); err == nil {
				e.t.Fatal("a partial failure was not reported")
			}
			if n := e.buf.Held(); n != 1 {
				e.t.Fatalf("%d cells held, want plan=b's alone", n)
			}
			e.store.set(func(f *fakeStore) { f.failCell = nil })
			if err := e.buf.Flush(context.Background()); err != nil {
				e.t.Fatal(err)
			}
			if sides, cells := e.store.total(); sides != 2 || cells != 3 {
				e.t.Fatalf("%d sides in %d cells, want 2 in 3 (none twice)", sides, cells)
			}
		}},
		{"a store down keeps counting the cells held, and drops new cells past the cap", 3, func(e *env) {
			e.store.set(func(f *fakeStore) { f.down = true })
			e.add(weathertest.Record("a", e.base, side("a"), nil), weathertest.Record("b", e.base, side("b"), nil))
			for range 3 {
				if err := e.buf.Flush(context.Background()); err == nil {
					e.t.Fatal("flush to a down store succeeded")
				}
			}
			e.add(weathertest.Record("c", e.base, side("c"), nil)) // new cell: dropped
			e.add(weathertest.Record("d", e.base, side("a"), nil)) // cells held: counted
			if len(e.drops) != 1 || e.drops[0] != "c" || e.buf.Held() != 3 {
				e.t.Fatalf("dropped %v, %d cells held", e.drops, e.buf.Held())
			}
			e.store.set(func(f *fakeStore) { f.down = false })
			if err := e.buf.Flush(context.Background()); err != nil {
				e.t.Fatal(err)
			}
			if sides, _ := e.store.total(); sides != 3 {
				e.t.Fatalf("%d sides stored, want 3", sides)
			}
		}},
		{"a long backlog goes in batches; after a failed one the rest waits", 0, func(e *env) {
			for i := range 45 { // 46 cells: the total and a plan of each
				e.add(weathertest.Record("a", e.base, side(fmt.Sprint("p", i)), nil))
			}
			e.store.set(func(f *fakeStore) { f.downAt = 2 })
			if err := e.buf.Flush(context.Background()); err == nil {
				e.t.Fatal("a failed batch was not reported")
			}
			if _, cells := e.store.total(); cells != 20 || e.buf.Held() != 26 || !slices.Equal(e.store.sizes, []int{20, 20}) {
				e.t.Fatalf("%d cells stored by batches %v, %d held; want 20 by [20 20], 26", cells, e.store.sizes, e.buf.Held())
			}
			e.store.set(func(f *fakeStore) { f.downAt, f.sizes = 0, nil })
			if err := e.buf.Flush(context.Background()); err != nil {
				e.t.Fatal(err)
			}
			if sides, cells := e.store.total(); sides != 45 || cells != 46 || !slices.Equal(e.store.sizes, []int{20, 6}) {
				e.t.Fatalf("%d sides in %d cells by batches %v", sides, cells, e.store.sizes)
			}
		}},
		{"cells that age past the retention while held are not written", 0, func(e *env) {
			e.add(weathertest.Record("old", e.base, side("a"), nil))
			e.clock.Set(e.base.Add(30 * time.Hour)) // retention 24 h
			e.add(weathertest.Record("new", e.base.Add(29*time.Hour), side("a"), nil))
			if err := e.buf.Flush(context.Background()); err != nil {
				e.t.Fatal(err)
			}
			if sides, cells := e.store.total(); sides != 1 || cells != 2 {
				e.t.Fatalf("%d sides in %d cells, want the new record's alone", sides, cells)
			}
		}},
		{"ticks flush; a stop flushes what is left", 0, func(e *env) {
			ticks := make(chan time.Time)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { e.buf.Run(ctx, ticks, time.Second); close(done) }()
			e.add(weathertest.Record("a", e.base, side("a"), nil))
			ticks <- e.clock.Now() // received: the flush runs before the next receive
			ticks <- e.clock.Now()
			if sides, _ := e.store.total(); sides != 1 {
				e.t.Fatalf("%d sides stored after a tick", sides)
			}
			e.add(weathertest.Record("b", e.base, side("a"), nil))
			cancel()
			<-done
			if sides, _ := e.store.total(); sides != 2 || e.buf.Held() != 0 {
				e.t.Fatalf("after the stop: %d sides stored, %d cells held", sides, e.buf.Held())
			}
		}},
		{"clear forgets held and stored cells", 0, func(e *env) {
			e.add(weathertest.Record("a", e.base, side("a"), nil))
			if err := e.buf.Flush(context.Background()); err != nil {
				e.t.Fatal(err)
			}
			e.add(weathertest.Record("b", e.base, side("a"), nil))
			if err := e.buf.Clear(context.Background()); err != nil {
				e.t.Fatal(err)
			}
			if n := e.sides(); n != 0 {
				e.t.Fatalf("%d sides after clear", n)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := weathertest.Base()
			e := &env{t: t, base: base, clock: weathertest.NewClock(base.Add(6 * time.Hour)), store: newFakeStore()}
			e.buf = weather.NewBuffer(weather.BufferOptions{Store: e.store, Now: e.clock.Now, Retention: 24 * time.Hour, MaxCells: tt.maxCells, Batch: 20,
				Dropped: func(r calls.Record) { e.drops = append(e.drops, r.CallID) },
				Flushed: func(err error, _ int) { e.flush = append(e.flush, err) },
			})
			tt.run(e)
		})
	}
}
