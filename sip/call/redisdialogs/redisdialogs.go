// Package redisdialogs keeps answered calls (sip/call's State) in Redis,
// so that a sori node that restarts, or another node sharing the Redis,
// can take an in-dialog request for a call it does not hold, and so that
// only one node ends each call (writes its record).
//
// Key layout (PREFIX defaults to "sori:"):
//
//	PREFIX dlg:{CALLID}      string: the call's state as JSON, with the node that saved it last ("node"); expires with the call (its dialog timeout left, and a grace)
//	PREFIX dlg:{CALLID}:end  string "1": the call's end was claimed; as long
//	PREFIX dlgs:{NODE}       sorted set: the Call-IDs NODE saved, scored by when their state expires (Unix ms)
//
// Both keys of a call share the {CALLID} hash tag (braces and % in the
// Call-ID percent-encoded), so each script below runs on one Cluster slot.
// A node's index is on a slot of its own, so it is kept beside the scripts,
// not in them: an entry may be missing (a save whose ZADD failed) or stale
// (a call ended, expired, or saved since by another node). Neither breaks
// a call: the state is what counts, and Owned prunes what it finds stale.
package redisdialogs

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/sip/call"
)

//go:embed save.lua
var saveLua string

//go:embed delete.lua
var deleteLua string

var (
	saveScript   = redis.NewScript(saveLua)
	deleteScript = redis.NewScript(deleteLua)
)

// Store implements call.Store on a Redis client (single, Sentinel or
// Cluster: the registrar store's, registrar/store/redisstore).
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	node   string // whose index the calls saved go in (sip.node_id); empty: none
}

var _ call.Store = (*Store)(nil)

// New keeps calls through rdb; prefix namespaces the keys ("sori:" when
// empty). The calls saved go in node's index (Owned), so that node adopts
// them when it starts again; empty node: in no index.
func New(rdb redis.UniversalClient, prefix, node string) *Store {
	if prefix == "" {
		prefix = "sori:"
	}
	return &Store{rdb: rdb, prefix: prefix, node: node}
}

// StateKey is the key of a call's state (documented layout).
func (s *Store) StateKey(callID string) string { return s.prefix + "dlg:{" + tag(callID) + "}" }

// EndKey is the key of the claim of a call's end.
func (s *Store) EndKey(callID string) string { return s.StateKey(callID) + ":end" }

// IndexKey is the key of node's index of the calls it saved.
func (s *Store) IndexKey(node string) string { return s.prefix + "dlgs:{" + tag(node) + "}" }

// tag makes a Call-ID a hash tag: without braces (a "}" would end the tag
// early, and "{}" would hash the whole key), reversibly.
var tag = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D").Replace

var errNoCallID = errors.New("redis dialogs: empty Call-ID")

// saved is a call's state as stored: with the node that saved it last,
// the one whose index holds it (a state saved before there were indexes
// has none).
type saved struct {
	call.State
	Node string `json:"node,omitempty"`
}

// Save implements call.Store.
func (s *Store) Save(ctx context.Context, st call.State, ttl time.Duration) error {
	id := st.Record.CallID
	if id == "" {
		return errNoCallID
	}
	blob, err := json.Marshal(saved{State: st, Node: s.node})
	if err != nil {
		return fmt.Errorf("redis dialogs: encode %s: %w", id, err)
	}
	written, err := saveScript.Run(ctx, s.rdb, []string{s.StateKey(id), s.EndKey(id)}, blob, ms(ttl)).Int()
	if err != nil {
		return fmt.Errorf("redis dialogs: save %s: %w", id, err)
	}
	if written == 0 || s.node == "" {
		return nil // ended already: no index entry to add
	}
	// Scored by when the state expires: an entry past it is stale whatever
	// became of the call, and each save prunes those of this node.
	now := time.Now()
	idx := s.IndexKey(s.node)
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, idx, redis.Z{Score: float64(now.Add(time.Duration(ms(ttl)) * time.Millisecond).UnixMilli()), Member: id})
		p.ZRemRangeByScore(ctx, idx, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis dialogs: index %s on node %s: %w", id, s.node, err)
	}
	return nil
}

// Load implements call.Store.
func (s *Store) Load(ctx context.Context, callID string) (call.State, bool, error) {
	if callID == "" {
		return call.State{}, false, errNoCallID
	}
	blob, err := s.rdb.Get(ctx, s.StateKey(callID)).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return call.State{}, false, nil
	case err != nil:
		return call.State{}, false, fmt.Errorf("redis dialogs: load %s: %w", callID, err)
	}
	var sv saved
	if err := json.Unmarshal(blob, &sv); err != nil {
		return call.State{}, false, fmt.Errorf("redis dialogs: decode %s: %w", callID, err)
	}
	return sv.State, true, nil
}

// Delete implements call.Store: the claim is SET NX, so of all nodes
// ending the call only the first gets true.
func (s *Store) Delete(ctx context.Context, callID string, ttl time.Duration) (bool, error) {
	if callID == "" {
		return false, errNoCallID
	}
	n, err := deleteScript.Run(ctx, s.rdb, []string{s.StateKey(callID), s.EndKey(callID)}, ms(ttl)).Int()
	if err != nil {
		return false, fmt.Errorf("redis dialogs: end %s: %w", callID, err)
	}
	if s.node != "" {
		// Its entry goes, first or not; one left (this failing) is stale
		// and pruned later: the claim above is what ends the call once.
		_ = s.rdb.ZRem(ctx, s.IndexKey(s.node), callID).Err()
	}
	return n == 1, nil
}

// ownedBatch is how many states Owned reads in one pipeline.
const ownedBatch = 256

// Owned implements call.Store: the calls in node's index whose state is
// still saved, last by node. The entries it finds stale (expired, ended,
// corrupt, or saved since by another node, which adopts them) are pruned.
func (s *Store) Owned(ctx context.Context, node string) ([]call.State, error) {
	idx := s.IndexKey(node)
	if err := s.rdb.ZRemRangeByScore(ctx, idx, "-inf", strconv.FormatInt(time.Now().UnixMilli(), 10)).Err(); err != nil {
		return nil, fmt.Errorf("redis dialogs: prune the index of node %s: %w", node, err)
	}
	ids, err := s.rdb.ZRange(ctx, idx, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redis dialogs: read the index of node %s: %w", node, err)
	}
	var owned []call.State
	var stale []any
	for len(ids) > 0 {
		batch := ids[:min(len(ids), ownedBatch)]
		ids = ids[len(batch):]
		// One GET each, pipelined: the states are on many Cluster slots (no MGET).
		gets := make([]*redis.StringCmd, len(batch))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range batch {
				gets[i] = p.Get(ctx, s.StateKey(id))
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("redis dialogs: load the calls of node %s: %w", node, err)
		}
		for i, id := range batch {
			blob, err := gets[i].Bytes()
			if errors.Is(err, redis.Nil) {
				stale = append(stale, id) // ended or expired
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("redis dialogs: load %s of node %s: %w", id, node, err)
			}
			var sv saved
			if json.Unmarshal(blob, &sv) != nil || sv.Record.CallID != id || sv.Node != "" && sv.Node != node {
				stale = append(stale, id) // no call to adopt, or another node's now
				continue
			}
			owned = append(owned, sv.State)
		}
	}
	if len(stale) > 0 {
		_ = s.rdb.ZRem(ctx, idx, stale...).Err() // pruned next time else
	}
	return owned, nil
}

// ms is ttl in milliseconds, one at least (PX 0 is an error).
func ms(ttl time.Duration) int64 { return max(ttl.Milliseconds(), 1) }
