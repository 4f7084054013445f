package calls

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sori-voice/sori/registrar/store/redisstore/redistest"
)

func sample(id string) Record {
	start := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	answer := start.Add(2 * time.Second)
	return Record{
		CallID: id, From: "sip:alice@sori.test", To: "sip:bob@sori.test", RequestURI: "sip:bob@sori.test",
		Caller: "alice", Source: "udp:127.0.0.1:5099", Callee: "udp:127.0.0.1:5062",
		Start: start, Answer: &answer, End: answer.Add(61500 * time.Millisecond), Duration: 61.5,
		Code: 200, Reason: "OK", HangupBy: "callee", Disposition: Answered, Branches: 1,
	}
}

func TestJSONFileAppendsOneLinePerRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.jsonl")
	if err := os.WriteFile(path, []byte(`{"call_id":"earlier"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err := OpenJSONFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c1", "c2"} {
		if err := j.Write(context.Background(), sample(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, m)
	}
	if len(got) != 3 || got[0]["call_id"] != "earlier" || got[2]["call_id"] != "c2" {
		t.Fatalf("lines %v", got)
	}
	r := got[1]
	if r["duration"] != 61.5 || r["code"] != 200.0 || r["answer"] != "2026-11-24T12:00:02Z" || r["hangup_by"] != "callee" || r["disposition"] != "answered" {
		t.Fatalf("record %v", r)
	}
	if _, err := OpenJSONFile(filepath.Join(t.TempDir(), "missing", "cdr.jsonl")); err == nil {
		t.Fatal("opened a file in a missing directory")
	}
}

func TestRedisStreamAddsRecords(t *testing.T) {
	srv := redistest.Start(t)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opt)
	defer client.Close()
	ctx := context.Background()
	s := RedisStream{Client: client, Key: "sori:cdr", MaxLen: 1000}
	withMedia := sample("c1")
	withMedia.CallerMedia = &MediaQuality{Sent: 1000, Lost: 50, LossPct: 5, JitterMS: 3, MOS: 3.9, RTTMS: 40}
	withMedia.MOS = 3.9
	withMedia.Reanchored = []Reanchor{{From: "127.0.0.1:22222", To: "127.0.0.1:22223", At: withMedia.Start.Add(5 * time.Second), Answered: true}}
	unanswered := sample("c2")
	unanswered.Answer, unanswered.Duration, unanswered.Code, unanswered.Disposition = nil, 0, 486, Busy
	for _, r := range []Record{withMedia, unanswered} {
		if err := s.Write(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := client.XRange(ctx, "sori:cdr", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("%d entries", len(msgs))
	}
	a, b := msgs[0].Values, msgs[1].Values
	if a["call_id"] != "c1" || a["answer"] != "2026-11-24T12:00:02Z" || a["duration"] != "61.500" || a["code"] != "200" || a["caller"] != "alice" ||
		a["caller_loss_pct"] != "5.00" || a["caller_mos"] != "3.9" || a["caller_rtt_ms"] != "40" || a["mos"] != "3.9" || a["callee_mos"] != nil {
		t.Fatalf("first entry %v", a)
	}
	if a["reanchored"] != `[{"from":"127.0.0.1:22222","to":"127.0.0.1:22223","at":"2026-11-24T12:00:05Z","answered":true}]` || b["reanchored"] != nil {
		t.Fatalf("moves in the stream: %v, %v", a["reanchored"], b["reanchored"])
	}
	if _, ok := b["answer"]; ok || b["disposition"] != Busy || b["code"] != "486" {
		t.Fatalf("second entry %v", b)
	}

	srv.Stop()
	if err := s.Write(ctx, sample("c3")); err == nil {
		t.Fatal("no error with Redis down")
	}
}

type failingSink struct{ calls atomic.Int32 }

func (f *failingSink) Write(context.Context, Record) error {
	f.calls.Add(1)
	return errors.New("down")
}

type blockingSink struct {
	release chan struct{}
	memorySink
}

func (b *blockingSink) Write(ctx context.Context, r Record) error {
	<-b.release
	return b.memorySink.Write(ctx, r)
}

func TestAsyncQueuesDropsWhenFullAndFlushesOnClose(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	slow := &blockingSink{release: make(chan struct{})}
	var dropped atomic.Int32
	a := NewAsync(slow, 2, time.Second, log, func() { dropped.Add(1) })
	// One record is taken by the writer (blocked), two wait in the queue;
	// keep writing until the queue refuses one.
	var refused bool
	for i := 0; i < 10 && !refused; i++ {
		refused = a.Write(context.Background(), sample("c")) != nil
	}
	if !refused || dropped.Load() != 1 {
		t.Fatalf("refused %v, dropped %d", refused, dropped.Load())
	}
	close(slow.release)
	a.Close()
	if n := len(slow.records()); n < 2 || n > 3 {
		t.Fatalf("%d records written before close", n)
	}

	bad := &failingSink{}
	dropped.Store(0)
	a = NewAsync(bad, 4, time.Second, log, func() { dropped.Add(1) })
	_ = a.Write(context.Background(), sample("c"))
	a.Close()
	if bad.calls.Load() != 1 || dropped.Load() != 1 {
		t.Fatalf("failed write: %d calls, %d dropped", bad.calls.Load(), dropped.Load())
	}
	// A call that ends during shutdown, after Close: dropped and counted,
	// not a send on a closed queue.
	if err := a.Write(context.Background(), sample("late")); err == nil || dropped.Load() != 2 {
		t.Fatalf("write after close: %v, %d dropped", err, dropped.Load())
	}
	a.Close() // twice is harmless
}

// memorySink keeps the records written to it.
type memorySink struct {
	mu   sync.Mutex
	recs []Record
}

func (m *memorySink) Write(_ context.Context, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, r)
	return nil
}

func (m *memorySink) records() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Record(nil), m.recs...)
}
