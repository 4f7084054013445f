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
//	PREFIX dlgs:{NODE}:taker string: the node taking NODE's calls (Take), for takeLease at most
//
// Both keys of a call share the {CALLID} hash tag (braces and % in the
// Call-ID percent-encoded), so each script below runs on one Cluster slot;
// a node's index and the lease of taking it share the {NODE} tag (take.lua).
// A node's index is on a slot of its own, so it is kept beside the call
// scripts, not in them: an entry may be missing (a save whose ZADD failed)
// or stale (a call ended, expired, or saved since by another node). Neither
// breaks a call: the state, with the node that saved it last, is what
// counts, and Take prunes what it finds stale.
//
// Taking the calls of another node (one gone for good) moves each from its
// index into the taker's, and marks its state the taker's only if it is
// still as read (move.lua); the lease makes one taker at a time, so that
// of the nodes that find a node gone, and the node itself come back, only
// one adopts each call.
//
// A node that was cut off from Redis, and may have had its calls taken
// meanwhile, asks which of those it holds are still its own (Mine) under
// the same lease on its own index: a taker is not moving them as it looks.
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

//go:embed take.lua
var takeLua string

//go:embed move.lua
var moveLua string

//go:embed release.lua
var releaseLua string

//go:embed hold.lua
var holdLua string

var (
	saveScript    = redis.NewScript(saveLua)
	deleteScript  = redis.NewScript(deleteLua)
	takeScript    = redis.NewScript(takeLua)
	moveScript    = redis.NewScript(moveLua)
	releaseScript = redis.NewScript(releaseLua)
	holdScript    = redis.NewScript(holdLua)
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

// LeaseKey is the key of the lease of taking node's calls (Take).
func (s *Store) LeaseKey(node string) string { return s.IndexKey(node) + ":taker" }

// tag makes a Call-ID a hash tag: without braces (a "}" would end the tag
// early, and "{}" would hash the whole key), reversibly.
var tag = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D").Replace

var (
	errNoCallID = errors.New("redis dialogs: empty Call-ID")
	errNoNode   = errors.New("a store without a node takes no calls")
)

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
	// The index entry goes first: a state saved is then always in its
	// node's index, even if the node dies between the two writes (they
	// are on different Cluster slots, so not one script). An entry whose
	// state never came, or has ended, is stale and pruned (Take).
	idx := ""
	if s.node != "" {
		// Scored by when the state expires: an entry past it is stale
		// whatever became of the call, and each save prunes those of
		// this node.
		now := time.Now()
		idx = s.IndexKey(s.node)
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.ZAdd(ctx, idx, redis.Z{Score: float64(now.Add(time.Duration(ms(ttl)) * time.Millisecond).UnixMilli()), Member: id})
			p.ZRemRangeByScore(ctx, idx, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
			return nil
		})
		if err != nil {
			return fmt.Errorf("redis dialogs: index %s on node %s: %w", id, s.node, err)
		}
	}
	written, err := saveScript.Run(ctx, s.rdb, []string{s.StateKey(id), s.EndKey(id)}, blob, ms(ttl)).Int()
	if err != nil {
		return fmt.Errorf("redis dialogs: save %s: %w", id, err)
	}
	if written == 0 && idx != "" {
		_ = s.rdb.ZRem(ctx, idx, id).Err() // ended already: no call to index (one left is pruned later)
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

// ownedBatch is how many states Take reads, or moves, in one pipeline.
const ownedBatch = 256

// takeLease is how long a taker holds a node's calls for itself: far
// longer than taking them takes (a few pipelines per thousand calls), so
// that no other taker starts on them meanwhile; a taker that dies holding
// it delays the next one, or the node come back, by this much at most.
const takeLease = 30 * time.Second

// Take implements call.Store: the calls in node's index whose state is
// still saved, last by node, become this store's node's, under a lease
// (take.lua) that only one taker holds at a time (call.ErrTaking to the
// others). Taking from another node, each call goes into this node's
// index first, then its state is marked this node's if it is still the
// one read (move.lua: a call saved since by another node, or ended, is
// left alone), then the entry leaves node's index: a taker that stops
// half-way leaves every call in one index at least, and the next taker
// finds the ones already moved stale (the same taker takes them again,
// as its own). The entries found stale (expired,
// ended, corrupt, or saved since by another node, which adopts them) are
// pruned.
func (s *Store) Take(ctx context.Context, node string) ([]call.State, error) {
	if s.node == "" {
		return nil, fmt.Errorf("redis dialogs: calls of node %s: %w", node, errNoNode)
	}
	idx, lease := s.IndexKey(node), s.LeaseKey(node)
	res, err := takeScript.Run(ctx, s.rdb, []string{idx, lease}, s.node, ms(takeLease), time.Now().UnixMilli()).Slice()
	if err != nil {
		return nil, fmt.Errorf("redis dialogs: take the calls of node %s: %w", node, err)
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("redis dialogs: take the calls of node %s: unexpected reply %v", node, res)
	}
	if ok, _ := res[0].(int64); ok != 1 {
		return nil, fmt.Errorf("redis dialogs: calls of node %s: %w (%v)", node, call.ErrTaking, res[1])
	}
	defer func() {
		// Ended early or not, the lease ends with this Take; one left (this
		// failing) lapses after takeLease.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = releaseScript.Run(rctx, s.rdb, []string{lease}, s.node).Err()
		cancel()
	}()
	flat, _ := res[1].([]any)
	type entry struct {
		id    string
		score float64
	}
	var entries []entry
	for i := 0; i+1 < len(flat); i += 2 {
		id, _ := flat[i].(string)
		score, _ := strconv.ParseFloat(fmt.Sprint(flat[i+1]), 64)
		entries = append(entries, entry{id, score})
	}
	var owned []call.State
	var stale []any
	for len(entries) > 0 {
		batch := entries[:min(len(entries), ownedBatch)]
		entries = entries[len(batch):]
		// One GET each, pipelined: the states are on many Cluster slots (no MGET).
		gets := make([]*redis.StringCmd, len(batch))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, e := range batch {
				gets[i] = p.Get(ctx, s.StateKey(e.id))
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("redis dialogs: load the calls of node %s: %w", node, err)
		}
		var mine []call.State
		var blobs []string
		var ids []entry
		for i, e := range batch {
			blob, err := gets[i].Result()
			if errors.Is(err, redis.Nil) {
				stale = append(stale, e.id) // ended or expired
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("redis dialogs: load %s of node %s: %w", e.id, node, err)
			}
			var sv saved
			if json.Unmarshal([]byte(blob), &sv) != nil || sv.Record.CallID != e.id || sv.Node != "" && sv.Node != node && sv.Node != s.node {
				stale = append(stale, e.id) // no call to adopt, or another node's now
				continue
			}
			if node == s.node || sv.Node == s.node {
				// This node's (taken from node by a Take cut short): nothing to move.
				owned = append(owned, sv.State)
				if node != s.node {
					stale = append(stale, e.id)
					_ = s.rdb.ZAdd(ctx, s.IndexKey(s.node), redis.Z{Score: e.score, Member: e.id}).Err()
				}
				continue
			}
			mine, blobs, ids = append(mine, sv.State), append(blobs, blob), append(ids, e)
		}
		if len(mine) == 0 {
			continue
		}
		zs := make([]redis.Z, len(ids))
		for i, e := range ids {
			zs[i] = redis.Z{Score: e.score, Member: e.id} // expiring when they did
		}
		moved, err := s.move(ctx, node, mine, blobs, zs)
		if err != nil {
			return nil, err
		}
		owned = append(owned, moved...)
		for _, e := range ids {
			stale = append(stale, e.id) // moved, or not node's any more
		}
	}
	if len(stale) > 0 {
		// The calls moved are this node's already: entries left (this
		// failing) are found stale by the next Take of node.
		_ = s.rdb.ZRem(ctx, idx, stale...).Err()
	}
	return owned, nil
}

// Mine implements call.Store: under the lease on this node's own index
// (hold.lua; call.ErrTaking while a taker holds it), a call is this
// node's if its state names this node (or no node: saved before there
// were indexes), or if it has no state and no claim of its end (never
// saved: it was answered while the store was out of reach; or expired:
// nobody else holds it either). A state another node saved, or a claimed
// end, is another node's doing: not this node's.
func (s *Store) Mine(ctx context.Context, callIDs []string) (map[string]bool, error) {
	if s.node == "" {
		return nil, fmt.Errorf("redis dialogs: calls of this node: %w", errNoNode)
	}
	lease := s.LeaseKey(s.node)
	holder, err := holdScript.Run(ctx, s.rdb, []string{lease}, s.node, ms(takeLease)).Text()
	if err != nil {
		return nil, fmt.Errorf("redis dialogs: check the calls of node %s: %w", s.node, err)
	}
	if holder != s.node {
		return nil, fmt.Errorf("redis dialogs: calls of node %s: %w (%s)", s.node, call.ErrTaking, holder)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = releaseScript.Run(rctx, s.rdb, []string{lease}, s.node).Err()
		cancel()
	}()
	mine := make(map[string]bool, len(callIDs))
	for rest := callIDs; len(rest) > 0; {
		batch := rest[:min(len(rest), ownedBatch)]
		rest = rest[len(batch):]
		gets := make([]*redis.StringCmd, len(batch))
		ends := make([]*redis.IntCmd, len(batch))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range batch {
				gets[i] = p.Get(ctx, s.StateKey(id))
				ends[i] = p.Exists(ctx, s.EndKey(id))
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("redis dialogs: check the calls of node %s: %w", s.node, err)
		}
		for i, id := range batch {
			blob, err := gets[i].Result()
			switch {
			case errors.Is(err, redis.Nil):
				mine[id] = ends[i].Val() == 0
			case err != nil:
				return nil, fmt.Errorf("redis dialogs: check %s of node %s: %w", id, s.node, err)
			default:
				var sv saved
				if json.Unmarshal([]byte(blob), &sv) != nil {
					continue // not a call anyone can act on: not this node's either
				}
				mine[id] = sv.Node == "" || sv.Node == s.node
			}
		}
	}
	return mine, nil
}

// move marks node's calls sts (as read: blobs) this store's node's, once
// their entries (zs) are in this node's index: the calls still as they
// were read are moved, and returned.
func (s *Store) move(ctx context.Context, node string, sts []call.State, blobs []string, zs []redis.Z) ([]call.State, error) {
	if err := s.rdb.ZAdd(ctx, s.IndexKey(s.node), zs...).Err(); err != nil {
		return nil, fmt.Errorf("redis dialogs: index the calls taken from node %s on node %s: %w", node, s.node, err)
	}
	news := make([]string, len(sts))
	for i, st := range sts {
		b, err := json.Marshal(saved{State: st, Node: s.node})
		if err != nil {
			return nil, fmt.Errorf("redis dialogs: encode %s: %w", st.Record.CallID, err)
		}
		news[i] = string(b)
	}
	cmds := make([]*redis.Cmd, len(sts))
	// EVAL, not EVALSHA: a script not cached yet fails a pipeline's command
	// only once it has run.
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, st := range sts {
			cmds[i] = moveScript.Eval(ctx, p, []string{s.StateKey(st.Record.CallID)}, blobs[i], news[i])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redis dialogs: take the calls of node %s: %w", node, err)
	}
	var out []call.State
	var lost []any
	for i, st := range sts {
		if n, _ := cmds[i].Int(); n == 1 {
			out = append(out, st)
		} else {
			lost = append(lost, st.Record.CallID) // ended, or another node's since
		}
	}
	if len(lost) > 0 {
		_ = s.rdb.ZRem(ctx, s.IndexKey(s.node), lost...).Err() // stale else: pruned by a Take
	}
	return out, nil
}

// ms is ttl in milliseconds, one at least (PX 0 is an error).
func ms(ttl time.Duration) int64 { return max(ttl.Milliseconds(), 1) }
