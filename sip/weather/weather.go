package weather

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"time"

	"github.com/sori-voice/sori/sip/calls"
)

// DefaultRetention is how long hours are kept unless configured.
const DefaultRetention = 90 * 24 * time.Hour

// Aggregator keeps cells and answers queries over them.
type Aggregator interface {
	// Add folds a finished call record into its cells (Observe).
	Add(ctx context.Context, r calls.Record) error
	// Query groups and merges the cells of q's hours. A bad q gives a
	// *ParamError.
	Query(ctx context.Context, q Query) ([]Row, error)
}

// Clearer is an Aggregator that can forget everything it holds, so that
// Rebuild starts from nothing.
type Clearer interface {
	Clear(ctx context.Context) error
}

// Sink adapts an Aggregator to a calls.Sink, so the Recorder feeds it as
// it writes the call-record file. A backend that talks to a server belongs
// behind calls.NewAsync: the Recorder writes on the call's path.
func Sink(a Aggregator) calls.Sink { return sink{a} }

type sink struct{ a Aggregator }

func (s sink) Write(ctx context.Context, r calls.Record) error { return s.a.Add(ctx, r) }

// Rebuild recomputes a's cells from a call-record stream: it clears a
// (when it is a Clearer) and adds every record. It stops at the first
// error, from the stream or from a, and returns the records added.
// Records older than a's retention are skipped by a itself.
func Rebuild(ctx context.Context, a Aggregator, records iter.Seq2[calls.Record, error]) (int, error) {
	if c, ok := a.(Clearer); ok {
		if err := c.Clear(ctx); err != nil {
			return 0, fmt.Errorf("rebuild: clear: %w", err)
		}
	}
	n := 0
	for r, err := range records {
		if err != nil {
			return n, fmt.Errorf("rebuild: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if err := a.Add(ctx, r); err != nil {
			return n, fmt.Errorf("rebuild: call %s: %w", r.CallID, err)
		}
		n++
	}
	return n, nil
}

// maxLine bounds one record's line; records are a few kilobytes at most.
const maxLine = 1 << 20

// ReadRecords reads call records from a JSON-lines stream (cdr.file: one
// JSON object per line). Blank lines are skipped; a line that does not
// decode yields an error naming its line number.
func ReadRecords(r io.Reader) iter.Seq2[calls.Record, error] {
	return func(yield func(calls.Record, error) bool) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), maxLine)
		line := 0
		for sc.Scan() {
			line++
			b := sc.Bytes()
			if len(bytes.TrimSpace(b)) == 0 {
				continue
			}
			var rec calls.Record
			if err := json.Unmarshal(b, &rec); err != nil {
				yield(calls.Record{}, fmt.Errorf("line %d: %w", line, err))
				return
			}
			if !yield(rec, nil) {
				return
			}
		}
		if err := sc.Err(); err != nil {
			if errors.Is(err, bufio.ErrTooLong) {
				err = fmt.Errorf("line %d: longer than %d bytes", line+1, maxLine)
			}
			yield(calls.Record{}, err)
		}
	}
}

// ReadRecordsFile is ReadRecords over the file at path, closed when the
// iteration ends.
func ReadRecordsFile(path string) iter.Seq2[calls.Record, error] {
	return func(yield func(calls.Record, error) bool) {
		f, err := os.Open(path)
		if err != nil {
			yield(calls.Record{}, err)
			return
		}
		defer f.Close()
		for r, err := range ReadRecords(f) {
			if err != nil {
				err = fmt.Errorf("%s: %w", path, err)
			}
			if !yield(r, err) {
				return
			}
		}
	}
}
