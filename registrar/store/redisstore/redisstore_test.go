package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
	"github.com/sori-voice/sori/registrar/store/storetest"
)

func open(t *testing.T, url, prefix string) *Store {
	t.Helper()
	s, err := Open(url, Options{Timeout: 300 * time.Millisecond, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestContract(t *testing.T) {
	srv := redistest.Start(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) (store.Store, store.Store) {
		// Two clients (two "nodes") on one server; a prefix per subtest keeps data sets apart.
		prefix := fmt.Sprintf("t%d:", n.Add(1))
		return open(t, srv.URL(), prefix), open(t, srv.URL(), prefix)
	})
}

func binding(id string, now time.Time, ttl time.Duration) store.Binding {
	return store.Binding{ID: id, Contact: "sip:" + id + "@192.0.2.1", Q: -1, Expires: now.Add(ttl), Updated: now}
}

// Expiry must not depend on a sori node: Redis drops the keys by TTL alone.
func TestBindingsExpireByTTLWithoutNodes(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv.URL(), "")
	ctx := t.Context()
	now := time.Now()
	u := store.Update{AOR: "alice@sori.test", CallID: "c", CSeq: 1, Now: now,
		Contacts: []store.Binding{binding("short", now, 300*time.Millisecond), binding("long", now, time.Hour)}}
	if _, err := s.Update(ctx, u); err != nil {
		t.Fatal(err)
	}
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer raw.Close()
	idx := s.IndexKey("alice@sori.test")
	if got := raw.Exists(ctx, idx, idx+":short", idx+":long").Val(); got != 3 {
		t.Fatalf("%d of 3 keys exist", got)
	}
	ttl := raw.PTTL(ctx, idx+":long").Val()
	if ttl < 59*time.Minute || ttl > time.Hour {
		t.Fatalf("binding TTL = %v, want about 1h", ttl)
	}
	if err := s.Close(); err != nil { // no node left
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for raw.Exists(ctx, idx+":short").Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("expired binding key still in Redis")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The whole AOR disappears with its last binding, too.
	u = store.Update{AOR: "bob@sori.test", CallID: "c", CSeq: 1, Now: time.Now(), Contacts: []store.Binding{binding("x", time.Now(), 300*time.Millisecond)}}
	s2 := open(t, srv.URL(), "")
	if _, err := s2.Update(ctx, u); err != nil {
		t.Fatal(err)
	}
	_ = s2.Close()
	idx = s.IndexKey("bob@sori.test")
	for raw.Exists(ctx, idx, idx+":x").Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("index of an expired AOR still in Redis")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A lost Redis fails fast, and the same store works again once Redis is back.
func TestOutageFailsFastAndRecovers(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv.URL(), "")
	now := time.Now()
	up := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := s.Update(ctx, store.Update{AOR: "a", CallID: fmt.Sprint(time.Now().UnixNano()), CSeq: 1, Now: now, Contacts: []store.Binding{binding("x", now, time.Hour)}})
		return err
	}
	if err := up(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	start := time.Now()
	err := up()
	if err == nil {
		t.Fatal("update succeeded with Redis down")
	}
	if errors.Is(err, store.ErrOutOfOrder) {
		t.Fatalf("wrong error: %v", err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("failing update took %v; must fail fast", took)
	}
	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for up() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover: %v", up())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestOpenURLs(t *testing.T) {
	tests := []struct {
		url  string
		kind string // "single", "failover", "cluster" or "" for an error
	}{
		{"redis://127.0.0.1:6379/0", "single"},
		{"rediss://user:pw@127.0.0.1:6380/2", "single"},
		{"redis-sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/1", "failover"},
		{"redis-sentinel://:pw@127.0.0.1:26379/mymaster", "failover"},
		{"redis-cluster://127.0.0.1:7000,127.0.0.1:7001", "cluster"},
		{"redis-sentinel://127.0.0.1:26379", ""},
		{"redis-cluster://127.0.0.1:7000/3", ""},
		{"redis-cluster://nohost", ""},
		{"memcached://127.0.0.1:11211", ""},
		{"127.0.0.1:6379", ""},
	}
	for _, tt := range tests {
		s, err := Open(tt.url, Options{})
		if tt.kind == "" {
			if err == nil {
				t.Errorf("%s: no error", tt.url)
				_ = s.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.url, err)
			continue
		}
		var kind string
		switch c := s.rdb.(type) {
		case *redis.Client:
			kind = "single"
			if c.Options().Addr == "FailoverClient" { // go-redis's marker for a Sentinel-backed client
				kind = "failover"
			}
		case *redis.ClusterClient:
			kind = "cluster"
		}
		if kind != tt.kind {
			t.Errorf("%s: client kind %s, want %s", tt.url, kind, tt.kind)
		}
		_ = s.Close()
	}
}

// The same contract through Sentinel, with a replica: the client asks
// Sentinel for the master.
func TestContractThroughSentinel(t *testing.T) {
	set := redistest.StartSentinelSet(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) (store.Store, store.Store) {
		prefix := fmt.Sprintf("s%d:", n.Add(1))
		url := "redis-sentinel://" + set.Sentinel + "/mymaster/0"
		return open(t, url, prefix), open(t, url, prefix)
	})
}

// The same contract on a Redis Cluster of three masters with a replica
// each: every key of an AOR shares the {AOR} hash tag, so the update script
// never crosses slots.
func TestContractOnCluster(t *testing.T) {
	cl := redistest.StartClusterWithReplicas(t, 3, 1)
	url := cl.URL()
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) (store.Store, store.Store) {
		prefix := fmt.Sprintf("c%d:", n.Add(1))
		return open(t, url, prefix), open(t, url, prefix)
	})
}
