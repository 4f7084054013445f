package memory

import (
	"testing"
	"time"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/registrar/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, store.Store) {
		s := New(time.Minute)
		t.Cleanup(func() { _ = s.Close() })
		return s, s // one process: both "nodes" are the same store
	})
}

func TestSweeperDropsExpired(t *testing.T) {
	s := New(10 * time.Millisecond)
	defer s.Close()
	n := time.Now()
	u := store.Update{AOR: "alice", CallID: "c", CSeq: 1, Now: n, Contacts: []store.Binding{{ID: "x", Expires: n.Add(20 * time.Millisecond)}}}
	if _, err := s.Update(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		sh := s.shard("alice")
		sh.mu.Lock()
		_, present := sh.aors["alice"]
		sh.mu.Unlock()
		if !present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("expired AOR still held after 2s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
