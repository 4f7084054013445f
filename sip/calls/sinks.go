package calls

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// JSONFile appends records to a file, one JSON object per line.
type JSONFile struct {
	mu sync.Mutex
	f  *os.File
}

// OpenJSONFile opens (creating) path for appending.
func OpenJSONFile(path string) (*JSONFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("cdr.file: %w", err)
	}
	return &JSONFile{f: f}, nil
}

// Write implements Sink. One write(2) per record keeps lines whole even
// when several processes append to the same file.
func (j *JSONFile) Write(_ context.Context, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("cdr: encode: %w", err)
	}
	b = append(b, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.f.Write(b); err != nil {
		return fmt.Errorf("cdr: write %s: %w", j.f.Name(), err)
	}
	return nil
}

// Close closes the file.
func (j *JSONFile) Close() error { return j.f.Close() }

// RedisStream adds records to a Redis Stream (XADD KEY MAXLEN ~ N * field value ...),
// so every node's calls land in one place for billing to consume.
type RedisStream struct {
	Client redis.Cmdable
	Key    string
	MaxLen int64 // approximate cap; 0: none
}

// Write implements Sink.
func (s RedisStream) Write(ctx context.Context, r Record) error {
	values := []any{
		"call_id", r.CallID, "from", r.From, "to", r.To, "request_uri", r.RequestURI,
		"caller", r.Caller, "source", r.Source, "callee", r.Callee,
		"start", r.Start.UTC().Format(time.RFC3339Nano), "end", r.End.UTC().Format(time.RFC3339Nano),
		"duration", strconv.FormatFloat(r.Duration, 'f', 3, 64),
		"code", strconv.Itoa(r.Code), "reason", r.Reason, "hangup_by", r.HangupBy,
		"disposition", r.Disposition, "branches", strconv.Itoa(r.Branches),
	}
	if r.Answer != nil {
		values = append(values, "answer", r.Answer.UTC().Format(time.RFC3339Nano))
	}
	// Media quality, flattened: caller_loss_pct, caller_mos, ... (the
	// stream's values are strings).
	for _, side := range []struct {
		name string
		q    *MediaQuality
	}{{"caller", r.CallerMedia}, {"callee", r.CalleeMedia}} {
		if q := side.q; q != nil {
			values = append(values, side.name+"_sent", strconv.FormatInt(q.Sent, 10), side.name+"_lost", strconv.FormatInt(q.Lost, 10),
				side.name+"_loss_pct", strconv.FormatFloat(q.LossPct, 'f', 2, 64), side.name+"_jitter_ms", strconv.FormatInt(q.JitterMS, 10),
				side.name+"_mos", strconv.FormatFloat(q.MOS, 'f', 1, 64), side.name+"_down_loss_pct", strconv.FormatFloat(q.DownLossPct, 'f', 2, 64),
				side.name+"_rtt_ms", strconv.FormatInt(q.RTTMS, 10), side.name+"_down_jitter_ms", strconv.FormatInt(q.DownJitterMS, 10))
			for _, f := range [][2]string{{"_network", q.Network}, {"_access", q.Access}} {
				if f[1] != "" {
					values = append(values, side.name+f[0], f[1])
				}
			}
		}
	}
	if r.MOS > 0 {
		values = append(values, "mos", strconv.FormatFloat(r.MOS, 'f', 1, 64))
	}
	if r.Number != "" {
		values = append(values, "number", r.Number)
	}
	for _, f := range [][2]string{{"trunk", r.Trunk}, {"gateway", r.Gateway}, {"caller_number", r.CallerNumber}} {
		if f[1] != "" {
			values = append(values, f[0], f[1])
		}
	}
	if len(r.Reanchored) > 0 {
		// A list: the stream's value is its JSON.
		if b, err := json.Marshal(r.Reanchored); err == nil {
			values = append(values, "reanchored", string(b))
		}
	}
	args := &redis.XAddArgs{Stream: s.Key, Values: values}
	if s.MaxLen > 0 {
		args.MaxLen, args.Approx = s.MaxLen, true
	}
	if err := s.Client.XAdd(ctx, args).Err(); err != nil {
		return fmt.Errorf("cdr: XADD %s: %w", s.Key, err)
	}
	return nil
}

// Async writes to a slow sink (Redis) from a queue, so a call never waits
// for it; when the queue is full the record is dropped and counted.
type Async struct {
	sink    Sink
	queue   chan Record
	done    chan struct{}
	log     *slog.Logger
	dropped func()
	timeout time.Duration

	mu     sync.RWMutex // Write against Close: a call ending during shutdown
	closed bool
}

// NewAsync starts the writer; dropped is called for each record lost.
func NewAsync(s Sink, size int, timeout time.Duration, log *slog.Logger, dropped func()) *Async {
	a := &Async{sink: s, queue: make(chan Record, size), done: make(chan struct{}), log: log, dropped: dropped, timeout: timeout}
	go a.run()
	return a
}

func (a *Async) run() {
	defer close(a.done)
	for r := range a.queue {
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		if err := a.sink.Write(ctx, r); err != nil {
			a.log.Warn("call record not stored", "call_id", r.CallID, "error", err)
			a.dropped()
		}
		cancel()
	}
}

// Write implements Sink: it queues the record.
func (a *Async) Write(_ context.Context, r Record) error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		a.dropped()
		return fmt.Errorf("cdr: closed, record for %s dropped", r.CallID)
	}
	select {
	case a.queue <- r:
		return nil
	default:
		a.dropped()
		return fmt.Errorf("cdr: queue full, record for %s dropped", r.CallID)
	}
}

// Close writes what is queued, then stops.
func (a *Async) Close() {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.queue)
	}
	a.mu.Unlock()
	<-a.done
}
