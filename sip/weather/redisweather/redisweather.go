// Package redisweather keeps the weather cells in Redis, where every sori
// node adds to the same hours and any of them can answer a query.
//
// Key layout (PREFIX defaults to "sori:"; HOUR is the UTC hour as
// YYYYMMDDHH; S is the cell's shard, 0 to Shards-1):
//
//	PREFIX wx:{HOUR:S}:cells     set: the ids of the hour's cells in shard S
//	PREFIX wx:{HOUR:S}:c:ID      hash: the cell's counters (fields below)
//	PREFIX wx:{HOUR:S}:w         hash: each writer's last write applied
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
// Writes are increments (AddCells), one script per slot and one pipeline
// for any number of cells: a node counts its calls in memory
// (weather.Buffer) and adds its cells every few seconds, each exactly
// once (addScript). The cells of one write are in several slots, so a
// query may see a write half applied for a moment.
//
// Before the shards, an hour's keys were PREFIX wx:{HOUR}:cells and
// PREFIX wx:{HOUR}:c:ID; they are still read (and cleared), so an upgrade
// keeps the hours written before it, and nodes not yet upgraded still count.
package redisweather

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"strconv"
	"strings"
	"sync"
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

	// writer names this Store's writes in every slot's writers hash, and
	// seq numbers them (addScript): a resent write is applied once.
	writer string

	mu     sync.Mutex // one AddCells at a time
	seq    uint64
	doubts []doubt                            // writes whose reply was lost
	credit map[weather.Cell]*weather.Counters // applied in doubt, to take off
}

// New returns a Store on rdb (single server, Sentinel or Cluster).
func New(rdb redis.UniversalClient, o Options) *Store {
	s := &Store{rdb: rdb, prefix: o.Prefix, retention: o.Retention, now: o.Now,
		writer: newWriter(), credit: map[weather.Cell]*weather.Counters{}}
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

// newWriter is a random writer name: each process's Store its own.
func newWriter() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
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

// Add implements weather.Aggregator: the record's cells written at once,
// for a caller with no weather.Buffer (a rebuild). It adds nothing again
// after an error.
func (s *Store) Add(ctx context.Context, r calls.Record) error {
	if _, err := s.addCells(ctx, weather.Observe(r), false); err != nil {
		return fmt.Errorf("weather: add %s: %w", r.CallID, err)
	}
	return nil
}

// addScript applies one write to one slot's keys, once: a write carries
// its writer's next sequence number, and one whose number the slot has
// seen from that writer already (a resend) changes nothing. Redis runs a
// script whole, so a write is applied entirely or not at all.
//
// KEYS: the writers hash (writer -> last sequence applied), the index
// set, then the cells' hashes. ARGV: writer, sequence, EXPIREAT, then for
// each cell its id, its number of fields and the fields' names and
// increments. Returns 1 when applied, 0 for a resend.
var addScript = redis.NewScript(`
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) <= last then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
local a, ids = 4, {}
for k = 3, #KEYS do
	ids[#ids + 1] = ARGV[a]
	local n = tonumber(ARGV[a + 1])
	a = a + 2
	for _ = 1, n do
		redis.call('HINCRBY', KEYS[k], ARGV[a], ARGV[a + 1])
		a = a + 2
	end
	redis.call('EXPIREAT', KEYS[k], ARGV[3])
end
redis.call('SADD', KEYS[2], unpack(ids))
redis.call('EXPIREAT', KEYS[2], ARGV[3])
return 1`)

// writeCells bounds the cells of one script run: Redis serves nothing
// else while it runs (256 cells is about 3 000 increments).
const writeCells = 256

// doubt is a write whose reply was lost (a broken connection, a timeout):
// it may have been applied. The next AddCells asks the slot's writers
// hash which.
type doubt struct {
	writers string // its slot's writers hash
	seq     uint64
	obs     []weather.Observation
}

// WritersKey is the key of the hash of the last write each writer applied
// to an hour's shard.
func (s *Store) WritersKey(h time.Time, shard int) string { return s.tag(h, shard) + ":w" }

// AddCells implements weather.CellStore: the observations' counters added
// to their cells, exactly once. One script per hour and shard (per
// writeCells cells) adds a cell's counters, indexes it and sets the
// expiries; the scripts of all slots go in one pipeline. Observations of
// one cell should be merged first; hours past the retention are skipped.
//
// On an error, unwritten holds every cell whose write failed or whose
// reply was lost, for the caller to add again (with more counters merged
// in, or not). A lost reply leaves the write in doubt: the next AddCells
// first reads whether it was applied and, if it was, takes its counters
// from what is added again. So a count is neither lost nor doubled by a
// connection broken at any point, nor by the client sending a pipeline
// again by itself.
func (s *Store) AddCells(ctx context.Context, obs []weather.Observation) (unwritten []weather.Observation, err error) {
	return s.addCells(ctx, obs, true)
}

// addCells is AddCells; again is whether the caller adds the unwritten
// again (only then are doubts kept).
func (s *Store) addCells(ctx context.Context, obs []weather.Observation, again bool) (unwritten []weather.Observation, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.resolve(ctx); err != nil {
		return obs, err
	}
	oldest := weather.OldestRetained(s.now(), s.retention)
	type group struct {
		hour  time.Time
		shard int
	}
	groups := map[group][]weather.Observation{}
	var order []group
	for _, o := range obs {
		if o.Cell.Hour.Before(oldest) {
			continue
		}
		if c := s.credit[o.Cell]; c != nil {
			o.Counters.Sub(c) // applied already, in a write in doubt
			delete(s.credit, o.Cell)
			if o.Counters.IsZero() {
				continue
			}
		}
		g := group{o.Cell.Hour.UTC(), Shard(CellID(o.Cell))}
		if groups[g] == nil {
			order = append(order, g)
		}
		groups[g] = append(groups[g], o)
	}
	s.pruneCredit(oldest)
	type write struct {
		doubt
		cmd *redis.Cmd
	}
	var writes []write
	if len(order) == 0 {
		return nil, nil
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, g := range order {
			exp := strconv.FormatInt(s.expiry(g.hour).Unix(), 10)
			all := groups[g]
			for start := 0; start < len(all); start += writeCells {
				part := all[start:min(start+writeCells, len(all))]
				s.seq++
				w := write{doubt: doubt{writers: s.WritersKey(g.hour, g.shard), seq: s.seq, obs: part}}
				keys := []string{w.writers, s.IndexKey(g.hour, g.shard)}
				args := []any{s.writer, w.seq, exp}
				for i := range part {
					id := CellID(part[i].Cell)
					keys = append(keys, s.cellKey(g.hour, g.shard, id))
					f := fields(&part[i].Counters) // none: only indexed
					args = append(args, id, len(f)/2)
					args = append(args, f...)
				}
				w.cmd = addScript.Eval(ctx, p, keys, args...)
				writes = append(writes, w)
			}
		}
		return nil
	})
	if err == nil {
		return nil, nil
	}
	for _, w := range writes {
		if w.cmd.Err() == nil {
			continue
		}
		unwritten = append(unwritten, w.obs...)
		// A reply from Redis is an answer: the script failed at its
		// first write (out of memory, a read-only replica) and changed
		// nothing. Anything else may have lost an applied write's reply.
		var reply redis.Error
		if again && !errors.As(w.cmd.Err(), &reply) {
			s.doubts = append(s.doubts, w.doubt)
		}
	}
	return unwritten, err
}

// resolve reads, for each write in doubt, whether its slot applied it,
// and credits the counters of those applied: they are taken from the same
// cells when these are added again. s.mu held.
func (s *Store) resolve(ctx context.Context) error {
	if len(s.doubts) == 0 {
		return nil
	}
	cmds := make([]*redis.StringCmd, len(s.doubts))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, d := range s.doubts {
			cmds[i] = p.HGet(ctx, d.writers, s.writer)
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("weather: read the writes in doubt: %w", err)
	}
	for i, d := range s.doubts {
		last, err := cmds[i].Uint64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("weather: read the writes in doubt: %w", err)
		}
		if last < d.seq {
			continue // not applied: added again in full
		}
		for _, o := range d.obs {
			c := s.credit[o.Cell]
			if c == nil {
				c = new(weather.Counters)
				s.credit[o.Cell] = c
			}
			c.Add(&o.Counters)
		}
	}
	s.doubts = nil
	return nil
}

// pruneCredit forgets the credit of hours no longer written. s.mu held.
func (s *Store) pruneCredit(oldest time.Time) {
	for cell := range s.credit {
		if cell.Hour.Before(oldest) {
			delete(s.credit, cell)
		}
	}
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
		keys := []string{s.IndexKey(x.hour, x.shard), s.WritersKey(x.hour, x.shard)}
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
