package anchorstate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Store reads and writes one anchor's calls in Redis (single, Sentinel or
// Cluster: a client as registrar/store/redisstore opens it).
type Store struct {
	rdb    redis.UniversalClient
	prefix string // PREFIX anchor:ID:
	ttl    time.Duration
}

// Options of a Store.
type Options struct {
	Prefix string        // "sori:" when empty
	ID     string        // the anchor's name: anchors sharing a Redis each need their own
	TTL    time.Duration // of a call not written again (a little above the media timeout)
}

// NewStore keeps an anchor's calls through rdb.
func NewStore(rdb redis.UniversalClient, o Options) (*Store, error) {
	if o.ID == "" {
		return nil, errors.New("anchorstate: no anchor id")
	}
	if o.TTL <= 0 {
		return nil, errors.New("anchorstate: no TTL")
	}
	if o.Prefix == "" {
		o.Prefix = "sori:"
	}
	return &Store{rdb: rdb, prefix: o.Prefix + "anchor:" + tag(o.ID) + ":", ttl: o.TTL}, nil
}

// tag keeps braces out of a hash tag (a "}" would end it early, "{}"
// would hash the whole key), reversibly.
var tag = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D").Replace

// Key is the key of a call (documented layout).
func (s *Store) Key(callID string) string { return s.prefix + "{" + tag(callID) + "}" }

// IndexKey is the key of the anchor's index of calls.
func (s *Store) IndexKey() string { return s.prefix + "calls" }

// Write saves calls and removes others in one pipeline.
func (s *Store) Write(ctx context.Context, save []Call, drop []string) error {
	if len(save) == 0 && len(drop) == 0 {
		return nil
	}
	exp := float64(time.Now().Add(s.ttl).UnixMilli())
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range save {
			b, err := Encode(c)
			if err != nil {
				return err
			}
			p.Set(ctx, s.Key(c.ID), b, s.ttl)
			p.ZAdd(ctx, s.IndexKey(), redis.Z{Score: exp, Member: c.ID})
		}
		for _, id := range drop {
			p.Del(ctx, s.Key(id))
			p.ZRem(ctx, s.IndexKey(), id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("anchorstate: write %d calls, drop %d: %w", len(save), len(drop), err)
	}
	return nil
}

// Load returns every call kept. Expired and unreadable ones are removed
// from Redis; bad names the unreadable ones, with why.
func (s *Store) Load(ctx context.Context) (calls []Call, bad map[string]error, err error) {
	now := time.Now().UnixMilli()
	if err := s.rdb.ZRemRangeByScore(ctx, s.IndexKey(), "-inf", fmt.Sprint(now)).Err(); err != nil {
		return nil, nil, fmt.Errorf("anchorstate: prune index: %w", err)
	}
	ids, err := s.rdb.ZRange(ctx, s.IndexKey(), 0, -1).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("anchorstate: read index: %w", err)
	}
	gets := make([]*redis.StringCmd, len(ids))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			gets[i] = p.Get(ctx, s.Key(id))
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("anchorstate: read %d calls: %w", len(ids), err)
	}
	bad = map[string]error{}
	var gone []string
	for i, id := range ids {
		b, err := gets[i].Bytes()
		if errors.Is(err, redis.Nil) {
			gone = append(gone, id) // expired since the index said otherwise
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("anchorstate: read %s: %w", id, err)
		}
		c, err := Decode(b)
		if err == nil && c.ID != id {
			err = fmt.Errorf("anchorstate: key of %s holds %s", id, c.ID)
		}
		if err != nil {
			bad[id] = err
			gone = append(gone, id)
			continue
		}
		calls = append(calls, c)
	}
	if err := s.Write(ctx, nil, gone); err != nil {
		return nil, nil, err
	}
	return calls, bad, nil
}
