// Package redisweather keeps the weather cells in Redis, where every sori
// node adds to the same hours and any of them can answer a query.
//
// Key layout (PREFIX defaults to "sori:"; HOUR is the UTC hour as
// YYYYMMDDHH):
//
//	PREFIX wx:{HOUR}:cells     set: the ids of the hour's cells
//	PREFIX wx:{HOUR}:c:ID      hash: the cell's counters (fields below)
//
// A cell's ID is NETWORK/ACCESS/HOP/TAG, each part path-escaped (TAG is
// "key=value", empty for the total). Hash fields, each an integer written
// with HINCRBY and left out while zero: calls, exp (packets expected), lost,
// o1 and o5 (calls above 1 % and 5 % loss), l0..l14 (the loss histogram,
// weather.LossBins), j0..j12 (jitter, weather.JitterBins), js (jitter sum,
// ms), m0..m34 (MOS, weather.MOSBins), mn (calls with a MOS), ms and mq
// (sum of MOS·100 and of its squares).
//
// Every key of an hour carries the {HOUR} hash tag: on Redis Cluster one
// hour's cells share a slot, so one record's increments are one MULTI
// transaction (a query never sees half a record) and a query reads an
// hour from one node. Keys expire (EXPIREAT) when the hour's end is the
// retention ago, so Redis drops old hours by itself.
package redisweather

import (
	"context"
	"fmt"
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

// IndexKey is the key of an hour's set of cell ids.
func (s *Store) IndexKey(h time.Time) string { return s.prefix + "wx:{" + hourTag(h) + "}:cells" }

// CellKey is the key of a cell's hash.
func (s *Store) CellKey(h time.Time, id string) string {
	return s.prefix + "wx:{" + hourTag(h) + "}:c:" + id
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

// Add implements weather.Aggregator: one MULTI/EXEC per record (all its
// cells are in one hour, so in one Cluster slot).
func (s *Store) Add(ctx context.Context, r calls.Record) error {
	obs := weather.Observe(r)
	if len(obs) == 0 {
		return nil
	}
	h := obs[0].Cell.Hour // every observation of a record has its hour
	if h.Before(weather.OldestRetained(s.now(), s.retention)) {
		return nil
	}
	idx, exp := s.IndexKey(h), s.expiry(h)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		ids := make([]any, 0, len(obs))
		for i := range obs {
			id := CellID(obs[i].Cell)
			ids = append(ids, id)
			key := s.CellKey(h, id)
			f := fields(&obs[i].Counters)
			for j := 0; j < len(f); j += 2 {
				p.HIncrBy(ctx, key, f[j].(string), f[j+1].(int64))
			}
			p.ExpireAt(ctx, key, exp)
		}
		p.SAdd(ctx, idx, ids...)
		p.ExpireAt(ctx, idx, exp)
		return nil
	})
	if err != nil {
		return fmt.Errorf("weather: add %s: %w", r.CallID, err)
	}
	return nil
}

// batch bounds the commands of one pipeline round.
const batch = 1000

// Query implements weather.Aggregator: the hours' index sets in one
// pipeline, then the wanted cells' hashes, batch by batch.
func (s *Store) Query(ctx context.Context, q weather.Query) ([]weather.Row, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	hours := q.Hours(s.now(), s.retention)
	type ref struct {
		cell weather.Cell
		key  string
	}
	var refs []ref
	for start := 0; start < len(hours); start += batch {
		part := hours[start:min(start+batch, len(hours))]
		cmds := make([]*redis.StringSliceCmd, len(part))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, h := range part {
				cmds[i] = p.SMembers(ctx, s.IndexKey(h))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("weather: read hours: %w", err)
		}
		for i, cmd := range cmds {
			for _, id := range cmd.Val() {
				cell, err := parseID(part[i], id)
				if err != nil {
					return nil, err
				}
				if q.Wants(cell.Tag) {
					refs = append(refs, ref{cell, s.CellKey(part[i], id)})
				}
			}
		}
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
				continue // expired between the two reads
			}
			c, err := counters(cmd.Val())
			if err != nil {
				return nil, fmt.Errorf("weather: %s: %w", part[i].key, err)
			}
			obs = append(obs, weather.Observation{Cell: part[i].cell, Counters: c})
		}
	}
	return weather.Group(q, obs), nil
}

// Clear implements weather.Clearer: it deletes every hour from the oldest
// retained to a day ahead (clocks differ), one DEL per hour.
func (s *Store) Clear(ctx context.Context) error {
	now := s.now()
	var hours []time.Time
	for h := weather.OldestRetained(now, s.retention); !h.After(now.Add(24 * time.Hour)); h = h.Add(time.Hour) {
		hours = append(hours, h)
	}
	for start := 0; start < len(hours); start += batch {
		part := hours[start:min(start+batch, len(hours))]
		cmds := make([]*redis.StringSliceCmd, len(part))
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, h := range part {
				cmds[i] = p.SMembers(ctx, s.IndexKey(h))
			}
			return nil
		}); err != nil {
			return fmt.Errorf("weather: clear: %w", err)
		}
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, h := range part {
				keys := []string{s.IndexKey(h)}
				for _, id := range cmds[i].Val() {
					keys = append(keys, s.CellKey(h, id))
				}
				p.Del(ctx, keys...)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("weather: clear: %w", err)
		}
	}
	return nil
}
