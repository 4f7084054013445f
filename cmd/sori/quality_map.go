package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sori-voice/sori/config"
	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/registrar/store/redisstore"
	"github.com/sori-voice/sori/sip/auth"
	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/weather"
	"github.com/sori-voice/sori/sip/weather/memweather"
	"github.com/sori-voice/sori/sip/weather/page"
	"github.com/sori-voice/sori/sip/weather/redisweather"
	"github.com/sori-voice/sori/sip/weather/worst"
)

// qualityMap is the loss weather map's parts: the aggregates every call
// record adds to (in Redis with the Redis store, so every node adds to the
// same hours; in the process otherwise), this node's worst recent calls
// and its recent records, and the pages and API that read them.
type qualityMap struct {
	sinks   []calls.Sink
	closers []func()
	pages   *page.Handlers
	recent  *recentRecords
}

func newQualityMap(cfg *config.Config, st store.Store, log *slog.Logger, reg prometheus.Registerer) *qualityMap {
	q := &qualityMap{recent: newRecentRecords(10000)}
	var agg weather.Aggregator
	if rs, ok := st.(*redisstore.Store); ok {
		b := newQualityBuffer(redisweather.New(rs.Client(), redisweather.Options{Retention: cfg.Quality.Retention.D()}),
			cfg.Quality.Retention.D(), log.With("component", "quality"), reg)
		agg = b
		// Add only merges in memory: on the call's path, no queue.
		q.sinks = append(q.sinks, weather.Sink(b))
		ctx, cancel := context.WithCancel(context.Background())
		ticker := time.NewTicker(cfg.Quality.FlushEvery.D())
		done := make(chan struct{})
		go func() {
			defer close(done)
			b.Run(ctx, ticker.C, 5*time.Second)
		}()
		// After the last record (the Recorder's sinks close after the calls
		// end), before the store: the last flush.
		q.closers = append(q.closers, func() {
			ticker.Stop()
			cancel()
			<-done
		})
	} else {
		agg = memweather.New(memweather.Options{Retention: cfg.Quality.Retention.D()})
		q.sinks = append(q.sinks, weather.Sink(agg))
	}
	w := worst.New(50, 24*time.Hour, nil)
	q.sinks = append(q.sinks, w, q.recent)
	var tagKeys []string
	for _, u := range cfg.Users {
		for k := range u.Tags {
			if !slices.Contains(tagKeys, k) {
				tagKeys = append(tagKeys, k)
			}
		}
	}
	slices.Sort(tagKeys)
	q.pages = page.New(page.Options{Agg: agg, Worst: w, MinCalls: cfg.Quality.MinCalls, Public: cfg.Quality.Public,
		TagKeys: tagKeys, Log: log.With("component", "quality")})
	return q
}

// newQualityBuffer is the node's cells in memory, flushed to Redis, with
// its metrics and logs: a failing flush is logged when Redis starts and
// stops failing (not at every attempt), and records dropped when the cells
// held reach weather.DefaultMaxCells are counted, the first of a run logged.
func newQualityBuffer(store weather.CellStore, retention time.Duration, log *slog.Logger, reg prometheus.Registerer) *weather.Buffer {
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sori_quality_dropped_total",
		Help: "Call records the quality map did not count: the cells held for Redis were at their cap.",
	})
	failures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sori_quality_flush_failures_total",
		Help: "Flushes of the quality map's cells to Redis that failed (their cells are kept for the next).",
	})
	held := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sori_quality_held_cells",
		Help: "Quality map cells counted on this node and not yet in Redis.",
	})
	reg.MustRegister(dropped, failures, held)
	var mu sync.Mutex
	failing, dropping := false, false
	return weather.NewBuffer(weather.BufferOptions{
		Store: store, Retention: retention,
		Dropped: func(r calls.Record) {
			dropped.Inc()
			mu.Lock()
			first := !dropping
			dropping = true
			mu.Unlock()
			if first {
				log.Error("quality map: cells held for Redis at their cap; records with new cells are dropped until a flush succeeds",
					"cap", weather.DefaultMaxCells, "call_id", r.CallID)
			}
		},
		Flushed: func(err error, n int) {
			held.Set(float64(n))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failures.Inc()
				if !failing {
					log.Warn("quality map: flush to Redis failed; its cells are kept for the next", "error", err, "held_cells", n)
				}
				failing = true
			case failing:
				log.Info("quality map: flush to Redis succeeded again", "held_cells", n)
				failing, dropping = false, false
			}
		},
	})
}

// routes serves the map, its API and this node's recent records.
func (q *qualityMap) routes(mux *http.ServeMux) {
	q.pages.Register(mux)
	mux.HandleFunc("GET /api/calls/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec, ok := q.recent.get(r.PathValue("id"))
		if !ok {
			http.Error(w, "no recent record of that call on this node", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rec)
	})
}

// recentRecords keeps this node's last records by Call-ID (a ring), for
// the operator page's links from its worst calls.
type recentRecords struct {
	mu   sync.Mutex
	ring []string
	next int
	m    map[string]calls.Record
}

func newRecentRecords(n int) *recentRecords {
	return &recentRecords{ring: make([]string, n), m: make(map[string]calls.Record, n)}
}

// Write implements calls.Sink.
func (r *recentRecords) Write(_ context.Context, rec calls.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.ring[r.next]; old != "" {
		delete(r.m, old)
	}
	r.ring[r.next] = rec.CallID
	r.m[rec.CallID] = rec
	r.next = (r.next + 1) % len(r.ring)
	return nil
}

func (r *recentRecords) get(id string) (calls.Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.m[id]
	return rec, ok
}

// userTags gives the call records each side's user tags (sip/call.Tagger).
type userTags struct{ dir auth.Directory }

func (u userTags) UserTags(ctx context.Context, name, number string) map[string]string {
	if name != "" {
		if s, err := u.dir.Subscriber(ctx, name); err == nil {
			return s.Tags
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil
		}
	}
	if number != "" {
		if s, err := u.dir.SubscriberByNumber(ctx, number); err == nil {
			return s.Tags
		}
	}
	return nil
}
