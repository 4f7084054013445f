// Package redisstore keeps bindings and subscribers in Redis so several sori
// nodes share them.
//
// Key layout (PREFIX defaults to "sori:"):
//
//	PREFIX loc:{AOR}        sorted set: binding id -> expiry (unix ms); expires with its last binding
//	PREFIX loc:{AOR}:ID     hash: cid, cseq, b (the binding as JSON); expires with the binding
//	PREFIX sub:{NAME}       hash: realm, ha1_md5, ha1_sha256, numbers (comma separated), tags (k=v, comma separated)
//	PREFIX subs             set of subscriber names
//	PREFIX num:{NUMBER}     the name of the subscriber who owns an E.164 number
//
// Every binding key carries its own TTL, so expired bindings disappear even
// when no sori node is running. All keys of one AOR share the {AOR} hash tag,
// so one Lua script updates them atomically, also on Redis Cluster.
package redisstore

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store"
)

//go:embed update.lua
var updateLua string

//go:embed lookup.lua
var lookupLua string

var (
	updateScript = redis.NewScript(updateLua)
	lookupScript = redis.NewScript(lookupLua)
)

// Store implements store.Store on a Redis client (single, Sentinel or Cluster).
type Store struct {
	rdb    redis.UniversalClient
	pipe   *pipeliner
	prefix string
}

// New wraps an existing client. prefix namespaces every key ("sori:" when empty).
func New(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = "sori:"
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		cc.AddHook(&followFailover{cc: cc})
	}
	return &Store{rdb: rdb, pipe: newPipeliner(rdb), prefix: prefix}
}

// Client is the Redis connection, for other data kept next to the bindings
// (call records).
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// IndexKey returns the key of an AOR's binding index (documented layout).
func (s *Store) IndexKey(aor string) string { return s.prefix + "loc:{" + aor + "}" }

func (s *Store) subKey(name string) string   { return s.prefix + "sub:{" + name + "}" }
func (s *Store) subsKey() string             { return s.prefix + "subs" }
func (s *Store) numKey(number string) string { return s.prefix + "num:{" + number + "}" }

// wire is a binding as stored in the "b" field; ID lives in the key, expiry in "exp".
type wire struct {
	store.Binding
	ExpiresMS int64 `json:"exp"`
}

// Update implements store.Bindings.
func (s *Store) Update(ctx context.Context, u store.Update) ([]store.Binding, error) {
	contacts := dedupe(u.Contacts)
	nowMS := u.Now.UnixMilli()
	args := make([]any, 0, 6+3*len(contacts))
	removeAll := 0
	if u.RemoveAll {
		removeAll = 1
	}
	args = append(args, nowMS, u.CallID, u.CSeq, removeAll, u.MaxContacts, len(contacts))
	mine := make([]written, 0, len(contacts))
	for _, c := range contacts {
		c.CallID, c.CSeq = u.CallID, u.CSeq
		blob, err := json.Marshal(wire{Binding: c, ExpiresMS: c.Expires.UnixMilli()})
		if err != nil {
			return nil, fmt.Errorf("redis store: encode binding: %w", err)
		}
		args = append(args, c.ID, c.Expires.UnixMilli(), blob)
		c.Expires, c.Updated = time.UnixMilli(c.Expires.UnixMilli()), c.Updated.Round(0) // as decode would give them
		mine = append(mine, written{c, string(blob)})
	}
	res, err := s.pipe.run(ctx, updateScript, []string{s.IndexKey(u.AOR)}, args...)
	if err != nil {
		return nil, fmt.Errorf("redis store: update %s: %w", u.AOR, err)
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("redis store: update %s: empty reply", u.AOR)
	}
	if res[0] == "err" {
		switch {
		case len(res) > 1 && res[1] == "out_of_order":
			return nil, store.ErrOutOfOrder
		case len(res) > 1 && res[1] == "too_many":
			return nil, store.ErrTooManyContacts
		}
		return nil, fmt.Errorf("redis store: update %s: %v", u.AOR, res)
	}
	return decode(res[1:], u.Now, mine...)
}

// written is a binding this node just wrote, with its stored form.
type written struct {
	b    store.Binding
	blob string
}

// dedupe keeps the last contact for each ID, as a memory store would.
func dedupe(cs []store.Binding) []store.Binding {
	out := make([]store.Binding, 0, len(cs))
	for _, c := range cs {
		if i := slices.IndexFunc(out, func(b store.Binding) bool { return b.ID == c.ID }); i >= 0 {
			out[i] = c
			continue
		}
		out = append(out, c)
	}
	return out
}

// decode reads the bindings the scripts return. One that is byte for byte
// what this node just wrote is taken as written, not decoded: a refresh
// returns its own binding, and JSON decoding was a tenth of sori's CPU at
// 12 000 REGISTER/s with Redis (pprof).
func decode(pairs []string, now time.Time, known ...written) ([]store.Binding, error) {
	out := make([]store.Binding, 0, len(pairs)/2)
next:
	for i := 0; i+1 < len(pairs); i += 2 {
		for _, k := range known {
			if k.b.ID == pairs[i] && k.blob == pairs[i+1] {
				if k.b.Expires.After(now) {
					out = append(out, k.b)
				}
				continue next
			}
		}
		var w wire
		if err := json.Unmarshal([]byte(pairs[i+1]), &w); err != nil {
			return nil, fmt.Errorf("redis store: decode binding %s: %w", pairs[i], err)
		}
		w.Binding.ID = pairs[i]
		w.Binding.Expires = time.UnixMilli(w.ExpiresMS)
		if w.Binding.Expires.After(now) {
			out = append(out, w.Binding)
		}
	}
	store.Sort(out)
	return out, nil
}

// Lookup implements store.Bindings.
func (s *Store) Lookup(ctx context.Context, aor string, now time.Time) ([]store.Binding, error) {
	res, err := s.pipe.run(ctx, lookupScript, []string{s.IndexKey(aor)}, now.UnixMilli())
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redis store: lookup %s: %w", aor, err)
	}
	return decode(res, now)
}

// Count implements store.Bindings by scanning the AOR indexes. It is meant for
// metrics scrapes, not for the request path.
func (s *Store) Count(ctx context.Context, now time.Time) (int, error) {
	count := func(ctx context.Context, c redis.Cmdable) (int, error) {
		total := 0
		min := fmt.Sprintf("(%d", now.UnixMilli())
		iter := c.Scan(ctx, 0, s.prefix+"loc:{*}", 1000).Iterator()
		var keys []string
		flush := func() error {
			if len(keys) == 0 {
				return nil
			}
			cmds := make([]*redis.IntCmd, len(keys))
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, k := range keys {
					cmds[i] = p.ZCount(ctx, k, min, "+inf")
				}
				return nil
			})
			for _, cmd := range cmds {
				total += int(cmd.Val())
			}
			keys = keys[:0]
			return err
		}
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == 500 {
				if err := flush(); err != nil {
					return 0, err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return 0, err
		}
		return total, flush()
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		var (
			mu    sync.Mutex
			total int
		)
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			n, err := count(ctx, c)
			mu.Lock()
			total += n
			mu.Unlock()
			return err
		})
		return total, err
	}
	return count(ctx, s.rdb)
}

// Subscriber implements store.Subscribers.
func (s *Store) Subscriber(ctx context.Context, name string) (store.Subscriber, error) {
	v, err := s.rdb.HMGet(ctx, s.subKey(name), "realm", "ha1_md5", "ha1_sha256", "numbers", "tags").Result()
	if err != nil {
		return store.Subscriber{}, fmt.Errorf("redis store: subscriber %s: %w", name, err)
	}
	if v[1] == nil && v[2] == nil {
		return store.Subscriber{}, store.ErrNotFound
	}
	str := func(x any) string { s, _ := x.(string); return s }
	u := store.Subscriber{Name: name, Realm: str(v[0]), HA1MD5: str(v[1]), HA1SHA256: str(v[2])}
	if ns := str(v[3]); ns != "" {
		u.Numbers = strings.Split(ns, ",")
	}
	if ts := str(v[4]); ts != "" {
		u.Tags = map[string]string{}
		for _, kv := range strings.Split(ts, ",") {
			if k, val, ok := strings.Cut(kv, "="); ok {
				u.Tags[k] = val
			}
		}
	}
	return u, nil
}

// SubscriberByNumber implements store.Subscribers.
func (s *Store) SubscriberByNumber(ctx context.Context, number string) (store.Subscriber, error) {
	name, err := s.rdb.Get(ctx, s.numKey(number)).Result()
	if errors.Is(err, redis.Nil) {
		return store.Subscriber{}, store.ErrNotFound
	}
	if err != nil {
		return store.Subscriber{}, fmt.Errorf("redis store: number %s: %w", number, err)
	}
	return s.Subscriber(ctx, name)
}

// PutSubscriber implements store.Subscribers. A user's numbers move with
// it: the ones it no longer has stop pointing at it.
func (s *Store) PutSubscriber(ctx context.Context, u store.Subscriber) error {
	old, err := s.Subscriber(ctx, u.Name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, n := range old.Numbers {
			if !slices.Contains(u.Numbers, n) {
				p.Del(ctx, s.numKey(n))
			}
		}
		for _, n := range u.Numbers {
			p.Set(ctx, s.numKey(n), u.Name, 0)
		}
		tags := make([]string, 0, len(u.Tags))
		for k, v := range u.Tags {
			tags = append(tags, k+"="+v)
		}
		slices.Sort(tags)
		p.HSet(ctx, s.subKey(u.Name), "realm", u.Realm, "ha1_md5", u.HA1MD5, "ha1_sha256", u.HA1SHA256, "numbers", strings.Join(u.Numbers, ","),
			"tags", strings.Join(tags, ","))
		p.SAdd(ctx, s.subsKey(), u.Name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis store: put subscriber %s: %w", u.Name, err)
	}
	return nil
}

// DeleteSubscriber implements store.Subscribers.
func (s *Store) DeleteSubscriber(ctx context.Context, name string) error {
	old, err := s.Subscriber(ctx, name)
	if err != nil {
		return err
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, n := range old.Numbers {
			p.Del(ctx, s.numKey(n))
		}
		p.Del(ctx, s.subKey(name))
		p.SRem(ctx, s.subsKey(), name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis store: delete subscriber %s: %w", name, err)
	}
	return nil
}

// ListSubscribers implements store.Subscribers.
func (s *Store) ListSubscribers(ctx context.Context) ([]store.Subscriber, error) {
	names, err := s.rdb.SMembers(ctx, s.subsKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("redis store: list subscribers: %w", err)
	}
	slices.Sort(names)
	out := make([]store.Subscriber, 0, len(names))
	for _, n := range names {
		u, err := s.Subscriber(ctx, n)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis store: ping: %w", err)
	}
	return nil
}

// Close stops the pipeliner and closes the client.
func (s *Store) Close() error {
	s.pipe.close()
	return s.rdb.Close()
}

// Options are the client settings Open applies on top of the URL.
type Options struct {
	Timeout time.Duration // dial, read, write and pool wait; REGISTER fails fast when Redis is away
	Prefix  string
}

// Open connects to Redis described by a URL:
//
//	redis://[user:pass@]HOST:PORT/DB            one server (rediss:// for TLS)
//	redis-sentinel://[user:pass@]H1:P1,H2:P2/MASTER[/DB]
//	redis-cluster://[user:pass@]H1:P1,H2:P2
//
// It does not wait for the server: the first command connects.
func Open(rawURL string, o Options) (*Store, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, fmt.Errorf("redis store: %q has no scheme", rawURL)
	}
	tune := func(u *redis.UniversalOptions) {
		if o.Timeout > 0 {
			u.DialTimeout, u.ReadTimeout, u.WriteTimeout, u.PoolTimeout = o.Timeout, o.Timeout, o.Timeout, o.Timeout
		}
		u.MaxRetries = 1 // one quick retry on a broken pooled connection, then fail fast
		// One dial per attempt: go-redis's default of five, 100 ms apart, made
		// every command to a dead Cluster master take 1.6 s and more to fail
		// (four attempts), and the command retries dial again anyway.
		u.DialerRetries = 1
		u.ContextTimeoutEnabled = true
		u.PoolSize = 64
	}
	switch scheme {
	case "redis", "rediss", "unix":
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("redis store: %w", err)
		}
		u := &redis.UniversalOptions{}
		tune(u)
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = u.DialTimeout, u.ReadTimeout, u.WriteTimeout, u.PoolTimeout
		opt.MaxRetries, opt.ContextTimeoutEnabled, opt.PoolSize = u.MaxRetries, u.ContextTimeoutEnabled, u.PoolSize
		opt.DialerRetries = u.DialerRetries
		return New(redis.NewClient(opt), o.Prefix), nil
	case "redis-sentinel", "redis-cluster":
		user, pass, hosts, path, err := splitMultiHost(rest)
		if err != nil {
			return nil, fmt.Errorf("redis store: %q: %w", rawURL, err)
		}
		u := &redis.UniversalOptions{Addrs: hosts, Username: user, Password: pass}
		tune(u)
		if scheme == "redis-sentinel" {
			parts := strings.Split(strings.Trim(path, "/"), "/")
			if parts[0] == "" {
				return nil, fmt.Errorf("redis store: %q: sentinel URL needs /MASTER", rawURL)
			}
			u.MasterName = parts[0]
			if len(parts) > 1 {
				if _, err := fmt.Sscanf(parts[1], "%d", &u.DB); err != nil {
					return nil, fmt.Errorf("redis store: %q: bad database %q", rawURL, parts[1])
				}
			}
			return New(redis.NewFailoverClient(u.Failover()), o.Prefix), nil
		}
		if strings.Trim(path, "/") != "" {
			return nil, fmt.Errorf("redis store: %q: a cluster has no database number", rawURL)
		}
		return New(redis.NewClusterClient(u.Cluster()), o.Prefix), nil
	}
	return nil, fmt.Errorf("redis store: unsupported scheme %q (redis, rediss, redis-sentinel, redis-cluster)", scheme)
}

// splitMultiHost splits "[user:pass@]h1:p1,h2:p2[/path]".
func splitMultiHost(s string) (user, pass string, hosts []string, path string, err error) {
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		user, pass, _ = strings.Cut(s[:at], ":")
		s = s[at+1:]
	}
	if slash := strings.IndexByte(s, '/'); slash >= 0 {
		s, path = s[:slash], s[slash:]
	}
	for _, h := range strings.Split(s, ",") {
		if h == "" || !strings.Contains(h, ":") {
			return "", "", nil, "", fmt.Errorf("host %q is not HOST:PORT", h)
		}
		hosts = append(hosts, h)
	}
	return user, pass, hosts, path, nil
}
