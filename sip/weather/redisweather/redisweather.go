// Package redisweather keeps the weather cells in Redis, where every sori
// node adds to the same hours and any of them can answer a query.
//
// Key layout (PREFIX defaults to "sori:"; HOUR is the UTC hour as
// YYYYMMDDHH; S is the cell's shard, 0 to Shards-1):
//
//	PREFIX wx:{HOUR:S}:cells     set: the ids of the hour's cells in shard S
//	PREFIX wx:{HOUR:S}:c:ID      hash: the cell's counters (fields below)
//
// A cell's ID is NETWORK/ACCESS/HOP/TAG, each part path-escaped (TAG is
// "key=value", empty for the total); its shard is the FNV-1a hash of the ID
// modulo Shards. Hash fields, each an integer written with HINCRBY and left
// out while zero: calls, exp (packets expected), lost, o1 and o5 (calls
// above 1 % and 5 % loss), l0..l14 (the loss histogram, weather.LossBins),
// j0..j12 (jitter, weather.JitterBins), js (jitter sum, ms), m0..m34 (MOS,
// weather.MOSBins), mn (calls with a MOS), ms and mq (sum of MOS·100 and of
// its squares).
//
// The {HOUR:S} hash tag puts a cell's hash and its index set in one slot,
// and spreads one hour's cells over Shards slots, so over a Cluster's
// masters. A reader finds every key of an hour from the Shards index sets,
// whose names it knows: no KEYS or SCAN. Keys expire (EXPIREAT) when the
// hour's end is the retention ago, so Redis drops old hours by itself.
//
// Writes are increments (AddCells), one pipeline for any number of cells:
// a node counts its calls in memory (weather.Buffer) and adds its cells
// every few seconds. The cells of one write are in several slots, so a
// query may see a write half applied for a moment.
//
// Before the shards, an hour's keys were PREFIX wx:{HOUR}:cells and
// PREFIX wx:{HOUR}:c:ID; they are still read (and cleared), so an upgrade
// keeps the hours written before it, and nodes not yet upgraded still count.
package redisweather

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/sip/calls"
	"github.com/sori-voice/sori/sip/weather"
)

// Options configure a Store.
type Options struct {
	Prefix    string           // "sori:" when empty
	Retention time.Duration    // 0 or less: weather.DefaultRetention
	Now       func() time.Time // default time.Now
}

// Store implements weather.Aggregator and weather.Clearer on Redis.
type Store struct {
	rdb       redis.UniversalClient
	prefix    string
	retention time.Duration
	now       func() time.Time
}

// New returns a Store on rdb (single server, Sentinel or Cluster).
func New(rdb redis.UniversalClient, o Options) *Store {
	s := &Store{rdb: rdb, prefix: o.Prefix, retention: o.Retention, now: o.Now}
	if s.prefix == "" {
		s.prefix = "sori:"
	}
	if s.retention <= 0 {
		s.retention = weather.DefaultRetention
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

func hourTag(h time.Time) string { return h.UTC().Format("2006010215") }

// Shards is the number of slots one hour's cells spread over. It is part
// of the stored layout: changing it hides the cells written before.
const Shards = 16

// legacy is the shard number of the layout before the shards: one tag per
// hour, read and cleared but no longer written.
const legacy = -1

// Shard is the shard of the cell id.
func Shard(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % Shards)
}

func (s *Store) tag(h time.Time, shard int) string {
	if shard == legacy {
		return s.prefix + "wx:{" + hourTag(h) + "}"
	}
	return s.prefix + "wx:{" + hourTag(h) + ":" + strconv.Itoa(shard) + "}"
}

// IndexKey is the key of the set of an hour's cell ids in one shard.
func (s *Store) IndexKey(h time.Time, shard int) string { return s.tag(h, shard) + ":cells" }

// CellKey is the key of a cell's hash.
func (s *Store) CellKey(h time.Time, id string) string { return s.cellKey(h, Shard(id), id) }

func (s *Store) cellKey(h time.Time, shard int, id string) string {
	return s.tag(h, shard) + ":c:" + id
}

// shards lists the shards a reader looks in: every one and the legacy.
func shards() []int {
	out := []int{legacy}
	for i := range Shards {
		out = append(out, i)
	}
	return out
}

// CellID is the id of c within its hour.
func CellID(c weather.Cell) string {
	return url.PathEscape(c.Network) + "/" + url.PathEscape(c.Access) + "/" + url.PathEscape(c.Hop) + "/" + url.PathEscape(c.Tag)
}

// parseID is CellID's inverse.
func parseID(h time.Time, id string) (weather.Cell, error) {
	parts := strings.Split(id, "/")
	if len(parts) != 4 {
		return weather.Cell{}, fmt.Errorf("weather: bad cell id %q", id)
	}
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return weather.Cell{}, fmt.Errorf("weather: bad cell id %q: %w", id, err)
		}
		parts[i] = u
	}
	return weather.Cell{Hour: h, Network: parts[0], Access: parts[1], Hop: parts[2], Tag: parts[3]}, nil
}

// fields returns c as hash fields, zeros left out.
func fields(c *weather.Counters) []any {
	var f []any
	put := func(name string, v int64) {
		if v != 0 {
			f = append(f, name, v)
		}
	}
	put("calls", c.Calls)
	put("exp", c.Expected)
	put("lost", c.Lost)
	put("o1", c.Over1)
	put("o5", c.Over5)
	for i, v := range c.Loss {
		put("l"+strconv.Itoa(i), v)
	}
	for i, v := range c.Jitter {
		put("j"+strconv.Itoa(i), v)
	}
	put("js", c.JitterMS)
	for i, v := range c.MOS {
		put("m"+strconv.Itoa(i), v)
	}
	put("mn", c.MOSCalls)
	put("ms", c.MOSSum)
	put("mq", c.MOSSumSq)
	return f
}

// counters reads a hash written by fields (increments of them). Unknown
// fields are ignored: a newer node may keep more.
func counters(h map[string]string) (weather.Counters, error) {
	var c weather.Counters
	for k, v := range h {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return c, fmt.Errorf("weather: field %s: %w", k, err)
		}
		switch k {
		case "calls":
			c.Calls = n
		case "exp":
			c.Expected = n
		case "lost":
			c.Lost = n
		case "o1":
			c.Over1 = n
		case "o5":
			c.Over5 = n
		case "js":
			c.JitterMS = n
		case "mn":
			c.MOSCalls = n
		case "ms":
			c.MOSSum = n
		case "mq":
			c.MOSSumSq = n
		default:
			if len(k) < 2 {
				continue
			}
			i, err := strconv.Atoi(k[1:])
			if err != nil || i < 0 {
				continue
			}
			switch {
			case k[0] == 'l' && i < len(c.Loss):
				c.Loss[i] = n
			case k[0] == 'j' && i < len(c.Jitter):
				c.Jitter[i] = n
			case k[0] == 'm' && i < len(c.MOS):
				c.MOS[i] = n
			}
		}
	}
	return c, nil
}

// expiry is when an hour's keys go: its end plus the retention.
func (s *Store) expiry(h time.Time) time.Time { return h.Add(time.Hour + s.retention) }

// Add implements weather.Aggregator: the record's cells written at once
// (AddCells), for a caller with no weather.Buffer (a rebuild).
func (s *Store) Add(ctx context.Context, r calls.Record) error {
	if _, err := s.AddCells(ctx, weather.Observe(r)); err != nil {
		return fmt.Errorf("weather: add %s: %w", r.CallID, err)
	}
	return nil
}

// written is one cell's commands in a write.
type written struct {
	obs    *weather.Observation
	fields []any
	incrs  []*redis.IntCmd
	index  *redis.IntCmd // the SADD of its id
}

// noRetry is an increment the client must not send again by itself: after
// a connection broke while reading a pipeline's replies, go-redis would
// resend the whole pipeline, with the increments that ran, and report
// success. AddCells returns the failure instead, the next flush adds the
// counters again (they may count twice then, but the failure is seen).
type noRetry struct{ *redis.IntCmd }

func (noRetry) NoRetry() bool { return true }

// AddCells implements weather.CellStore: the observations' counters added
// to their cells, in one pipeline (HINCRBY per nonzero counter and
// EXPIREAT per cell, SADD and EXPIREAT per hour and shard). Observations
// of one cell should be merged first; hours past the retention are
// skipped. On an error, unwritten holds the counters whose increment did
// not succeed and the cells whose index entry did not, to be added again.
// A broken connection fails every command sent on it, those that ran too
// (on a Cluster, only that master's): they count twice when added again.
func (s *Store) AddCells(ctx context.Context, obs []weather.Observation) (unwritten []weather.Observation, err error) {
	oldest := weather.OldestRetained(s.now(), s.retention)
	type group struct {
		hour  time.Time
		shard int
	}
	groups := map[group][]*written{}
	var order []group
	for i := range obs {
		o := &obs[i]
		if o.Cell.Hour.Before(oldest) {
			continue
		}
		f := fields(&o.Counters) // none: only the id is indexed (a retry)
		id := CellID(o.Cell)
		g := group{o.Cell.Hour.UTC(), Shard(id)}
		if groups[g] == nil {
			order = append(order, g)
		}
		groups[g] = append(groups[g], &written{obs: o, fields: f})
	}
	if len(order) == 0 {
		return nil, nil
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, g := range order {
			exp := s.expiry(g.hour)
			ws := groups[g]
			ids := make([]any, 0, len(ws))
			for _, w := range ws {
				id := CellID(w.obs.Cell)
				ids = append(ids, id)
				key := s.cellKey(g.hour, g.shard, id)
				for j := 0; j < len(w.fields); j += 2 {
					c := redis.NewIntCmd(ctx, "hincrby", key, w.fields[j], w.fields[j+1])
					_ = p.Process(ctx, noRetry{c})
					w.incrs = append(w.incrs, c)
				}
				p.ExpireAt(ctx, key, exp)
			}
			idx := p.SAdd(ctx, s.IndexKey(g.hour, g.shard), ids...)
			for _, w := range ws {
				w.index = idx
			}
			p.ExpireAt(ctx, s.IndexKey(g.hour, g.shard), exp)
		}
		return nil
	})
	if err == nil {
		return nil, nil
	}
	// What failed goes back: the counters whose HINCRBY failed and, when
	// its index entry failed, the cell (with no counters if they all went).
	for _, g := range order {
		for _, w := range groups[g] {
			failed := map[string]string{}
			for j, c := range w.incrs {
				if c.Err() != nil {
					failed[w.fields[2*j].(string)] = strconv.FormatInt(w.fields[2*j+1].(int64), 10)
				}
			}
			if len(failed) > 0 || w.index.Err() != nil {
				c, _ := counters(failed) // the values were formatted above
				unwritten = append(unwritten, weather.Observation{Cell: w.obs.Cell, Counters: c})
			}
		}
	}
	return unwritten, err
}

// batch bounds the commands of one pipeline round.
const batch = 1000

// index is one index set to read: an hour's shard.
type index struct {
	hour  time.Time
	shard int
}

func (s *Store) indexes(hours []time.Time) []index {
	var out []index
	for _, h := range hours {
		for _, sh := range shards() {
			out = append(out, index{h, sh})
		}
	}
	return out
}

// members reads the index sets, batch by batch, and calls fn with each
// one's ids.
func (s *Store) members(ctx context.Context, idx []index, fn func(index, []string) error) error {
	for start := 0; start < len(idx); start += batch {
		part := idx[start:min(start+batch, len(idx))]
		cmds := make([]*redis.StringSliceCmd, len(part))
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, x := range part {
				cmds[i] = p.SMembers(ctx, s.IndexKey(x.hour, x.shard))
			}
			return nil
		}); err != nil {
			return err
		}
		for i, cmd := range cmds {
			if err := fn(part[i], cmd.Val()); err != nil {
				return err
			}
		}
	}
	return nil
}

// Query implements weather.Aggregator: Group over Cells.
func (s *Store) Query(ctx context.Context, q weather.Query) ([]weather.Row, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	obs, err := s.Cells(ctx, q)
	if err != nil {
		return nil, err
	}
	return weather.Group(q, obs), nil
}

// Cells implements weather.CellStore: the index sets of q's hours (every
// shard's, names known in advance) in pipelines, then the wanted cells'
// hashes, batch by batch. On a Cluster a pipeline goes to each master at
// once.
func (s *Store) Cells(ctx context.Context, q weather.Query) ([]weather.Observation, error) {
	type ref struct {
		cell weather.Cell
		key  string
	}
	var refs []ref
	err := s.members(ctx, s.indexes(q.Hours(s.now(), s.retention)), func(x index, ids []string) error {
		for _, id := range ids {
			cell, err := parseID(x.hour, id)
			if err != nil {
				return err
			}
			if q.Wants(cell.Tag) {
				refs = append(refs, ref{cell, s.cellKey(x.hour, x.shard, id)})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("weather: read hours: %w", err)
	}
	obs := make([]weather.Observation, 0, len(refs))
	for start := 0; start < len(refs); start += batch {
		part := refs[start:min(start+batch, len(refs))]
		cmds := make([]*redis.MapStringStringCmd, len(part))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, r := range part {
				cmds[i] = p.HGetAll(ctx, r.key)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("weather: read cells: %w", err)
		}
		for i, cmd := range cmds {
			if len(cmd.Val()) == 0 {
				continue // expired between the two reads, or only indexed
			}
			c, err := counters(cmd.Val())
			if err != nil {
				return nil, fmt.Errorf("weather: %s: %w", part[i].key, err)
			}
			obs = append(obs, weather.Observation{Cell: part[i].cell, Counters: c})
		}
	}
	return obs, nil
}

// Clear implements weather.Clearer: it deletes every hour from the oldest
// retained to a day ahead (clocks differ), one DEL per hour and shard.
func (s *Store) Clear(ctx context.Context) error {
	now := s.now()
	var hours []time.Time
	for h := weather.OldestRetained(now, s.retention); !h.After(now.Add(24 * time.Hour)); h = h.Add(time.Hour) {
		hours = append(hours, h)
	}
	var dels [][]string
	flush := func() error {
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, keys := range dels {
				p.Del(ctx, keys...)
			}
			return nil
		})
		dels = dels[:0]
		return err
	}
	err := s.members(ctx, s.indexes(hours), func(x index, ids []string) error {
		if len(ids) == 0 {
			return nil
		}
		keys := []string{s.IndexKey(x.hour, x.shard)}
		for _, id := range ids {
			keys = append(keys, s.cellKey(x.hour, x.shard, id))
		}
		dels = append(dels, keys)
		if len(dels) < batch {
			return nil
		}
		return flush()
	})
	if err == nil && len(dels) > 0 {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("weather: clear: %w", err)
	}
	return nil
}
