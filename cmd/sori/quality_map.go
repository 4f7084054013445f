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
		agg = redisweather.New(rs.Client(), redisweather.Options{Retention: cfg.Quality.Retention.D()})
		dropped := prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sori_quality_dropped_total",
			Help: "Call records the quality aggregates in Redis did not take.",
		})
		reg.MustRegister(dropped)
		// Behind a queue: the Recorder writes on the call's path.
		a := calls.NewAsync(weather.Sink(agg), 4096, 2*time.Second, log.With("component", "quality"), dropped.Inc)
		q.sinks = append(q.sinks, a)
		q.closers = append(q.closers, a.Close)
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
