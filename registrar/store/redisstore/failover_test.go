package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store"
	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

// outcome is one REGISTER's store calls in the failover test.
type outcome struct {
	user       int
	refresh    bool // a refresh (the script writes); else a query
	start, end time.Time
	err        error
	wrong      string // what was wrong with a reply that came without error
}

// registrations makes REGISTERs for users user000..userNNN in a store.
type registrations struct {
	s     *Store
	t     *testing.T
	users int
	cseq  []uint32 // per user; one REGISTER per user at a time
}

func (r *registrations) aor(i int) string { return fmt.Sprintf("user%03d@sori.test", i) }

// register does what a REGISTER does in the store: fetch the subscriber
// (digest auth), then run the binding script, as a refresh or as a query.
func (r *registrations) register(i int, refresh bool) (o outcome) {
	o = outcome{user: i, refresh: refresh, start: time.Now()}
	defer func() { o.end = time.Now() }()
	ctx := r.t.Context()
	name := fmt.Sprintf("user%03d", i)
	u, err := r.s.Subscriber(ctx, name)
	if err != nil {
		o.err = err
		return o
	}
	if u.Realm != "sori.test" {
		o.wrong = fmt.Sprintf("subscriber %s: %+v", name, u)
		return o
	}
	var got []store.Binding
	if refresh {
		r.cseq[i]++
		now := time.Now()
		got, o.err = r.s.Update(ctx, store.Update{AOR: r.aor(i), CallID: fmt.Sprintf("cid-%d", i), CSeq: r.cseq[i], Now: now,
			Contacts: []store.Binding{binding(fmt.Sprintf("ua%d", i), now, time.Hour)}})
	} else {
		got, o.err = r.s.Lookup(ctx, r.aor(i), time.Now())
	}
	if o.err == nil && (len(got) != 1 || got[0].Contact != fmt.Sprintf("sip:ua%d@192.0.2.1", i)) {
		o.wrong = fmt.Sprintf("%s: %+v", r.aor(i), got)
	}
	return o
}

// round makes one REGISTER per user at once, so the pipeliner batches them;
// refresh picks refreshes and queries.
func (r *registrations) round(refresh func(i int) bool) []outcome {
	out := make([]outcome, r.users)
	var wg sync.WaitGroup
	for i := range r.users {
		wg.Add(1)
		go func() { defer wg.Done(); out[i] = r.register(i, refresh(i)) }()
	}
	wg.Wait()
	return out
}

// victim picks the master with a live replica that holds most AORs, and
// waits until that replica has every write. It returns the node and the
// users whose bindings it holds.
func victim(t *testing.T, cl *redistest.Cluster, s *Store, r *registrations) (*redistest.ClusterNode, map[int]bool) {
	t.Helper()
	cc := s.rdb.(*redis.ClusterClient)
	byMaster := map[string]map[int]bool{}
	for i := range r.users {
		m, err := cc.MasterForKey(t.Context(), s.IndexKey(r.aor(i)))
		if err != nil {
			t.Fatal(err)
		}
		addr := m.Options().Addr
		if byMaster[addr] == nil {
			byMaster[addr] = map[int]bool{}
		}
		byMaster[addr][i] = true
	}
	var v *redistest.ClusterNode
	for addr, us := range byMaster {
		n := cl.Node(addr)
		if len(cl.Replicas(n)) > 0 && (v == nil || len(us) > len(byMaster[v.Addr])) {
			v = n
		}
	}
	if v == nil {
		t.Fatalf("no master with a live replica holds bindings: %v", byMaster)
	}
	for _, r := range cl.Replicas(v) {
		redistest.WaitReplicated(t, v.Addr, r.Addr, 5*time.Second)
	}
	return v, byMaster[v.Addr]
}

// Masters of a 3+3 cluster are killed, one with REGISTERs running and one
// with no traffic at all: each time the replica takes over and the store must
// follow it. REGISTERs may fail only while the cluster itself is failing
// over, with store errors (the registrar answers 503 + Retry-After), never
// with wrong answers; they must all succeed once the cluster is ok again, and
// no binding may be lost.
func TestClusterFailoverIsFollowed(t *testing.T) {
	cl := redistest.StartClusterWithReplicas(t, 3, 1)
	s := open(t, cl.URL(), "")
	rt := &roundTrips{}
	s.rdb.(*redis.ClusterClient).AddHook(rt)
	const users = 100
	r := &registrations{s: s, t: t, users: users, cseq: make([]uint32, users)}
	for i := range users {
		if err := s.PutSubscriber(t.Context(), store.Subscriber{Name: fmt.Sprintf("user%03d", i), Realm: "sori.test", HA1MD5: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range r.round(func(int) bool { return true }) {
		if o.err != nil || o.wrong != "" {
			t.Fatalf("register user %d before the failover: %v %s", o.user, o.err, o.wrong)
		}
	}

	// 1. REGISTERs keep coming (a round of 100 every 25 ms, half queries,
	// half refreshes) while a master fails over.
	dead, onDead := victim(t, cl, s, r)
	var (
		mu       sync.Mutex
		outcomes []outcome
		stop     = make(chan struct{})
		loadDone = make(chan struct{})
	)
	go func() {
		defer close(loadDone)
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			out := r.round(func(i int) bool { return (i+n)%2 == 0 })
			mu.Lock()
			outcomes = append(outcomes, out...)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	killed := time.Now()
	dead.Kill()
	promoted := cl.WaitFailover(dead, 15*time.Second)
	ok := time.Now()
	// The store follows within a reload of the promotion; margin covers a
	// call that joined a reload started just before it.
	const margin = 500 * time.Millisecond
	after := ok.Add(margin)
	for { // keep REGISTERing well past the margin: an unfollowed map fails for a minute
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		done := len(outcomes) > 0 && outcomes[len(outcomes)-1].start.After(after.Add(2*time.Second))
		mu.Unlock()
		if done {
			break
		}
	}
	close(stop)
	<-loadDone
	t.Logf("master %s (%d of %d AORs) killed; cluster ok with %s promoted %v later",
		dead.Addr, len(onDead), users, promoted.Addr, ok.Sub(killed).Round(time.Millisecond))

	var (
		inWindow, failedInWindow, late, lateOnDead, lateFailures int
		slowest                                                  time.Duration
		lastFailure                                              time.Time
	)
	for _, o := range outcomes {
		if o.wrong != "" {
			t.Errorf("wrong answer for user %d %v after the kill: %s", o.user, o.start.Sub(killed), o.wrong)
		}
		if o.start.After(after) {
			late++
			if onDead[o.user] {
				lateOnDead++
			}
			if o.err != nil {
				if lateFailures++; lateFailures <= 5 {
					t.Errorf("user %d (refresh %v, binding on the killed master %v) failed %v after the cluster was ok again: %v",
						o.user, o.refresh, onDead[o.user], o.start.Sub(ok).Round(time.Millisecond), o.err)
				}
			}
			continue
		}
		inWindow++
		if o.err == nil {
			continue
		}
		failedInWindow++
		if o.end.After(lastFailure) {
			lastFailure = o.end
		}
		slowest = max(slowest, o.end.Sub(o.start))
		// Any other error is a store error: the registrar answers 503 + Retry-After.
		if errors.Is(o.err, store.ErrOutOfOrder) || errors.Is(o.err, store.ErrTooManyContacts) || errors.Is(o.err, store.ErrNotFound) {
			t.Errorf("user %d: %v is not a store error", o.user, o.err)
		}
		if !strings.HasPrefix(o.err.Error(), "redis store: ") {
			t.Errorf("user %d: error %q does not name the store", o.user, o.err)
		}
		if o.end.Before(killed) {
			t.Errorf("user %d failed before the kill: %v", o.user, o.err)
		}
	}
	if lateFailures > 0 {
		t.Errorf("%d of %d REGISTERs failed more than %v after the cluster was ok again", lateFailures, late, margin)
	}
	if lateOnDead == 0 {
		t.Error("no REGISTER for the killed master's AORs after the failover")
	}
	if failedInWindow == 0 {
		t.Error("no REGISTER failed while the cluster failed over: the test did not reach the dead master")
	}
	if slowest > 1500*time.Millisecond {
		t.Errorf("a failing REGISTER took %v: it must fail fast", slowest)
	}
	t.Logf("until %v after ok: %d REGISTERs, %d failed (slowest %v, the last ended %v after ok); later: %d, %d failed",
		margin, inWindow, failedInWindow, slowest.Round(time.Millisecond), lastFailure.Sub(ok).Round(time.Millisecond), late, lateFailures)

	// 2. No traffic while another master fails over: the store learns of it
	// only from the first REGISTERs after, which must succeed all the same.
	dead, onDead = victim(t, cl, s, r)
	dead.Kill()
	promoted = cl.WaitFailover(dead, 15*time.Second)
	t.Logf("master %s (%d AORs) killed with no traffic; %s promoted", dead.Addr, len(onDead), promoted.Addr)
	for _, o := range r.round(func(i int) bool { return i%2 == 0 }) {
		if o.err != nil || o.wrong != "" {
			t.Errorf("user %d (binding on the killed master %v) after the quiet failover: %v %s", o.user, onDead[o.user], o.err, o.wrong)
		}
	}

	if rt.pipelined.Load() <= rt.pipelines.Load() {
		t.Errorf("no batching: %d pipelines carried %d calls", rt.pipelines.Load(), rt.pipelined.Load())
	}
	// No binding was lost.
	for i := range users {
		got, err := s.Lookup(t.Context(), r.aor(i), time.Now())
		if err != nil || len(got) != 1 || got[0].ID != fmt.Sprintf("ua%d", i) {
			t.Errorf("%s after the failovers: %+v %v", r.aor(i), got, err)
		}
	}
}

func TestUnreachable(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"no error", nil, false},
		{"dial refused", refused, true},
		{"dial refused, wrapped", fmt.Errorf("redis store: lookup a: %w", refused), true},
		{"read timeout", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, true},
		{"connection closed", io.EOF, true},
		{"cut reply", io.ErrUnexpectedEOF, true},
		{"a Redis reply", redis.Nil, false},
		{"caller gave up", context.Canceled, false},
		{"client closed", redis.ErrClosed, false},
		{"script error", errors.New("ERR Error running script"), false},
	}
	for _, tt := range tests {
		if got := unreachable(tt.err); got != tt.want {
			t.Errorf("%s: unreachable(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}
