// Package redisdialogs keeps answered calls (sip/call's State) in Redis,
// so that a sori node that restarts, or another node sharing the Redis,
// can take an in-dialog request for a call it does not hold, and so that
// only one node ends each call (writes its record).
//
// Key layout (PREFIX defaults to "sori:"):
//
//	PREFIX dlg:{CALLID}      string: the call's state as JSON; expires with the call (its dialog timeout left, and a grace)
//	PREFIX dlg:{CALLID}:end  string "1": the call's end was claimed; as long
//
// Both keys of a call share the {CALLID} hash tag (braces and % in the
// Call-ID percent-encoded), so each script below runs on one Cluster slot.
package redisdialogs

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
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
}

var _ call.Store = (*Store)(nil)

// New keeps calls through rdb; prefix namespaces the keys ("sori:" when empty).
func New(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = "sori:"
	}
	return &Store{rdb: rdb, prefix: prefix}
}

// StateKey is the key of a call's state (documented layout).
func (s *Store) StateKey(callID string) string { return s.prefix + "dlg:{" + tag(callID) + "}" }

// EndKey is the key of the claim of a call's end.
func (s *Store) EndKey(callID string) string { return s.StateKey(callID) + ":end" }

// tag makes a Call-ID a hash tag: without braces (a "}" would end the tag
// early, and "{}" would hash the whole key), reversibly.
var tag = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D").Replace

var errNoCallID = errors.New("redis dialogs: empty Call-ID")

// Save implements call.Store.
func (s *Store) Save(ctx context.Context, st call.State, ttl time.Duration) error {
	id := st.Record.CallID
	if id == "" {
		return errNoCallID
	}
	blob, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("redis dialogs: encode %s: %w", id, err)
	}
	if err := saveScript.Run(ctx, s.rdb, []string{s.StateKey(id), s.EndKey(id)}, blob, ms(ttl)).Err(); err != nil {
		return fmt.Errorf("redis dialogs: save %s: %w", id, err)
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
	var st call.State
	if err := json.Unmarshal(blob, &st); err != nil {
		return call.State{}, false, fmt.Errorf("redis dialogs: decode %s: %w", callID, err)
	}
	return st, true, nil
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
	return n == 1, nil
}

// ms is ttl in milliseconds, one at least (PX 0 is an error).
func ms(ttl time.Duration) int64 { return max(ttl.Milliseconds(), 1) }
